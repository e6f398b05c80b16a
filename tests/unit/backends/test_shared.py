"""Shared breaker state between "replicas" (breaker + sync each, own clocks) over an in-memory
store with the Redis store's contract: trips spread, the longest trip wins, closes follow,
an unreachable store leaves breakers working locally."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aigw.backends.breaker import CircuitBreaker, Trip
from aigw.backends.outcome import Outcome
from aigw.backends.shared import BreakerSync, SharedRecord, SharedStateUnavailable, shared_key
from aigw.clock import ManualClock
from tests.unit.backends.fakes import MemoryStateStore, rule

URL = "https://ptu.example/openai"
THROTTLE = rule(
    "throttle",
    **{"accept-retry-after": True, "trip-duration": 30, "max-retry-after": 120},
)


class Replica:
    """One gateway process: its own monotonic clock (the wall clock is the same)."""

    def __init__(self, store: MemoryStateStore, name: str, monotonic: float) -> None:
        self.clock = ManualClock()
        self.clock._monotonic = monotonic  # replicas' monotonic clocks share no origin
        self.breaker = CircuitBreaker("ptu", [THROTTLE], self.clock)
        self.sync = BreakerSync(store, self.clock, 0.5, origin=name)
        self.link = self.sync.register("ptu", URL, self.breaker)

    def send(self, outcome: Outcome) -> None:
        assert self.breaker.can_send()
        ticket = self.breaker.begin()
        self.breaker.end(ticket, outcome)
        self.breaker.done()

    def opens_in(self) -> float:
        return self.breaker.available_at() - self.clock.monotonic()


@pytest.fixture
def store() -> MemoryStateStore:
    return MemoryStateStore()


@pytest.fixture
def a(store: MemoryStateStore) -> Replica:
    return Replica(store, "replica-a", 1000.0)


@pytest.fixture
def b(store: MemoryStateStore) -> Replica:
    return Replica(store, "replica-b", 77_000.0)


def advance(seconds: float, *replicas: Replica) -> None:
    for replica in replicas:
        replica.clock.advance(seconds)


async def test_a_trip_on_one_replica_opens_the_breaker_on_the_other(
    store: MemoryStateStore, a: Replica, b: Replica
) -> None:
    a.send(Outcome(429, retry_after=20.0))
    await a.sync.sync()
    await b.sync.sync()
    assert not b.breaker.can_send()
    assert b.opens_in() == pytest.approx(20.0)
    assert b.breaker.reason == "shared"
    trip = b.breaker.snapshot()["lastTrip"]
    assert (trip["rule"], trip["cause"], trip["retryAfter"], trip["origin"]) == (
        "throttle",
        "status 429",
        20.0,
        "replica-a",
    )
    assert trip["openSeconds"] == pytest.approx(20.0)
    # Adopted, not published again; and A ignores its own record.
    await b.sync.sync()
    await a.sync.sync()
    assert store.publishes == 1
    assert a.breaker.reason == "circuit-breaker"
    status = b.link.status()
    assert status["sync"] == "starting"  # the task has not run: sync() was called by hand
    assert status["record"]["origin"] == "replica-a"
    assert status["record"]["until"] == "2026-01-01T00:00:20.000+00:00"


async def test_a_close_after_the_trial_is_followed_by_the_other_replica(
    store: MemoryStateStore, a: Replica, b: Replica
) -> None:
    a.send(Outcome(429, retry_after=5.0))
    await a.sync.sync()
    await b.sync.sync()
    advance(5, a, b)
    b.send(Outcome(200))  # B's trial passes first: it closes and says so
    assert b.breaker.state == "closed"
    await b.sync.sync()
    assert a.breaker.state == "half-open"
    await a.sync.sync()
    assert a.breaker.state == "closed"
    assert SharedRecord.decode(store.records[b.link.key]) == SharedRecord(
        "closed", a.clock.now().timestamp(), "replica-b"
    )


@pytest.mark.parametrize("first", ["long", "short"])
async def test_the_longest_trip_in_force_wins_whatever_order_replicas_publish_in(
    store: MemoryStateStore, a: Replica, b: Replica, first: str
) -> None:
    a.send(Outcome(429, retry_after=60.0))
    b.send(Outcome(429, retry_after=10.0))
    order = [a, b] if first == "long" else [b, a]
    for replica in order + order:
        await replica.sync.sync()
    assert a.opens_in() == pytest.approx(60.0)
    assert b.opens_in() == pytest.approx(60.0)
    record = SharedRecord.decode(store.records[a.link.key])
    assert record is not None and record.origin == "replica-a"


def test_a_shared_trip_never_shortens_a_local_one_nor_undoes_a_newer_trip() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("ptu", [THROTTLE], clock)
    ticket = breaker.begin()
    breaker.end(ticket, Outcome(429, retry_after=60.0))
    now = clock.monotonic()
    shorter = Trip("throttle", "status 429", "1 failure(s)", now, 10.0, 10.0, "other")
    assert not breaker.adopt(shorter, now + 10)
    assert breaker.available_at() == pytest.approx(now + 60)
    assert not breaker.follow_close(now - 1, "other")  # closed before this trip
    assert breaker.state == "open"
    assert breaker.follow_close(now + 1, "other")
    assert breaker.state == "closed"


async def test_an_unreachable_store_leaves_breakers_working_locally(
    store: MemoryStateStore, a: Replica, b: Replica
) -> None:
    store.down = True
    a.send(Outcome(429, retry_after=20.0))
    with pytest.raises(SharedStateUnavailable):
        await a.sync.sync()
    assert not a.breaker.can_send()  # tripped here all the same
    assert b.breaker.can_send()
    store.down = False
    await a.sync.sync()  # the change kept waiting is published now
    await b.sync.sync()
    assert b.opens_in() == pytest.approx(20.0)


async def test_a_trip_over_before_the_store_came_back_is_not_published(
    store: MemoryStateStore, a: Replica
) -> None:
    store.down = True
    a.send(Outcome(429, retry_after=2.0))
    with pytest.raises(SharedStateUnavailable):
        await a.sync.sync()
    advance(3, a)
    store.down = False
    await a.sync.sync()
    assert store.publishes == 0 and store.records == {}


async def test_malformed_records_are_ignored(store: MemoryStateStore, b: Replica) -> None:
    for raw in (
        "not json",
        "[1]",
        '{"state": "open"}',
        '{"state": "odd", "at": 1, "origin": "x"}',
        '{"state": "open", "at": 1, "until": NaN, "origin": "x"}',
    ):
        store.records[b.link.key] = raw
        await b.sync.sync()
        assert b.breaker.state == "closed"
        assert b.link.record is None


async def test_the_task_publishes_a_trip_at_once_and_logs_an_outage_once(
    store: MemoryStateStore, a: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aigw.backends")
    a.sync.interval = 30.0  # a trip must not wait for the poll
    await a.sync.start()
    try:
        await asyncio.sleep(0.05)
        assert a.sync.sync_state == "ok" and a.sync.last_sync is not None
        a.send(Outcome(429, retry_after=20.0))
        await asyncio.sleep(0.05)
        assert a.link.key in store.records
        a.sync.interval = 0.01
        store.down = True
        a.sync._wake.set()
        await asyncio.sleep(0.15)
        assert a.sync.sync_state == "unavailable"
        assert a.link.status()["sync"] == "unavailable"
        store.down = False
        await asyncio.sleep(0.1)
        assert a.sync.sync_state == "ok"
    finally:
        await a.sync.close()
    events = [record.__dict__.get("event") for record in caplog.records]
    assert events.count("breaker-sync-unavailable") == 1
    assert events.count("breaker-sync-recovered") == 1
    warning = next(
        r for r in caplog.records if r.__dict__.get("event") == "breaker-sync-unavailable"
    )
    assert "work locally" in warning.getMessage()


def test_keys_are_per_backend_and_url() -> None:
    assert shared_key("ptu", URL) == shared_key("ptu", URL)
    assert shared_key("ptu", URL) != shared_key("ptu", "https://other.example/openai")
    assert shared_key("a:b", URL).startswith("aigw:breaker:a%3Ab:")


async def test_an_adopted_trip_lasts_no_longer_than_this_replicas_own_rules_allow(
    store: MemoryStateStore, b: Replica
) -> None:
    # A replica with another cap, a skewed clock or a stray record must not bench the
    # member here for a year: THROTTLE opens for at most max-retry-after (120 s).
    now = b.clock.now().timestamp()
    store.records[b.link.key] = SharedRecord(
        "open", now, "replica-a", now + 365 * 86400, "throttle", "status 429"
    ).encode()
    await b.sync.sync()
    assert b.breaker.reason == "shared"
    assert b.opens_in() == pytest.approx(120.0)
    advance(120, b)
    assert b.breaker.state == "half-open"


async def test_a_record_with_times_beyond_any_date_is_ignored(
    store: MemoryStateStore, b: Replica
) -> None:
    store.records[b.link.key] = (
        '{"state": "open", "at": 1, "until": 1e300, "origin": "x", "rule": "throttle"}'
    )
    await b.sync.sync()
    assert b.breaker.state == "closed"
    assert b.link.record is None
    assert b.link.status()["record"] is None  # the admin API still answers
    assert b.breaker.snapshot()["state"] == "closed"
