"""The in-process counter store: plain dicts, for a single gateway process.

No locks: every method runs from its first read to its last write without awaiting, so on
one event loop a take is atomic. Expired data goes two ways: a key's stale buckets are
dropped when the key is next used, and a sweep (every `sweep_interval` seconds of the
callers' clock, a batch of records per call so no call stalls) drops whole windows and
periods nobody touches any more, so memory stays bounded however many keys pass through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeVar

from aigw.limits import windows
from aigw.limits.store import Taken


@dataclass(slots=True)
class _Window:
    buckets: dict[int, int]  # bucket index -> units, no zero entries
    expires: float  # when the newest bucket leaves the window: the record is dead after it
    held: dict[int, int] = field(default_factory=dict)  # bucket index -> units held in it


K = TypeVar("K")
_WindowName = tuple[str, float]  # (key, window)
_PeriodName = tuple[str, float, float]  # (key, start, end)


class MemoryCounterStore:
    def __init__(self, *, sweep_interval: float = 60.0, sweep_batch: int = 1000) -> None:
        # Keyed with the window length and the period's bounds, as the Redis store names its
        # keys: a limit reconfigured under the same counter key gets a counter of its own.
        self._windows: dict[_WindowName, _Window] = {}
        self._periods: dict[_PeriodName, int] = {}  # -> units used
        # -> units of those held, by the minute they were taken in (windows.hold_index)
        self._period_holds: dict[_PeriodName, dict[int, int]] = {}
        self._sweep_interval = sweep_interval
        self._sweep_batch = sweep_batch
        self._next_sweep = -math.inf
        self._pending: list[_WindowName | _PeriodName] = []  # what the current sweep visits

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        # Dropped, not cleared: after a reload the next runtime's store holds the same ones.
        self._windows, self._periods, self._period_holds, self._pending = {}, {}, {}, []

    def adopt(self, previous: MemoryCounterStore) -> None:
        """Count on in `previous`'s records (a reload: limits must not start over). Both
        stores then share them, so requests still in flight on the old runtime settle
        where the new ones count."""
        self._windows = previous._windows
        self._periods = previous._periods
        self._period_holds = previous._period_holds

    def records(self) -> int:
        """How many windows and periods are held (to watch memory)."""
        return len(self._windows) + len(self._periods)

    async def window_take(
        self,
        key: str,
        window: float,
        limit: int,
        cost: int,
        now: float,
        *,
        fit: int | None = None,
        held: int = 0,
    ) -> Taken:
        self._sweep(now)
        current = windows.bucket_index(now, window)
        bucket = current * windows.bucket_size(window)
        record = self._live_window(key, window, now)
        used = sum(record.buckets.values()) if record else 0
        must_fit = cost if fit is None else fit
        if not windows.fits(used, must_fit, limit):
            buckets, holds = (record.buckets, record.held) if record else ({}, {})
            wait = windows.retry_after(buckets, window, limit, must_fit, now, holds)
            return Taken(False, used, max(0, limit - used), wait, bucket)
        if cost > 0:
            if record is None:
                record = self._windows[(key, window)] = _Window({}, -math.inf)
            record.buckets[current] = record.buckets.get(current, 0) + cost
            record.expires = max(record.expires, bucket + window)
            if held > 0:
                record.held[current] = record.held.get(current, 0) + held
            used += cost
        return Taken(True, used, max(0, limit - used), 0.0, bucket)

    async def window_adjust(
        self,
        key: str,
        window: float,
        bucket: float,
        delta: int,
        now: float,
        *,
        held: int = 0,
        held_bucket: float | None = None,
    ) -> None:
        live = windows.live_adjustment(window, now, bucket, delta, held, held_bucket)
        if live is None:
            return
        index, delta, held_index, held = live.index, live.delta, live.held_index, live.held
        record = self._live_window(key, window, now)
        if record is None:
            if delta <= 0:
                return
            record = self._windows[(key, window)] = _Window({}, -math.inf)
        if held:
            _add(record.held, held_index, held)
        if delta == 0:
            return
        # Never below zero: a correction must not hand out credit beyond what was counted.
        if _add(record.buckets, index, delta) > 0:
            record.expires = max(record.expires, index * windows.bucket_size(window) + window)
        elif not record.buckets:
            del self._windows[(key, window)]

    async def window_peek(self, key: str, window: float, limit: int, now: float) -> Taken:
        # A take of 0 adds nothing and answers exactly the peek's question.
        return await self.window_take(key, window, limit, 0, now)

    async def period_take(
        self,
        key: str,
        period_start: float,
        period_end: float,
        limit: int,
        cost: int,
        now: float,
        *,
        held: int = 0,
    ) -> Taken:
        self._sweep(now)
        name = (key, period_start, period_end)
        used = self._periods.get(name, 0)
        if not windows.fits(used, cost, limit):
            wait = max(0.0, period_end - now)
            holding = self._live_holds(name, now)
            return Taken(False, used, max(0, limit - used), wait, period_start, holding)
        if cost > 0:
            used += cost
            self._periods[name] = used
            if held > 0:
                self._hold(name, held, now)
        return Taken(True, used, max(0, limit - used), 0.0, period_start)

    async def period_adjust(
        self,
        key: str,
        period_start: float,
        period_end: float,
        delta: int,
        *,
        held: int = 0,
        held_at: float = 0.0,
    ) -> None:
        name = (key, period_start, period_end)
        if held:
            self._hold(name, held, held_at)
        used = self._periods.get(name)
        if used is None and delta <= 0:
            return
        # A missing counter is created: charged after the fact (a check with cost 0, the
        # real cost once known). Never below zero, as for windows.
        self._periods[name] = max(0, (used or 0) + delta)

    def _hold(self, name: _PeriodName, units: int, moment: float) -> None:
        holds = self._period_holds.setdefault(name, {})
        _add(holds, windows.hold_index(moment), units)
        if not holds:
            del self._period_holds[name]

    def _live_holds(self, name: _PeriodName, now: float) -> int:
        holds = self._period_holds.get(name)
        if not holds:
            return 0
        oldest = windows.oldest_hold_index(now)
        for index in [index for index in holds if index < oldest]:
            del holds[index]  # lapsed: a release that never came
        return sum(holds.values())

    def _live_window(self, key: str, window: float, now: float) -> _Window | None:
        """The key's record with the buckets that left the window removed (None if empty)."""
        record = self._windows.get((key, window))
        if record is None:
            return None
        oldest = windows.oldest_index(now, window)
        stale = [index for index in record.buckets if index < oldest]
        for index in stale:
            del record.buckets[index]
        for index in [index for index in record.held if index < oldest]:
            del record.held[index]
        if not record.buckets:
            del self._windows[(key, window)]
            return None
        return record

    def _sweep(self, now: float) -> None:
        if not self._pending:
            if now < self._next_sweep:
                return
            self._next_sweep = now + self._sweep_interval
            self._pending = [*self._windows, *self._periods]
        for _ in range(min(self._sweep_batch, len(self._pending))):
            name = self._pending.pop()
            if len(name) == 2:
                window = self._windows.get(name)
                if window is not None and window.expires <= now:
                    del self._windows[name]
            elif name[2] <= now:  # the period has ended
                self._periods.pop(name, None)
                self._period_holds.pop(name, None)


def _add(counts: dict[K, int], index: K, delta: int) -> int:
    """Adds `delta` to `counts[index]`, dropping the entry at zero or below; the new count."""
    units = counts.get(index, 0) + delta
    if units > 0:
        counts[index] = units
    else:
        counts.pop(index, None)
    return units
