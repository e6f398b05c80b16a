"""The counter store interface: two primitives every limit is built from.

- A **sliding window** (`window_take`): at most `limit` units within any `window` seconds.
  Units are kept in `window / 60`-second buckets (1 s for tokens per minute), so the window
  slides in bucket steps and `retry_after` is exact to a bucket: a caller that waits that
  long finds the units it needs.
- A **fixed window** (`period_take`): at most `limit` units between `period_start` and
  `period_end` (quotas: calendar hours, days … in UTC).

`*_take` checks and adds in one atomic step; `*_adjust` corrects what was taken once the
real cost is known (positive or negative), in the bucket or period where it was taken.
A window take can check one amount (`fit`) and add a larger one, part of which a request in
flight *holds* (`held`: the completion it may use) until its adjust releases it; held units
count like the others, but a refusal they cause gets a short `retry_after`. A period take can
hold units too; its refusal says how many are held, so the caller can tell a quota used up
from one that requests in flight hold for a moment.
Two siblings implement it: memory (one process) and Redis (shared by replicas).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aigw.errors import DependencyUnavailable


class CounterStoreUnavailable(DependencyUnavailable):
    """The store cannot be reached; the policy's `on-store-error` decides what happens."""


@dataclass(frozen=True, slots=True)
class Taken:
    """The outcome of a take. `allowed` False: nothing was added."""

    allowed: bool
    used: int  # units in the window/period after this take (before it, if refused)
    remaining: int  # limit - used, never below 0
    retry_after: float  # seconds until `cost` units would fit; 0 when allowed
    bucket: float  # the window bucket (or period start) the units went to, for adjust()
    held: int = 0  # a refused period take: how much of `used` requests in flight hold


class CounterStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

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
        """Add `cost` if `used + fit <= limit` (`fit` defaults to `cost`; with 0: if
        `used < limit`). `held` (at most `cost`) of the units added are marked as held."""

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
        """Add `delta` (may be negative) to `bucket`, and `held` (negative: a release) to
        the units marked held in `held_bucket` (default `bucket`); each only if its bucket
        is still inside the window."""

    async def window_peek(self, key: str, window: float, limit: int, now: float) -> Taken:
        """The current state without taking anything (for remaining-* headers)."""

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
        """As window_take, for the fixed period [period_start, period_end); `retry_after` is
        the time until the period ends when refused, and `held` what requests in flight
        hold of it. `held` (at most `cost`) of the units added are marked as held at `now`."""

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
        """Add `delta` (may be negative) to the period's units, and `held` (negative: a
        release) to the units marked held by the take made at `held_at`; neither goes below
        zero. Holds lapse by themselves after `windows.HOLD_LIFETIME_BUCKETS` minutes."""
