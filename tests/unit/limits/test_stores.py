"""Both counter stores, against one behavioural suite: memory, and the real Redis server on
127.0.0.1:6379 (keys under a fresh prefix per test, deleted afterwards). Time is passed in
explicitly, as the gateway's clock would: nothing here sleeps."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from aigw.limits import windows
from aigw.limits.memory_store import MemoryCounterStore
from aigw.limits.redis_store import (
    PERIOD_MARGIN,
    RedisCounterStore,
    period_held_key,
    period_key,
    window_key,
)
from aigw.limits.store import CounterStore
from aigw.limits.windows import QuotaPeriod

REDIS_URL = os.environ.get("AIGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_767_225_600.25  # 2026-01-01 00:00:00.25 UTC, a quarter into a bucket
MINUTE = 60.0


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex}-"


@pytest.fixture
def k(prefix: str) -> Callable[[str], str]:
    """Counter keys under this test's prefix."""
    return lambda name: prefix + name


@pytest.fixture
async def redis(prefix: str) -> AsyncIterator[Redis]:
    """A plain client on the shared server, for looking behind the store's back. It deletes
    the test's keys afterwards."""
    # No skip when the server is missing: CI starts Redis, and a silently skipped half of
    # the store tests would hide a broken store.
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        stale = [name async for name in client.scan_iter(match=f"aigw:*{prefix}*", count=1000)]
        if stale:
            await client.delete(*stale)
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis: Redis) -> AsyncIterator[CounterStore]:
    memory = request.param == "memory"
    chosen: CounterStore = MemoryCounterStore() if memory else RedisCounterStore(REDIS_URL)
    await chosen.start()
    try:
        yield chosen
    finally:
        await chosen.close()


async def test_takes_within_the_limit_add_up(store: CounterStore, k: Callable[[str], str]) -> None:
    first = await store.window_take(k("a"), MINUTE, 100, 30, T0)
    assert (first.allowed, first.used, first.remaining, first.retry_after) == (True, 30, 70, 0.0)
    assert first.bucket == windows.bucket_start(T0, MINUTE)
    second = await store.window_take(k("a"), MINUTE, 100, 70, T0 + 5)
    assert (second.allowed, second.used, second.remaining) == (True, 100, 0)
    assert second.bucket == windows.bucket_start(T0 + 5, MINUTE)
    refused = await store.window_take(k("a"), MINUTE, 100, 1, T0 + 6)
    assert (refused.allowed, refused.used, refused.remaining) == (False, 100, 0)
    assert refused.retry_after > 0


async def test_a_refused_take_adds_nothing(store: CounterStore, k: Callable[[str], str]) -> None:
    await store.window_take(k("a"), MINUTE, 100, 90, T0)
    refused = await store.window_take(k("a"), MINUTE, 100, 11, T0)
    assert (refused.allowed, refused.used, refused.remaining) == (False, 90, 10)
    assert (await store.window_take(k("a"), MINUTE, 100, 10, T0)).allowed
    assert (await store.window_peek(k("a"), MINUTE, 100, T0)).used == 100


async def test_cost_zero_asks_whether_anything_is_left(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    assert (await store.window_take(k("a"), MINUTE, 10, 0, T0)).allowed  # empty
    await store.window_take(k("a"), MINUTE, 10, 9, T0)
    nearly = await store.window_take(k("a"), MINUTE, 10, 0, T0 + 1)
    assert (nearly.allowed, nearly.used, nearly.remaining) == (True, 9, 1)
    await store.window_take(k("a"), MINUTE, 10, 1, T0 + 2)
    full = await store.window_take(k("a"), MINUTE, 10, 0, T0 + 3)
    assert (full.allowed, full.used, full.remaining) == (False, 10, 0)
    assert full.retry_after == windows.bucket_start(T0, MINUTE) + MINUTE - (T0 + 3)
    nothing = await store.window_take(k("zero"), MINUTE, 0, 0, T0)
    assert (nothing.allowed, nothing.retry_after) == (False, MINUTE)


async def test_units_leave_the_window_bucket_by_bucket(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    await store.window_take(k("a"), MINUTE, 1000, 10, T0)
    await store.window_take(k("a"), MINUTE, 1000, 20, T0 + 10)
    await store.window_take(k("a"), MINUTE, 1000, 30, T0 + 20.5)
    start = windows.bucket_start(T0, MINUTE)  # T0 is a quarter into its bucket

    async def used(at: float) -> int:
        return (await store.window_peek(k("a"), MINUTE, 1000, at)).used

    assert await used(start + 59.999) == 60
    assert await used(start + 60) == 50  # the first bucket left, on its edge
    assert await used(start + 69.999) == 50
    assert await used(start + 70) == 30
    assert await used(start + 80) == 0
    # A second take in a bucket adds to it; the bucket still leaves as one.
    await store.window_take(k("b"), MINUTE, 1000, 1, start + 0.1)
    await store.window_take(k("b"), MINUTE, 1000, 2, start + 0.9)
    assert (await store.window_peek(k("b"), MINUTE, 1000, start + 59.9)).used == 3
    assert (await store.window_peek(k("b"), MINUTE, 1000, start + 60)).used == 0


@pytest.mark.parametrize("window", [MINUTE, 3600.0, 10.0])
@pytest.mark.parametrize("cost", [0, 11, 40, 70, 100])
async def test_retry_after_is_honest(
    store: CounterStore, k: Callable[[str], str], window: float, cost: int
) -> None:
    """At `now + retry_after` the same take succeeds; a millisecond earlier it does not."""
    size = windows.bucket_size(window)
    for step, units in enumerate((30, 25, 20, 25)):
        assert (await store.window_take(k("a"), window, 100, units, T0 + step * size * 2)).allowed
    now = T0 + 7 * size + 0.3
    refused = await store.window_take(k("a"), window, 100, cost, now)
    assert not refused.allowed and refused.retry_after > 0
    early = await store.window_take(k("a"), window, 100, cost, now + refused.retry_after - 1e-3)
    assert not early.allowed
    assert (await store.window_take(k("a"), window, 100, cost, now + refused.retry_after)).allowed


async def test_a_cost_over_the_limit_is_refused_with_the_window(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    refused = await store.window_take(k("a"), MINUTE, 100, 101, T0)
    assert (refused.allowed, refused.used, refused.retry_after) == (False, 0, MINUTE)


async def test_adjust_corrects_the_bucket_it_was_taken_in(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    taken = await store.window_take(k("a"), MINUTE, 100, 50, T0)
    await store.window_take(k("a"), MINUTE, 100, 10, T0 + 30)
    await store.window_adjust(k("a"), MINUTE, taken.bucket, 20, T0 + 31)
    assert (await store.window_peek(k("a"), MINUTE, 100, T0 + 31)).used == 80
    await store.window_adjust(k("a"), MINUTE, taken.bucket, -60, T0 + 32)
    assert (await store.window_peek(k("a"), MINUTE, 100, T0 + 32)).used == 20
    # The adjusted bucket still leaves on time, taking its corrected units with it.
    assert (await store.window_peek(k("a"), MINUTE, 100, taken.bucket + MINUTE)).used == 10


async def test_adjust_never_takes_a_bucket_below_zero(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    taken = await store.window_take(k("a"), MINUTE, 100, 30, T0)
    await store.window_adjust(k("a"), MINUTE, taken.bucket, -500, T0 + 1)
    assert (await store.window_peek(k("a"), MINUTE, 100, T0 + 1)).used == 0
    assert not (await store.window_take(k("a"), MINUTE, 100, 101, T0 + 2)).allowed
    # A positive adjust with nothing taken before (counted after the fact) is kept.
    await store.window_adjust(k("b"), MINUTE, windows.bucket_start(T0, MINUTE), 7, T0)
    assert (await store.window_peek(k("b"), MINUTE, 100, T0 + 1)).used == 7
    await store.window_adjust(k("c"), MINUTE, windows.bucket_start(T0, MINUTE), -7, T0)
    assert (await store.window_peek(k("c"), MINUTE, 100, T0 + 1)).used == 0


async def test_adjusting_a_bucket_that_left_the_window_is_ignored(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    old = await store.window_take(k("a"), MINUTE, 100, 50, T0)
    later = T0 + MINUTE
    await store.window_take(k("a"), MINUTE, 100, 10, later)
    await store.window_adjust(k("a"), MINUTE, old.bucket, 100, later)
    await store.window_adjust(k("a"), MINUTE, old.bucket, -100, later)
    assert (await store.window_peek(k("a"), MINUTE, 100, later)).used == 10


async def test_peek_reports_without_taking(store: CounterStore, k: Callable[[str], str]) -> None:
    empty = await store.window_peek(k("a"), MINUTE, 100, T0)
    assert (empty.allowed, empty.used, empty.remaining, empty.retry_after) == (True, 0, 100, 0.0)
    await store.window_take(k("a"), MINUTE, 100, 100, T0)
    for _ in range(3):
        full = await store.window_peek(k("a"), MINUTE, 100, T0 + 1)
        assert (full.allowed, full.used, full.remaining) == (False, 100, 0)
        assert full.retry_after == MINUTE - 1.25  # T0 is a quarter into its bucket
    assert (await store.window_peek(k("a"), MINUTE, 100, T0 + MINUTE)).used == 0


async def test_keys_are_separate_counters(store: CounterStore, k: Callable[[str], str]) -> None:
    await store.window_take(k("a"), MINUTE, 100, 100, T0)
    assert (await store.window_take(k("b"), MINUTE, 100, 100, T0)).allowed
    await store.period_take(k("a"), T0, T0 + 3600, 5, 5, T0)
    assert (await store.period_take(k("b"), T0, T0 + 3600, 5, 5, T0)).allowed


async def test_a_limit_reconfigured_under_the_same_key_counts_afresh(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    # Bucket indices of a minute window mean nothing to an hour window (and back).
    await store.window_take(k("a"), MINUTE, 100, 100, T0)
    assert (await store.window_take(k("a"), 3600, 100, 100, T0)).allowed
    assert (await store.window_peek(k("a"), MINUTE, 100, T0 + 1)).used == 100
    # A daily and a monthly quota can start at the same instant.
    day, month = windows.period_bounds("Daily", T0), windows.period_bounds("Monthly", T0)
    assert day[0] == month[0]
    await store.period_take(k("q"), *day, 10, 10, T0)
    assert (await store.period_take(k("q"), *month, 10, 10, T0)).allowed


@pytest.mark.parametrize(
    "name",
    [
        "a:b",
        "a%3Ab",  # what an escaped "a:b" looks like: still a different counter
        "{hash-tag}",
        "aigw:w:victim",
        "spaces and\ttabs\nnewlines",
        "ünïcødé-キー-🔑",
        "nul\x00byte",
        "lone\ud800surrogate",
        "*?[glob]",
        "x" * 5000,
        "",
    ],
)
async def test_keys_with_any_characters_are_their_own_counter(
    store: CounterStore, k: Callable[[str], str], name: str
) -> None:
    taken = await store.window_take(k(name), MINUTE, 10, 7, T0)
    assert taken.allowed
    assert (await store.window_peek(k(name), MINUTE, 10, T0)).used == 7
    for other in ("a:b", "a%3Ab", "victim", ""):
        if other != name:
            assert (await store.window_peek(k(other), MINUTE, 10, T0)).used == 0
    assert (await store.period_take(k(name), T0, T0 + 60, 10, 3, T0)).used == 3
    assert (await store.period_take(k(name) + ":1", T0, T0 + 60, 10, 1, T0)).used == 1


async def test_concurrent_takes_never_exceed_the_limit(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    takes = [store.window_take(k("hot"), MINUTE, 50, 1, T0 + i / 1000) for i in range(200)]
    results = await asyncio.gather(*takes)
    assert sum(r.allowed for r in results) == 50
    assert (await store.window_peek(k("hot"), MINUTE, 50, T0 + 1)).used == 50
    costs = [(i % 7) + 1 for i in range(200)]
    mixed = await asyncio.gather(
        *(store.window_take(k("mixed"), MINUTE, 333, c, T0) for c in costs)
    )
    admitted = sum(c for c, r in zip(costs, mixed, strict=True) if r.allowed)
    assert admitted <= 333
    assert (await store.window_peek(k("mixed"), MINUTE, 333, T0)).used == admitted
    quota = await asyncio.gather(
        *(store.period_take(k("quota"), T0, T0 + 3600, 50, 1, T0) for _ in range(200))
    )
    assert sum(r.allowed for r in quota) == 50


async def test_a_take_can_check_less_than_it_adds(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    """Default mode's admission: the prompt must fit; prompt and completion are added."""
    first = await store.window_take(k("a"), MINUTE, 100, 95, T0, fit=5, held=90)
    assert (first.allowed, first.used, first.remaining) == (True, 95, 5)
    second = await store.window_take(k("a"), MINUTE, 100, 40, T0 + 1, fit=5, held=35)
    assert (second.allowed, second.used, second.remaining) == (True, 135, 0)  # past the limit
    refused = await store.window_take(k("a"), MINUTE, 100, 40, T0 + 2, fit=1, held=39)
    assert (refused.allowed, refused.used) == (False, 135)
    # Without estimation nothing must fit but "anything left".
    assert (await store.window_take(k("b"), MINUTE, 100, 500, T0, fit=0, held=500)).allowed
    assert not (await store.window_take(k("b"), MINUTE, 100, 1, T0, fit=0)).allowed
    assert (await store.window_peek(k("b"), MINUTE, 100, T0)).used == 500


async def test_held_units_count_until_released_where_they_were_taken(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    taken = await store.window_take(k("a"), MINUTE, 100, 60, T0, fit=10, held=50)
    assert (await store.window_peek(k("a"), MINUTE, 100, T0 + 5)).used == 60
    # The request used 25 of its 60: 35 go back, and its hold is released, in one step.
    await store.window_adjust(
        k("a"), MINUTE, taken.bucket, -35, T0 + 5, held=-50, held_bucket=taken.bucket
    )
    assert (await store.window_peek(k("a"), MINUTE, 100, T0 + 5)).used == 25
    # Released: the 25 now wait like any settled tokens (until their bucket leaves).
    refused = await store.window_take(k("a"), MINUTE, 100, 80, T0 + 6)
    assert refused.retry_after == taken.bucket + MINUTE - (T0 + 6)
    # A longer answer: the release where it was taken, the excess in the bucket of now.
    again = await store.window_take(k("b"), MINUTE, 100, 30, T0, fit=10, held=20)
    later = T0 + 20
    await store.window_adjust(
        k("b"),
        MINUTE,
        windows.bucket_start(later, MINUTE),
        15,
        later,
        held=-20,
        held_bucket=again.bucket,
    )
    assert (await store.window_peek(k("b"), MINUTE, 100, later)).used == 45
    gone = await store.window_peek(k("b"), MINUTE, 100, again.bucket + MINUTE)
    assert gone.used == 15  # the first bucket left with its 30; the 15 stay


async def test_a_refusal_caused_by_held_units_is_told_to_come_back_soon(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    await store.window_take(k("a"), MINUTE, 100, 30, T0)  # settled usage
    held = await store.window_take(k("a"), MINUTE, 100, 50, T0 + 10, fit=10, held=40)
    # 30 fit once the 40 held are back: soon, not when the buckets leave (48.75 s).
    soon = await store.window_take(k("a"), MINUTE, 100, 30, T0 + 11)
    assert (soon.allowed, soon.retry_after) == (False, windows.HELD_RETRY)
    # 70 do not fit even then: the settled 30 must leave first, whatever is held.
    late = await store.window_take(k("a"), MINUTE, 100, 70, T0 + 11)
    assert late.retry_after == windows.bucket_start(T0, MINUTE) + MINUTE - (T0 + 11)
    await store.window_adjust(
        k("a"), MINUTE, held.bucket, -40, T0 + 12, held=-40, held_bucket=held.bucket
    )
    assert (await store.window_take(k("a"), MINUTE, 100, 30, T0 + 12)).allowed
    # Released, nothing is held any more: a refusal waits for buckets again.
    full = await store.window_take(k("a"), MINUTE, 100, 50, T0 + 13)
    assert full.retry_after == windows.bucket_start(T0, MINUTE) + MINUTE - (T0 + 13)


async def test_period_take_counts_until_the_period_ends(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    start, end = windows.period_bounds("Hourly", T0 + 600)
    first = await store.period_take(k("q"), start, end, 100, 60, T0 + 600)
    assert (first.allowed, first.used, first.remaining, first.bucket) == (True, 60, 40, start)
    assert (await store.period_take(k("q"), start, end, 100, 40, T0 + 700)).used == 100
    refused = await store.period_take(k("q"), start, end, 100, 1, T0 + 800)
    assert (refused.allowed, refused.used, refused.remaining) == (False, 100, 0)
    assert refused.retry_after == end - (T0 + 800)
    peek = await store.period_take(k("q"), start, end, 100, 0, T0 + 900)
    assert (peek.allowed, peek.used) == (False, 100)
    over = await store.period_take(k("other"), start, end, 100, 101, T0 + 900)
    assert (over.allowed, over.used, over.retry_after) == (False, 0, end - (T0 + 900))


async def test_period_adjust_corrects_and_charges_after_the_fact(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    start, end = windows.period_bounds("Daily", T0)
    await store.period_take(k("q"), start, end, 100, 50, T0)
    await store.period_adjust(k("q"), start, end, 30)
    assert (await store.period_take(k("q"), start, end, 100, 0, T0)).used == 80
    await store.period_adjust(k("q"), start, end, -500)
    assert (await store.period_take(k("q"), start, end, 100, 0, T0)).used == 0
    # A check with cost 0, the real cost once known.
    assert (await store.period_take(k("late"), start, end, 100, 0, T0)).allowed
    await store.period_adjust(k("late"), start, end, 120)
    late = await store.period_take(k("late"), start, end, 100, 0, T0 + 1)
    assert (late.allowed, late.used, late.remaining) == (False, 120, 0)
    await store.period_adjust(k("never"), start, end, -5)
    assert (await store.period_take(k("never"), start, end, 100, 0, T0)).used == 0


async def test_a_period_refusal_says_what_requests_in_flight_hold(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    start, end = windows.period_bounds("Monthly", T0)
    assert (await store.period_take(k("q"), start, end, 100, 50, T0, held=40)).allowed
    assert (await store.period_take(k("q"), start, end, 100, 30, T0 + 70, held=20)).allowed
    refused = await store.period_take(k("q"), start, end, 100, 30, T0 + 80)
    assert (refused.allowed, refused.used, refused.held) == (False, 80, 60)
    # The first request ends having used 10 of its 50: its 40 held go, and 40 more it did
    # not use.
    await store.period_adjust(k("q"), start, end, -40, held=-40, held_at=T0)
    refused = await store.period_take(k("q"), start, end, 100, 70, T0 + 90)
    assert (refused.allowed, refused.used, refused.held) == (False, 40, 20)
    # Releasing more than is held (a hold that outlived a restart) stops at nothing held.
    await store.period_adjust(k("q"), start, end, 0, held=-500, held_at=T0 + 70)
    refused = await store.period_take(k("q"), start, end, 100, 70, T0 + 90)
    assert (refused.used, refused.held) == (40, 0)
    assert (await store.period_take(k("q"), start, end, 100, 60, T0 + 90)).allowed


async def test_a_period_hold_whose_release_never_comes_lapses(
    store: CounterStore, k: Callable[[str], str]
) -> None:
    start, end = windows.period_bounds("Monthly", T0)
    # Held by an adjust (as shadow mode does), not only by a take.
    await store.period_adjust(k("q"), start, end, 90, held=80, held_at=T0)
    lifetime = windows.HOLD_LIFETIME_BUCKETS * windows.HOLD_BUCKET
    still = await store.period_take(k("q"), start, end, 100, 20, T0 + lifetime - 61)
    assert (still.allowed, still.held) == (False, 80)
    lapsed = await store.period_take(k("q"), start, end, 100, 20, T0 + lifetime + 1)
    assert (lapsed.allowed, lapsed.used, lapsed.held) == (False, 90, 0)


async def test_redis_period_holds_live_beside_the_counter_and_go_with_the_last_release(
    k: Callable[[str], str], redis: Redis
) -> None:
    store = RedisCounterStore(REDIS_URL)
    start, end = windows.period_bounds("Daily", T0)
    held = period_held_key(k("q"), start, end)
    try:
        await store.period_take(k("q"), start, end, 100, 50, T0 + 100, held=30)
        assert held == period_key(k("q"), start, end).replace("aigw:p:", "aigw:ph:", 1)
        minute = str(windows.hold_index(T0 + 100)).encode()
        assert await redis.hgetall(held) == {minute: b"30"}
        assert 600_000 < await redis.pttl(held) <= 660_000
        await store.period_adjust(k("q"), start, end, -20, held=-30, held_at=T0 + 100)
        assert not await redis.exists(held)
        assert int(await redis.get(period_key(k("q"), start, end))) == 30
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("period", "now"),
    [
        ("Hourly", ts(2026, 12, 31, 23, 30)),
        ("Daily", ts(2028, 2, 28, 12)),  # into a leap day
        ("Daily", ts(2028, 2, 29, 12)),  # out of it
        ("Weekly", ts(2026, 3, 8, 22)),  # a Sunday
        ("Monthly", ts(2028, 2, 10)),  # leap February
        ("Monthly", ts(2026, 12, 15)),  # December into January
        ("Yearly", ts(2028, 7, 1)),
    ],
)
async def test_quota_periods_roll_over(
    store: CounterStore, k: Callable[[str], str], period: QuotaPeriod, now: float
) -> None:
    start, end = windows.period_bounds(period, now)
    assert (await store.period_take(k("q"), start, end, 10, 10, now)).allowed
    just_before = end - 0.001
    assert windows.period_bounds(period, just_before) == (start, end)
    refused = await store.period_take(k("q"), start, end, 10, 1, just_before)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.001, abs=1e-6)
    new_start, new_end = windows.period_bounds(period, end)
    assert new_start == end
    renewed = await store.period_take(k("q"), new_start, new_end, 10, 10, end)
    assert (renewed.allowed, renewed.used, renewed.bucket) == (True, 10, new_start)


async def test_redis_keys_are_namespaced_escaped_and_expire(
    k: Callable[[str], str], redis: Redis
) -> None:
    store = RedisCounterStore(REDIS_URL)
    try:
        await store.window_take(k("a:{b}"), MINUTE, 100, 5, T0)
        await store.window_take(k("hour"), 3600, 100, 5, T0)
        start, end = windows.period_bounds("Daily", T0)
        await store.period_take(k("a:{b}"), start, end, 100, 5, T0 + 100)
        await store.period_adjust(k("late"), start, end, 5)
    finally:
        await store.close()
    escaped = k("a%3A%7Bb%7D")
    assert window_key(k("a:{b}"), MINUTE) == f"aigw:w:{escaped}:60"
    assert period_key(k("a:{b}"), start, end) == f"aigw:p:{escaped}:{int(start)}:{int(end)}"
    assert (
        await redis.exists(window_key(k("a:{b}"), MINUTE), period_key(k("a:{b}"), start, end)) == 2
    )
    assert 60_000 < await redis.pttl(window_key(k("a:{b}"), MINUTE)) <= 61_000  # + a bucket
    assert 3_600_000 < await redis.pttl(window_key(k("hour"), 3600)) <= 3_660_000
    period_ttl = (end - (T0 + 100) + PERIOD_MARGIN) * 1000
    ttl = await redis.pttl(period_key(k("a:{b}"), start, end))
    assert period_ttl - 5_000 < ttl <= period_ttl + 1
    full_day = (end - start + PERIOD_MARGIN) * 1000
    assert full_day - 5_000 < await redis.pttl(period_key(k("late"), start, end)) <= full_day


async def redis_buckets(redis: Redis, name: str) -> tuple[dict[int, int], int]:
    """The bucket fields of a window hash, and the total it keeps beside them."""
    raw = await redis.hgetall(name)
    fields = {(f.decode() if isinstance(f, bytes) else f): int(v) for f, v in raw.items()}
    total = fields.pop("n", 0)
    fields.pop("o", None)
    return {int(f): v for f, v in fields.items() if not f.startswith("h")}, total


async def test_redis_drops_buckets_that_left_the_window(
    k: Callable[[str], str], redis: Redis
) -> None:
    store = RedisCounterStore(REDIS_URL)
    try:
        for i in range(70):
            await store.window_take(k("a"), MINUTE, 10_000, 1, T0 + i)
        buckets, total = await redis_buckets(redis, window_key(k("a"), MINUTE))
        assert len(buckets) == 60 and total == 60
        # After a pause longer than the window, the next take finds nothing left.
        assert (await store.window_take(k("a"), MINUTE, 10_000, 1, T0 + 500)).used == 1
        assert await redis_buckets(redis, window_key(k("a"), MINUTE)) == (
            {windows.bucket_index(T0 + 500, MINUTE): 1},
            1,
        )
    finally:
        await store.close()


async def test_memory_and_redis_agree_on_a_random_run(
    k: Callable[[str], str], redis: Redis
) -> None:
    """The same operations give the same answers from both stores, and Redis's kept total
    always equals the buckets it holds."""
    rng = random.Random(11)  # about 70 refusals, 110 adjusts of which 35 too late
    memory, shared = MemoryCounterStore(), RedisCounterStore(REDIS_URL)
    now, taken = T0, list[float]()
    try:
        for _ in range(400):
            now += rng.choice([0.0, 0.2, 0.7, 1.0, 1.0, 2.0, 3.0, 5.0, 70.0])
            if taken and rng.random() < 0.3:
                bucket = rng.choice(taken[-4:])
                delta = rng.randint(-40, 40)
                await memory.window_adjust(k("r"), MINUTE, bucket, delta, now)
                await shared.window_adjust(k("r"), MINUTE, bucket, delta, now)
            else:
                cost = rng.randint(0, 40)
                one = await memory.window_take(k("r"), MINUTE, 150, cost, now)
                two = await shared.window_take(k("r"), MINUTE, 150, cost, now)
                assert one == two
                taken.append(one.bucket)
            buckets, total = await redis_buckets(redis, window_key(k("r"), MINUTE))
            assert total == sum(buckets.values())  # dropped buckets leave with their units
    finally:
        await memory.close()
        await shared.close()


async def test_memory_and_redis_agree_with_holds_on_a_random_run(
    k: Callable[[str], str], redis: Redis
) -> None:
    """Takes that check less than they add and hold part of it, releases with settlements."""
    rng = random.Random(23)
    memory, shared = MemoryCounterStore(), RedisCounterStore(REDIS_URL)
    now, holds = T0, list[tuple[float, int, int]]()  # bucket, cost, held of takes in flight
    refusals = released = 0
    try:
        for _ in range(400):
            now += rng.choice([0.0, 0.3, 1.0, 1.0, 2.0, 5.0, 70.0])
            if holds and rng.random() < 0.4:
                bucket, cost, held = holds.pop(rng.randrange(len(holds)))
                delta = rng.randint(0, cost + 20) - cost
                target = bucket if delta < 0 else windows.bucket_start(now, MINUTE)
                for store in (memory, shared):
                    await store.window_adjust(
                        k("r"), MINUTE, target, delta, now, held=-held, held_bucket=bucket
                    )
                released += 1
                continue
            prompt, completion = rng.randint(0, 20), rng.randint(0, 60)
            fit = rng.choice([prompt, prompt + completion, 0])
            cost = prompt + completion
            one = await memory.window_take(k("r"), MINUTE, 150, cost, now, fit=fit, held=completion)
            two = await shared.window_take(k("r"), MINUTE, 150, cost, now, fit=fit, held=completion)
            assert one == two
            if one.allowed:
                holds.append((one.bucket, cost, completion))
            else:
                refusals += 1
            buckets, total = await redis_buckets(redis, window_key(k("r"), MINUTE))
            assert total == sum(buckets.values())
        assert refusals > 50 and released > 100
    finally:
        await memory.close()
        await shared.close()


async def test_redis_held_marks_leave_with_their_bucket(
    k: Callable[[str], str], redis: Redis
) -> None:
    store = RedisCounterStore(REDIS_URL)
    try:
        taken = await store.window_take(k("a"), MINUTE, 1000, 50, T0, fit=10, held=40)
        name = window_key(k("a"), MINUTE)
        mark = f"h{windows.index_of(taken.bucket, MINUTE)}"
        assert int(await redis.hget(name, mark)) == 40
        await store.window_take(k("a"), MINUTE, 1000, 5, T0 + MINUTE)  # the bucket left
        assert await redis.hget(name, mark) is None
        assert await redis_buckets(redis, name) == (
            {windows.bucket_index(T0 + MINUTE, MINUTE): 5},
            5,
        )
    finally:
        await store.close()


async def test_replicas_share_redis_counters(k: Callable[[str], str], redis: Redis) -> None:
    one, two = RedisCounterStore(REDIS_URL), RedisCounterStore(REDIS_URL)
    try:
        await one.window_take(k("a"), MINUTE, 100, 60, T0)
        assert not (await two.window_take(k("a"), MINUTE, 100, 41, T0 + 1)).allowed
        assert (await two.window_take(k("a"), MINUTE, 100, 40, T0 + 1)).allowed
        assert (await one.window_peek(k("a"), MINUTE, 100, T0 + 2)).used == 100
    finally:
        await one.close()
        await two.close()
        await two.close()  # closing twice is fine


async def test_memory_store_forgets_idle_keys() -> None:
    store = MemoryCounterStore(sweep_interval=60, sweep_batch=500)
    for i in range(5000):
        await store.window_take(f"w{i}", MINUTE, 10, 1, T0)
        await store.period_take(f"p{i}", T0, T0 + 60, 10, 1, T0)
    assert store.records() == 10_000
    later = T0 + 61
    for i in range(30):  # a sweep visits a batch per call
        await store.window_take("busy", MINUTE, 10**9, 1, later + i / 100)
    assert store.records() == 1
    # A live key survives the sweep.
    await store.window_take("long", 3600, 10, 1, later)
    for i in range(30):
        await store.window_take("busy", MINUTE, 10**9, 1, later + 200 + i / 100)
    assert (await store.window_peek("long", 3600, 10, later + 200)).used == 1


async def test_large_counts_stay_exact(store: CounterStore, k: Callable[[str], str]) -> None:
    big = 10**15  # Lua would print this as 1e+15 if it went back to Redis as a number
    assert (await store.window_take(k("a"), MINUTE, 4 * big, big, T0)).used == big
    assert (await store.window_take(k("a"), MINUTE, 4 * big, big + 1, T0)).used == 2 * big + 1
    await store.window_adjust(k("a"), MINUTE, windows.bucket_start(T0, MINUTE), big, T0)
    assert (await store.window_peek(k("a"), MINUTE, 4 * big, T0)).used == 3 * big + 1
    assert (await store.period_take(k("q"), T0, T0 + 60, 4 * big, big, T0)).used == big
    await store.period_adjust(k("q"), T0, T0 + 60, big)
    assert (await store.period_take(k("q"), T0, T0 + 60, 4 * big, 0, T0)).used == 2 * big
