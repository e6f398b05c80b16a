"""Cumulative counters and explicit-bucket histograms, kept cheaply for the OTLP exporter.

The OpenTelemetry SDK's instruments cost 10-16 µs per measurement (attribute cleaning and
hashing, view matching); a finished request makes about ten of them. Here a measurement is a
dict lookup on a tuple of attribute pairs plus a bisect, about 1 µs, and `collect` turns the
state into the SDK's own `MetricsData`, which the SDK's OTLP exporter encodes and sends.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

log = logging.getLogger(__name__)

AttrValue = str | int | float | bool
# A series key: attribute names and values alternating (name, value, name, value, …), in a
# fixed order per call site. Flat, because hashing nested pairs costs a tuple hash per pair.
Attrs = tuple[AttrValue, ...]

# The SDK's default cardinality limit, and its name for the series that takes the rest.
MAX_SERIES = 2000
OVERFLOW: Attrs = ("otel.metric.overflow", True)


def attributes(key: Attrs) -> dict[str, AttrValue]:
    return {str(name): value for name, value in zip(key[::2], key[1::2], strict=True)}


class _Points:
    """One histogram series: bucket counts, sum, count, min and max."""

    __slots__ = ("buckets", "count", "max", "min", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.count = 0
        self.sum: float = 0
        self.min = float("inf")
        self.max = float("-inf")


class _Instrument:
    def __init__(self, name: str, unit: str, description: str, max_series: int) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._max_series = max_series
        self._warned = False

    def _key(self, attrs: Attrs, size: int) -> Attrs:
        """`attrs`, or the overflow series once the instrument holds `max_series` others."""
        if size < self._max_series:
            return attrs
        if not self._warned:
            self._warned = True
            log.warning(
                "OTLP metric %s has %d attribute sets; further ones are folded into %s",
                self.name,
                size,
                attributes(OVERFLOW),
            )
        return OVERFLOW


class Counter(_Instrument):
    """A monotonic sum per attribute set (callers hold the store's lock)."""

    def __init__(self, name: str, unit: str, description: str, max_series: int) -> None:
        super().__init__(name, unit, description, max_series)
        # A one-item list per series, so an addition hashes the key once.
        self.values: dict[Attrs, list[float]] = {}

    def add(self, amount: float, attrs: Attrs) -> None:
        cell = self.values.get(attrs)
        if cell is None:
            attrs = self._key(attrs, len(self.values))
            cell = self.values.get(attrs)
            if cell is None:
                cell = self.values[attrs] = [0]
        cell[0] += amount


class BucketHistogram(_Instrument):
    """Explicit-bucket histogram per attribute set (callers hold the store's lock)."""

    def __init__(
        self, name: str, unit: str, description: str, bounds: Sequence[float], max_series: int
    ) -> None:
        super().__init__(name, unit, description, max_series)
        self.bounds = tuple(bounds)
        self.series: dict[Attrs, _Points] = {}

    def record(self, value: float, attrs: Attrs) -> None:
        points = self.series.get(attrs)
        if points is None:
            attrs = self._key(attrs, len(self.series))
            points = self.series.get(attrs)
            if points is None:
                points = self.series[attrs] = _Points(len(self.bounds) + 1)
        # OTLP buckets are (bounds[i-1], bounds[i]]: a value equal to a bound goes below it.
        points.buckets[bisect_left(self.bounds, value)] += 1
        points.count += 1
        points.sum += value
        if value < points.min:
            points.min = value
        if value > points.max:
            points.max = value


class MetricStore:
    """The instruments of one exporter. Measurements come from the event loop, `collect`
    from the export thread: both hold `lock`, which callers take once per request."""

    def __init__(
        self, resource: Resource, scope: InstrumentationScope, max_series: int = MAX_SERIES
    ) -> None:
        self.lock = threading.Lock()
        self._resource = resource
        self._scope = scope
        self._max_series = max_series
        self._start_ns = time.time_ns()
        self._counters: list[Counter] = []
        self._histograms: list[BucketHistogram] = []

    def counter(self, name: str, unit: str, description: str) -> Counter:
        counter = Counter(name, unit, description, self._max_series)
        self._counters.append(counter)
        return counter

    def histogram(
        self, name: str, unit: str, description: str, bounds: Sequence[float]
    ) -> BucketHistogram:
        histogram = BucketHistogram(name, unit, description, bounds, self._max_series)
        self._histograms.append(histogram)
        return histogram

    def collect(self) -> MetricsData | None:
        """Every series so far (cumulative since the store was made); None before any."""
        now = time.time_ns()
        with self.lock:  # only copy the numbers here: requests wait for this lock
            sums = [(c, [(a, cell[0]) for a, cell in c.values.items()]) for c in self._counters]
            histograms = [
                (
                    h,
                    [
                        (a, p.count, p.sum, list(p.buckets), p.min, p.max)
                        for a, p in h.series.items()
                    ],
                )
                for h in self._histograms
            ]
        metrics = [self._sum(c, values, now) for c, values in sums if values]
        metrics += [self._histogram(h, series, now) for h, series in histograms if series]
        if not metrics:
            return None
        scope = ScopeMetrics(scope=self._scope, metrics=metrics, schema_url="")
        resource = ResourceMetrics(resource=self._resource, scope_metrics=[scope], schema_url="")
        return MetricsData(resource_metrics=[resource])

    def _sum(self, counter: Counter, values: list[tuple[Any, float]], now: int) -> Metric:
        points = [
            NumberDataPoint(
                attributes=attributes(attrs),
                start_time_unix_nano=self._start_ns,
                time_unix_nano=now,
                value=value,
            )
            for attrs, value in values
        ]
        data = Sum(
            data_points=points,
            aggregation_temporality=AggregationTemporality.CUMULATIVE,
            is_monotonic=True,
        )
        return Metric(counter.name, counter.description, counter.unit, data)

    def _histogram(
        self,
        histogram: BucketHistogram,
        series: list[tuple[Any, int, float, list[int], float, float]],
        now: int,
    ) -> Metric:
        points = [
            HistogramDataPoint(
                attributes=attributes(attrs),
                start_time_unix_nano=self._start_ns,
                time_unix_nano=now,
                count=count,
                sum=total,
                bucket_counts=buckets,
                explicit_bounds=histogram.bounds,
                min=low,
                max=high,
            )
            for attrs, count, total, buckets, low, high in series
        ]
        data = Histogram(
            data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE
        )
        return Metric(histogram.name, histogram.description, histogram.unit, data)
