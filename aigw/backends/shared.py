"""Circuit-breaker state shared by replicas (`circuit-breaker.shared`), through a state store.

Every process keeps its own breakers and counts its own failures; what is shared is the
decision. When a breaker's rules trip it (or close it) here, the new state is published; a
background task reads the records of all shared backends every `counters.breaker-poll-
interval` seconds, in one round trip, and a trip published by another replica opens the
local breaker until the time that replica chose. Requests never wait for the store: the
breaker they ask is the local one, as without sharing.

A record, one per backend (key: backend id + a hash of its URL, so replicas that call a
different URL by the same name do not bench each other):
    {"state": "open", "until": T, "at": T0, "rule", "cause", "threshold", "retryAfter", "origin"}
    {"state": "closed", "at": T1, "origin"}
Times are wall-clock seconds (replicas' monotonic clocks share no origin; their wall clocks
are NTP-synced to well under a poll interval). A publish never replaces an open record that
lasts longer, so the longest trip in force wins whatever order replicas write in.

If the store is down, breakers keep working locally; the outage is logged once, and the
task goes on trying each interval (the latest unpublished change per backend is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import quote

from aigw.backends.breaker import CircuitBreaker, Trip
from aigw.clock import Clock
from aigw.errors import DependencyUnavailable

log = logging.getLogger("aigw.backends")

MARGIN = 60.0  # seconds a record outlives its trip (clock skew, late readers)
LAST_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z: a later "time" is no date at all


class SharedStateUnavailable(DependencyUnavailable):
    """The state store did not answer; its message names no secret."""


class StateStore(Protocol):
    async def publish(self, key: str, record: str, not_before: float, ttl: float) -> bool:
        """Store `record` for `ttl` seconds, unless the stored record is open until after
        `not_before` (epoch seconds). Returns whether it was stored."""
        ...

    async def read(self, keys: Sequence[str]) -> list[str | None]:
        """The records under `keys`, None where there is none."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SharedRecord:
    state: Literal["open", "closed"]
    at: float
    origin: str
    until: float = 0.0
    rule: str = ""
    cause: str = ""
    threshold: str = ""
    retry_after: float | None = None

    def document(self) -> dict[str, Any]:
        if self.state == "closed":
            return {"state": "closed", "at": self.at, "origin": self.origin}
        return {
            "state": "open",
            "until": self.until,
            "at": self.at,
            "rule": self.rule,
            "cause": self.cause,
            "threshold": self.threshold,
            "retryAfter": self.retry_after,
            "origin": self.origin,
        }

    def encode(self) -> str:
        return json.dumps(self.document())

    @classmethod
    def decode(cls, raw: str) -> SharedRecord | None:
        """A record, or None for anything malformed (never trusted to be well-formed)."""
        try:
            data = json.loads(raw)
            state = data["state"]
            if state not in ("open", "closed"):
                return None
            retry_after = data.get("retryAfter")
            record = cls(
                state,
                float(data["at"]),
                str(data["origin"])[:200],
                float(data.get("until", 0.0)),
                str(data.get("rule", ""))[:100],
                str(data.get("cause", ""))[:100],
                str(data.get("threshold", ""))[:200],
                None if retry_after is None else float(retry_after),
            )
        except (ValueError, TypeError, KeyError):
            return None
        times = (record.at, record.until, record.retry_after or 0.0)
        return record if all(math.isfinite(t) and abs(t) <= LAST_EPOCH for t in times) else None

    def public(self) -> dict[str, Any]:
        """For the admin API: times as ISO 8601."""
        document = self.document()
        for name in ("at", "until"):
            if name in document:
                document[name] = _iso(document[name])
        return document


def shared_key(backend_id: str, url: str | None) -> str:
    digest = hashlib.sha256((url or "").encode()).hexdigest()[:12]
    return f"aigw:breaker:{quote(backend_id, safe='')}:{digest}"


def replica_name() -> str:
    """How this process signs its records: host, pid and a random part (a reload's new
    runtime is a new replica, so it adopts the trips its predecessor published)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


class SharedLink:
    """One shared backend: its key, its breaker, and the record last read for it."""

    def __init__(self, sync: BreakerSync, key: str, breaker: CircuitBreaker) -> None:
        self.sync = sync
        self.key = key
        self.breaker = breaker
        self.seen: str | None = None  # the raw record last applied (each is applied once)
        self.record: SharedRecord | None = None

    def status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "sync": self.sync.sync_state,
            "lastSync": self.sync.last_sync,
            "pollInterval": self.sync.interval,
            "replica": self.sync.origin,
            "record": None if self.record is None else self.record.public(),
        }


class BreakerSync:
    """The background task that publishes local changes and applies others' records."""

    def __init__(
        self, store: StateStore, clock: Clock, interval: float, origin: str | None = None
    ) -> None:
        self.store = store
        self.interval = interval
        self.origin = origin or replica_name()
        self.sync_state: Literal["starting", "ok", "unavailable"] = "starting"
        self.last_sync: str | None = None
        self._clock = clock
        self._links: list[SharedLink] = []
        self._pending: dict[str, SharedRecord] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def register(self, backend_id: str, url: str | None, breaker: CircuitBreaker) -> SharedLink:
        link = SharedLink(self, shared_key(backend_id, url), breaker)
        self._links.append(link)
        breaker.on_change = lambda changed: self._changed(link, changed)
        return link

    async def start(self) -> None:
        if self._task is None and self._links:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.close()

    def _changed(self, link: SharedLink, breaker: CircuitBreaker) -> None:
        """Called by the breaker on a trip or close of its own: queued, published by the
        task at once (a dict write and an event here, nothing awaited)."""
        trip = breaker.last_trip
        if breaker.state == "open" and trip is not None:
            record = SharedRecord(
                "open",
                self._epoch(trip.at),
                self.origin,
                self._epoch(breaker.open_until),
                trip.rule,
                trip.cause,
                trip.threshold,
                trip.retry_after,
            )
        else:
            record = SharedRecord("closed", self._clock.now().timestamp(), self.origin)
        self._pending[link.key] = record
        self._wake.set()

    async def sync(self) -> None:
        """One round: publish what changed here, then read and apply every record."""
        now = self._clock.now().timestamp()
        for key, record in list(self._pending.items()):
            if record.state == "open" and record.until <= now:
                pass  # over before it could be published: nothing to tell
            elif record.state == "open":
                ttl = record.until - now + MARGIN
                await self.store.publish(key, record.encode(), record.until, ttl)
            else:
                await self.store.publish(key, record.encode(), record.at, MARGIN)
            if self._pending.get(key) is record:
                del self._pending[key]
        values = await self.store.read([link.key for link in self._links])
        for link, raw in zip(self._links, values, strict=True):
            if raw != link.seen:
                link.seen = raw
                link.record = None if raw is None else SharedRecord.decode(raw)
                if link.record is not None and link.record.origin != self.origin:
                    self._apply(link.breaker, link.record)
        self.last_sync = _iso(self._clock.now().timestamp())

    def _apply(self, breaker: CircuitBreaker, record: SharedRecord) -> None:
        if record.state == "closed":
            breaker.follow_close(self._monotonic(record.at), record.origin)
            return
        trip = Trip(
            record.rule,
            record.cause,
            record.threshold,
            self._monotonic(record.at),
            max(0.0, record.until - record.at),
            record.retry_after,
            record.origin,
        )
        breaker.adopt(trip, self._monotonic(record.until))

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # a change made during this round wakes the next one
            try:
                await self.sync()
            except SharedStateUnavailable as exc:
                if self.sync_state != "unavailable":
                    log.warning(
                        "shared circuit-breaker state: %s; breakers work locally until it answers",
                        exc,
                        extra={"event": "breaker-sync-unavailable"},
                    )
                self.sync_state = "unavailable"
            except Exception:
                log.exception("shared circuit-breaker state: sync failed")
            else:
                if self.sync_state == "unavailable":
                    log.info(
                        "shared circuit-breaker state: store reachable again",
                        extra={"event": "breaker-sync-recovered"},
                    )
                self.sync_state = "ok"
            if self.sync_state == "unavailable":
                await asyncio.sleep(self.interval)  # no retry storm on each trip
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)

    def _epoch(self, moment: float) -> float:
        return self._clock.now().timestamp() + (moment - self._clock.monotonic())

    def _monotonic(self, epoch: float) -> float:
        return self._clock.monotonic() + (epoch - self._clock.now().timestamp())


def _iso(epoch: float) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch)
    return moment.isoformat(timespec="milliseconds")
