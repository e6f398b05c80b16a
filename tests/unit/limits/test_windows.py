"""The window math: buckets, retry-after and the quota calendar (pure functions)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from aigw.limits import windows
from aigw.limits.windows import QuotaPeriod


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_bucket_size_is_a_sixtieth_of_the_window_but_at_least_a_second() -> None:
    assert windows.bucket_size(60) == 1.0
    assert windows.bucket_size(3600) == 60.0
    assert windows.bucket_size(90) == 1.5
    assert windows.bucket_size(10) == 1.0
    assert windows.bucket_size(0.5) == 1.0


def test_buckets_are_aligned_to_the_epoch() -> None:
    assert windows.bucket_index(1000.7, 60) == 1000
    assert windows.bucket_start(1000.7, 60) == 1000.0
    assert windows.bucket_start(1000.0, 60) == 1000.0
    assert windows.bucket_start(7259.0, 3600) == 7200.0
    assert windows.bucket_start(100.0, 90) == 99.0  # 66 buckets of 1.5 s
    assert windows.index_of(windows.bucket_start(7259.0, 3600), 3600) == 120


def test_a_bucket_leaves_the_window_when_it_is_a_window_old() -> None:
    # Bucket 940 counts until 940 + 60 = 1000, exclusive.
    assert windows.oldest_index(999.999, 60) == 940
    assert windows.oldest_index(1000.0, 60) == 941
    assert windows.oldest_index(1000.5, 60) == 941
    assert windows.oldest_index(7200.0, 3600) == 61  # 60 buckets of a minute
    assert windows.oldest_index(7199.0, 3600) == 60


def test_sixty_buckets_are_inside_a_window() -> None:
    for now in (1000.0, 1000.5, 1_767_225_600.999):
        assert windows.bucket_index(now, 60) - windows.oldest_index(now, 60) + 1 == 60


def test_used_counts_only_buckets_inside_the_window() -> None:
    buckets = {939: 1, 940: 2, 970: 4, 1000: 8}
    assert windows.used_in_window(buckets, windows.oldest_index(999.5, 60)) == 14
    assert windows.used_in_window(buckets, windows.oldest_index(1000.0, 60)) == 12


def test_fits_counts_a_cost_of_zero_as_asking_for_anything_left() -> None:
    assert windows.fits(90, 10, 100)
    assert not windows.fits(91, 10, 100)
    assert windows.fits(99, 0, 100)
    assert not windows.fits(100, 0, 100)
    assert not windows.fits(0, 0, 0)


def test_retry_after_waits_for_just_enough_buckets_to_leave() -> None:
    buckets = {940: 5, 950: 10, 960: 2, 1000: 3}  # at 1000.5: 950, 960, 1000 count (15)
    assert windows.retry_after(buckets, 60, 20, 5, 1000.5) == 0.0
    assert windows.retry_after(buckets, 60, 20, 6, 1000.5) == 1010 - 1000.5  # 950 leaves
    assert windows.retry_after(buckets, 60, 20, 17, 1000.5) == 1020 - 1000.5  # and 960
    assert windows.retry_after(buckets, 60, 20, 20, 1000.5) == 1060 - 1000.5  # all of them
    assert windows.retry_after({1000: 20}, 60, 20, 0, 1000.5) == 1060 - 1000.5


def test_retry_after_waits_at_most_a_second_for_held_units() -> None:
    buckets, held = {950: 10, 1000: 10}, {1000: 8}  # at 1000.5: 20 used, 8 of them held
    # Fits once the 8 held are back: they come back when their requests end.
    assert windows.retry_after(buckets, 60, 20, 5, 1000.5, held) == windows.HELD_RETRY
    assert windows.retry_after(buckets, 60, 20, 5, 1000.5) == 1010 - 1000.5  # without marks
    # Does not fit even then: the settled units of 950 must leave first.
    assert windows.retry_after(buckets, 60, 20, 15, 1000.5, held) == 1010 - 1000.5
    # A shorter wait stays as it is; a mark larger than its bucket counts as the bucket.
    assert windows.retry_after({940: 10, 1000: 10}, 60, 20, 5, 999.5, {1000: 10}) == 0.5
    assert windows.retry_after({1000: 5}, 60, 5, 1, 1000.5, {1000: 50}) == windows.HELD_RETRY
    assert windows.retry_after({}, 60, 20, 21, 1000.5, {1000: 5}) == 60.0


def test_a_cost_over_the_limit_never_fits_and_gets_the_window() -> None:
    assert windows.retry_after({}, 60, 20, 21, 1000.5) == 60.0
    assert windows.retry_after({}, 3600, 0, 0, 1000.5) == 3600.0


@pytest.mark.parametrize("window", [60.0, 90.0, 3600.0, 10.0, 86400.0])
def test_retry_after_is_honest_to_the_float(window: float) -> None:
    """Waiting exactly `retry_after` admits the cost; a millisecond less does not."""
    rng = random.Random(window)
    size = windows.bucket_size(window)
    for _ in range(300):
        now = 1_767_225_600 + rng.uniform(0, 86400 * 30)
        limit = rng.randint(1, 1000)
        current = windows.bucket_index(now, window)
        buckets = {current - rng.randint(0, 59): rng.randint(1, 60) for _ in range(20)}
        cost = rng.randint(0, limit)
        wait = windows.retry_after(buckets, window, limit, cost, now)

        def fits_at(t: float, buckets: dict[int, int], cost: int, limit: int) -> bool:
            used = windows.used_in_window(buckets, windows.oldest_index(t, window))
            return windows.fits(used, cost, limit)

        assert fits_at(now + wait, buckets, cost, limit)
        if wait > 0:
            assert not fits_at(now + wait - 1e-3, buckets, cost, limit)
            # The bucket that frees the room leaves on a bucket edge.
            edge = now + wait - window
            assert edge == pytest.approx(round(edge / size) * size)


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("Hourly", ts(2026, 3, 4, 5, 6, 7), ts(2026, 3, 4, 5), ts(2026, 3, 4, 6)),
        ("Hourly", ts(2026, 12, 31, 23, 59, 59), ts(2026, 12, 31, 23), ts(2027, 1, 1)),
        ("Daily", ts(2026, 3, 4, 5, 6, 7), ts(2026, 3, 4), ts(2026, 3, 5)),
        ("Daily", ts(2024, 2, 28, 12), ts(2024, 2, 28), ts(2024, 2, 29)),
        ("Daily", ts(2024, 2, 29, 12), ts(2024, 2, 29), ts(2024, 3, 1)),
        # 2026-03-04 is a Wednesday; weeks start on Monday 00:00 UTC.
        ("Weekly", ts(2026, 3, 4, 5), ts(2026, 3, 2), ts(2026, 3, 9)),
        ("Weekly", ts(2026, 3, 2), ts(2026, 3, 2), ts(2026, 3, 9)),
        ("Weekly", ts(2026, 3, 1, 23, 59, 59), ts(2026, 2, 23), ts(2026, 3, 2)),
        ("Weekly", ts(2026, 1, 1), ts(2025, 12, 29), ts(2026, 1, 5)),  # across new year
        ("Monthly", ts(2026, 3, 4, 5), ts(2026, 3, 1), ts(2026, 4, 1)),
        ("Monthly", ts(2026, 12, 31, 23), ts(2026, 12, 1), ts(2027, 1, 1)),
        ("Monthly", ts(2026, 1, 31), ts(2026, 1, 1), ts(2026, 2, 1)),
        ("Monthly", ts(2024, 2, 29, 23), ts(2024, 2, 1), ts(2024, 3, 1)),  # leap February
        ("Monthly", ts(2026, 2, 28, 23), ts(2026, 2, 1), ts(2026, 3, 1)),
        ("Yearly", ts(2026, 3, 4), ts(2026, 1, 1), ts(2027, 1, 1)),
        ("Yearly", ts(2024, 12, 31, 23, 59, 59), ts(2024, 1, 1), ts(2025, 1, 1)),
    ],
)
def test_period_bounds_follow_the_utc_calendar(
    period: QuotaPeriod, now: float, start: float, end: float
) -> None:
    assert windows.period_bounds(period, now) == (start, end)


def test_leap_years_have_a_longer_february_and_year() -> None:
    feb_2024 = windows.period_bounds("Monthly", ts(2024, 2, 10))
    feb_2100 = windows.period_bounds("Monthly", ts(2100, 2, 10))  # not a leap year
    assert feb_2024[1] - feb_2024[0] == 29 * 86400
    assert feb_2100[1] - feb_2100[0] == 28 * 86400
    year_2024 = windows.period_bounds("Yearly", ts(2024, 6, 1))
    assert year_2024[1] - year_2024[0] == 366 * 86400


@pytest.mark.parametrize("period", windows.QUOTA_PERIODS)
def test_periods_meet_end_to_start_at_the_edges(period: QuotaPeriod) -> None:
    start, end = windows.period_bounds(period, ts(2028, 2, 29, 12))
    assert windows.period_bounds(period, start) == (start, end)
    assert windows.period_bounds(period, end - 1e-6)[1] == end
    assert windows.period_bounds(period, end)[0] == end


def test_an_unknown_period_is_an_error() -> None:
    with pytest.raises(ValueError, match="Fortnightly"):
        windows.period_bounds("Fortnightly", 0.0)  # type: ignore[arg-type]


def test_fixed_periods_are_aligned_to_the_epoch_or_a_first_start() -> None:
    assert windows.fixed_period(1000.5, 300) == (900.0, 1200.0)
    assert windows.fixed_period(1200.0, 300) == (1200.0, 1500.0)
    assert windows.fixed_period(1199.999, 300) == (900.0, 1200.0)
    assert windows.fixed_period(1000.5, 300, first_start=950.0) == (950.0, 1250.0)
    assert windows.fixed_period(949.0, 300, first_start=950.0) == (650.0, 950.0)
    first = ts(2026, 1, 15, 8, 30)
    assert windows.fixed_period(ts(2026, 3, 1), 86400 * 7, first) == (
        ts(2026, 2, 26, 8, 30),
        ts(2026, 3, 5, 8, 30),
    )


def test_fixed_periods_always_contain_now() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        length = rng.choice([0.1, 1.0, 3.3, 60.0, 3600.0, 86400.0 * 30])
        first = rng.uniform(-1e9, 2e9)
        now = rng.uniform(0, 2e9)
        start, end = windows.fixed_period(now, length, first)
        assert start <= now < end
        assert end - start == pytest.approx(length, abs=1e-6)


def test_a_fixed_period_needs_a_length() -> None:
    with pytest.raises(ValueError):
        windows.fixed_period(1.0, 0)
