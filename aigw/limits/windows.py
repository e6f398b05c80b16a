"""Window math shared by the counter stores: pure functions of numbers, no state.

Sliding windows are cut into buckets of `window / 60` seconds (at least 1 s), aligned to the
epoch and named by their index (bucket `i` starts at `i * size`). A bucket at time `b` counts
until `b + window`; after that it has left the window. The stores keep `{index: units}` and
ask these functions which indices still count and how long a refused caller must wait.

Units a request in flight *holds* (the completion it may still use; given back, less what it
used, when it ends) count like any other, but a refusal they cause is told to come back soon
rather than when their bucket leaves the window.

Quota periods are fixed windows: calendar hours, days, weeks (from Monday), months and years
in UTC, or N seconds from the epoch or from a given first start (`quota-by-key`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

BUCKETS_PER_WINDOW = 60
# How long a caller refused only because of what requests in flight hold is told to wait:
# those come back when the requests end, usually within a second or two, not a window later.
HELD_RETRY = 1.0

# A quota's holds are kept per minute and count for ten minutes at most: a hold whose release
# was lost (the store unreachable then, a worker killed) must not stand for the rest of a
# month. A request that outlasts it just stops being held (its tokens still count).
HOLD_BUCKET = 60.0
HOLD_LIFETIME_BUCKETS = 10

QuotaPeriod = Literal["Hourly", "Daily", "Weekly", "Monthly", "Yearly"]
QUOTA_PERIODS: tuple[QuotaPeriod, ...] = get_args(QuotaPeriod)


def bucket_size(window: float) -> float:
    """Seconds per bucket: a sixtieth of the window, but never under a second."""
    return max(1.0, window / BUCKETS_PER_WINDOW)


def bucket_index(now: float, window: float) -> int:
    """The index of the bucket `now` falls in."""
    return math.floor(now / bucket_size(window))


def bucket_start(now: float, window: float) -> float:
    """When the bucket `now` falls in starts: what `Taken.bucket` holds."""
    return bucket_index(now, window) * bucket_size(window)


def index_of(bucket: float, window: float) -> int:
    """The index of a bucket given by its start (as `Taken.bucket` holds it)."""
    return round(bucket / bucket_size(window))


def oldest_index(now: float, window: float) -> int:
    """The oldest bucket still inside the window at `now`: the smallest `i` with
    `i * size + window > now`."""
    size = bucket_size(window)
    index = math.floor((now - window) / size) + 1
    # The division can be off by one ulp; settle on exactly the comparison the stores use.
    while (index - 1) * size + window > now:
        index -= 1
    while index * size + window <= now:
        index += 1
    return index


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A window adjust reduced to what still counts (see `live_adjustment`)."""

    oldest: int
    index: int
    delta: int
    held_index: int
    held: int


def live_adjustment(
    window: float,
    now: float,
    bucket: float,
    delta: int,
    held: int,
    held_bucket: float | None,
) -> Adjustment | None:
    """The parts of an adjust whose buckets are still inside the window (units that left it
    change nothing when corrected); None when nothing is left to write."""
    oldest = oldest_index(now, window)
    index = index_of(bucket, window)
    held_index = index if held_bucket is None else index_of(held_bucket, window)
    delta = delta if index >= oldest else 0
    held = held if held_index >= oldest else 0
    if delta == 0 and held == 0:
        return None
    return Adjustment(oldest, index, delta, held_index, held)


def fits(used: int, cost: int, limit: int) -> bool:
    """The admission rule: `cost` fits if the total stays within `limit`. A cost of 0 asks
    whether anything is left at all, so it fits only while `used < limit`."""
    return used + max(cost, 1) <= limit


def used_in_window(buckets: Mapping[int, int], oldest: int) -> int:
    return sum(units for index, units in buckets.items() if index >= oldest)


def retry_after(
    buckets: Mapping[int, int],
    window: float,
    limit: int,
    cost: int,
    now: float,
    held: Mapping[int, int] | None = None,
) -> float:
    """The smallest wait after which `cost` units fit, assuming nothing else is taken.

    Walks the buckets inside the window oldest first until enough units have left. A cost
    that can never fit (`cost > limit`) gets `window`: the caller decides what to say.
    `held` (bucket index -> units of it that requests in flight hold) shortens the wait: the
    time for the other units to leave, and no more than `HELD_RETRY` for the held ones."""
    every = _leaving(buckets, window, limit, cost, now)
    if not held or every <= HELD_RETRY:
        return every
    settled = {i: n - min(n, max(0, held.get(i, 0))) for i, n in buckets.items()}
    return max(_leaving(settled, window, limit, cost, now), HELD_RETRY)


def _leaving(buckets: Mapping[int, int], window: float, limit: int, cost: int, now: float) -> float:
    """The wait for enough of `buckets` to leave the window that `cost` fits."""
    if max(cost, 1) > limit:
        return float(window)
    oldest = oldest_index(now, window)
    live = sorted((i, n) for i, n in buckets.items() if i >= oldest)
    used = sum(n for _, n in live)
    if fits(used, cost, limit):
        return 0.0
    size = bucket_size(window)
    for index, units in live:
        used -= units
        if fits(used, cost, limit):
            # `index * size + window` and `now` are close, so the subtraction is exact and
            # `now + wait` lands exactly on the moment the bucket leaves: no ulp short.
            return max(0.0, index * size + window - now)
    return float(window)  # unreachable with non-negative buckets; keeps mypy and callers calm


def period_bounds(period: QuotaPeriod, now: float) -> tuple[float, float]:
    """The calendar period (UTC) that contains `now`, as `[start, end)` epoch seconds."""
    # Whole seconds: `fromtimestamp` rounds to microseconds, which could push a `now` a hair
    # before a boundary into the next period.
    t = datetime.fromtimestamp(math.floor(now), UTC)
    if period == "Hourly":
        start = t.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period == "Daily":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "Weekly":
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())  # Monday is 0
        end = start + timedelta(days=7)
    elif period == "Monthly":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        # Months counted from year 0: `start.month` (1-based) is already the next month's
        # 0-based number, so December rolls into January of the next year.
        year, month0 = divmod(start.year * 12 + start.month, 12)
        end = start.replace(year=year, month=month0 + 1)
    elif period == "Yearly":
        start = t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1)
    else:
        raise ValueError(f"unknown quota period {period!r}")
    return start.timestamp(), end.timestamp()


def fixed_period(now: float, length: float, first_start: float = 0.0) -> tuple[float, float]:
    """The fixed window of `length` seconds that contains `now`, counting from `first_start`
    (the epoch by default). Windows also extend backwards, so a `now` before `first_start`
    falls in the window that ends where the first one starts."""
    if length <= 0:
        raise ValueError("a fixed window needs a positive length")
    k = math.floor((now - first_start) / length)
    start = first_start + k * length
    # Guard the float division as in `oldest_index`: `start <= now < end` must hold exactly.
    while start > now:
        k -= 1
        start = first_start + k * length
    while first_start + (k + 1) * length <= now:
        k += 1
        start = first_start + k * length
    return start, first_start + (k + 1) * length


def hold_index(moment: float) -> int:
    """The minute a quota hold taken at `moment` is kept under."""
    return math.floor(moment / HOLD_BUCKET)


def oldest_hold_index(now: float) -> int:
    """Holds kept under earlier minutes have lapsed."""
    return hold_index(now) - HOLD_LIFETIME_BUCKETS + 1
