"""One circuit-breaker rule's memory of recent failures, and whether it says "trip".

A `count` rule keeps the times of its last `count` failures only, so it is exact and its
memory is bounded. A `percentage` rule needs every request in the window as well: it counts
them in ten buckets, each a tenth of the interval long, so the window it sees is between
nine and ten tenths of the interval. Old entries are dropped lazily, when the rule is asked.
"""

from __future__ import annotations

from collections import deque

from aigw.backends.outcome import Outcome
from aigw.config.model import BreakerRule

BUCKETS = 10


class RuleWindow:
    __slots__ = (
        "_bucket_failed",
        "_bucket_number",
        "_bucket_total",
        "_bucket_width",
        "_failures",
        "_reasons",
        "_statuses",
        "count",
        "interval",
        "minimum_requests",
        "percentage",
        "rule",
    )

    def __init__(self, rule: BreakerRule) -> None:
        condition = rule.failure_condition
        self.rule = rule
        self.interval = condition.interval
        self.count = condition.count
        self.percentage = condition.percentage
        self.minimum_requests = condition.minimum_requests
        # A set lookup per answer instead of walking the ranges.
        self._statuses = frozenset(
            status
            for status_range in condition.status_code_ranges
            for status in range(status_range.min, status_range.max + 1)
        )
        self._reasons = frozenset(condition.error_reasons)
        self._failures: deque[float] = deque(maxlen=self.count or 1)
        self._bucket_width = self.interval / BUCKETS
        self._bucket_number = [-1] * BUCKETS
        self._bucket_total = [0] * BUCKETS
        self._bucket_failed = [0] * BUCKETS

    def counts_as_failure(self, outcome: Outcome) -> bool:
        if outcome.error is not None:
            return outcome.error in self._reasons
        return outcome.status in self._statuses

    def record(self, now: float, failed: bool) -> bool:
        """Count one judged request; True when this rule's threshold is reached."""
        if self.count is not None:
            if not failed:
                return False
            failures = self._failures
            failures.append(now)
            return len(failures) == self.count and failures[0] > now - self.interval
        number = int(now / self._bucket_width)
        slot = number % BUCKETS
        if self._bucket_number[slot] != number:
            self._bucket_number[slot] = number
            self._bucket_total[slot] = 0
            self._bucket_failed[slot] = 0
        self._bucket_total[slot] += 1
        if not failed:
            return False
        self._bucket_failed[slot] += 1
        failed_count, total = self._sums(now)
        assert self.percentage is not None
        return total >= self.minimum_requests and failed_count * 100 >= self.percentage * total

    def recent(self, now: float) -> tuple[int, int | None]:
        """Failures within the window, and requests too for a percentage rule."""
        if self.count is not None:
            return sum(1 for at in self._failures if at > now - self.interval), None
        return self._sums(now)

    def clear(self) -> None:
        self._failures.clear()
        for slot in range(BUCKETS):
            # Counts zeroed too: early on a monotonic clock, bucket -1 is in the window.
            self._bucket_number[slot] = -1
            self._bucket_total[slot] = self._bucket_failed[slot] = 0

    def threshold(self) -> str:
        if self.count is not None:
            return f"{self.count} failure(s) within {self.interval:g} s"
        return (
            f"{self.percentage} % of at least {self.minimum_requests} request(s) "
            f"within {self.interval:g} s"
        )

    def _sums(self, now: float) -> tuple[int, int]:
        oldest = int(now / self._bucket_width) - BUCKETS + 1
        failed = total = 0
        for slot in range(BUCKETS):
            if self._bucket_number[slot] >= oldest:
                failed += self._bucket_failed[slot]
                total += self._bucket_total[slot]
        return failed, total
