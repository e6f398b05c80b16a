"""MetricStore: bucket edges, cumulative sums, and the cardinality cap's overflow series."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.metrics.export import Histogram, HistogramDataPoint, NumberDataPoint, Sum
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from aigw.telemetry.otlp_aggregation import MetricStore


def _store(max_series: int = 2000) -> MetricStore:
    return MetricStore(Resource.create({}), InstrumentationScope("test"), max_series)


def test_histogram_buckets_are_upper_inclusive_with_an_open_last_bucket() -> None:
    store = _store()
    histogram = store.histogram("h", "s", "", (1.0, 10.0))
    for value in (0, 1, 1.5, 10, 11, 1e9):
        histogram.record(value, ("k", "v"))
    data = store.collect()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert isinstance(metric.data, Histogram)
    (point,) = metric.data.data_points
    assert isinstance(point, HistogramDataPoint)
    assert list(point.bucket_counts) == [2, 2, 2]
    assert (point.count, point.sum, point.min, point.max) == (6, 1e9 + 23.5, 0, 1e9)
    assert point.attributes == {"k": "v"}


def test_nothing_recorded_collects_nothing() -> None:
    store = _store()
    store.counter("c", "1", "")
    assert store.collect() is None


def test_series_beyond_the_cap_fold_into_the_overflow_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _store(max_series=2)
    counter = store.counter("c", "1", "")
    with caplog.at_level(logging.WARNING):
        for user in ("a", "b", "c", "d", "a"):
            counter.add(1, ("user", user))
    data = store.collect()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert isinstance(metric.data, Sum) and metric.data.is_monotonic
    values = {}
    for point in metric.data.data_points:
        assert isinstance(point, NumberDataPoint)
        values[tuple(sorted(point.attributes.items()))] = point.value
    assert values == {
        (("user", "a"),): 2,
        (("user", "b"),): 1,
        (("otel.metric.overflow", True),): 2,
    }
    assert len([r for r in caplog.records if "folded" in r.getMessage()]) == 1
