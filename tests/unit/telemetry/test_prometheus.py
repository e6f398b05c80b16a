"""The Prometheus registry: series in shared files, summed over processes; the guard."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from aigw.telemetry.prometheus import LATENCY_BUCKETS, MetricsDirectory, PrometheusMetrics
from aigw.telemetry.record import RequestRecord
from aigw.usage.model import Usage


def record(**changes: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": "r1",
        "client_request_id": None,
        "started_at": datetime(2026, 11, 27, tzinfo=UTC),
        "started": 100.0,
        "method": "POST",
        "api_id": "chat",
        "api_type": "openai",
        "operation_id": "chat-completions",
        "subscription_id": "sub-1",
        "product_id": "starter",
        "user_id": None,
        "deployment": None,
        "model": "gpt-4o",
        "backend_id": "ptu",
        "client_ip": "127.0.0.1",
        "status": 200,
        "reason": None,
        "shadow_rejections": (),
        "client_disconnected": False,
        "duration": 0.2,
        "time_to_first_byte": 0.05,
        "usage": Usage(30, 12, 42, cached_tokens=10, reasoning_tokens=4),
        "metered": True,
        "cache_hit": False,
    }
    values.update(changes)
    return RequestRecord(**values)


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: bytes, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path


def test_a_request_is_counted_with_its_latency_and_tokens(directory: Path) -> None:
    metrics = PrometheusMetrics(directory)
    metrics.request_finished(record())
    metrics.request_finished(record(duration=3.0, time_to_first_byte=None))
    text = metrics.render()
    labels = {"api": "chat", "operation": "chat-completions", "backend": "ptu", "status": "200"}
    assert value(text, "aigw_requests_total", **labels) == 2
    assert value(text, "aigw_request_duration_seconds_count", **labels) == 2
    assert value(text, "aigw_request_duration_seconds_sum", **labels) == pytest.approx(3.2)
    assert value(text, "aigw_request_duration_seconds_bucket", **labels, le="0.25") == 1
    assert value(text, "aigw_request_duration_seconds_bucket", **labels, le="2.5") == 1
    assert value(text, "aigw_request_duration_seconds_bucket", **labels, le="5.0") == 2
    assert value(text, "aigw_request_duration_seconds_bucket", **labels, le="+Inf") == 2
    # Every bucket is there from the first observation on.
    buckets = [key for key in samples(text) if key[0] == "aigw_time_to_first_token_seconds_bucket"]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert value(text, "aigw_time_to_first_token_seconds_count", **labels) == 1
    token = {
        "api": "chat",
        "operation": "chat-completions",
        "model": "gpt-4o",
        "backend": "ptu",
        "source": "backend",
    }
    assert value(text, "aigw_request_tokens_total", **token, token_type="prompt") == 60
    assert value(text, "aigw_request_tokens_total", **token, token_type="completion") == 24
    assert value(text, "aigw_request_tokens_total", **token, token_type="total") == 84
    assert value(text, "aigw_request_tokens_total", **token, token_type="cached_prompt") == 20
    assert value(text, "aigw_request_tokens_total", **token, token_type="reasoning") == 8


def test_rejections_are_counted_by_reason(directory: Path) -> None:
    metrics = PrometheusMetrics(directory)
    metrics.request_finished(record(status=429, reason="TokenLimitExceeded", usage=None))
    metrics.request_finished(record(shadow_rejections=("RateLimitExceeded",)))
    metrics.unrouted(404, 0.001)
    text = metrics.render()
    assert (
        value(
            text,
            "aigw_rejections_total",
            api="chat",
            operation="chat-completions",
            status="429",
            reason="TokenLimitExceeded",
        )
        == 1
    )
    assert (
        value(
            text,
            "aigw_shadow_rejections_total",
            api="chat",
            operation="chat-completions",
            reason="RateLimitExceeded",
        )
        == 1
    )
    assert value(text, "aigw_requests_total", api="", operation="", backend="", status="404") == 1


def test_every_worker_s_series_are_summed_whichever_answers(directory: Path) -> None:
    first, second = PrometheusMetrics(directory), PrometheusMetrics(directory)
    for _ in range(3):
        first.request_finished(record())
    second.request_finished(record())
    second.event("limit_store_errors", {"store": "redis", "policy": "llm-token-limit"}, 2)
    labels = {"api": "chat", "operation": "chat-completions", "backend": "ptu", "status": "200"}
    first.flush(), second.flush()  # each worker does it every second and before a scrape
    for registry in (first, second):
        text = registry.render()
        assert value(text, "aigw_requests_total", **labels) == 4
        assert value(text, "aigw_request_duration_seconds_count", **labels) == 4
        assert (
            value(text, "aigw_limit_store_errors_total", store="redis", policy="llm-token-limit")
            == 2
        )


def test_counts_reach_the_other_workers_when_flushed(directory: Path) -> None:
    counting, scraped = PrometheusMetrics(directory), PrometheusMetrics(directory)
    labels = {"api": "chat", "operation": "chat-completions", "backend": "ptu", "status": "200"}
    counting.request_finished(record())
    counting.flush()
    counting.request_finished(record())
    counting.request_finished(record())
    assert value(scraped.render(), "aigw_requests_total", **labels) == 1
    counting.flush()
    text = scraped.render()
    assert value(text, "aigw_requests_total", **labels) == 3
    assert value(text, "aigw_request_duration_seconds_count", **labels) == 3
    tokens = {"api": "chat", "operation": "chat-completions", "model": "gpt-4o", "backend": "ptu"}
    assert value(text, "aigw_request_tokens_total", **tokens, source="backend",
                 token_type="total") == 126  # fmt: skip


def test_zero_token_types_get_no_request_series(directory: Path) -> None:
    metrics = PrometheusMetrics(directory)
    metrics.request_finished(record(usage=Usage(30, 12, 42)))
    metrics.request_finished(record(usage=Usage(5, 0, 5, reasoning_tokens=2)))
    found = {
        dict(labels)["token_type"]: sample
        for (name, labels), sample in samples(metrics.render()).items()
        if name == "aigw_request_tokens_total"
    }
    assert found == {"prompt": 35, "completion": 12, "total": 47, "reasoning": 2}


def test_a_dead_worker_s_counters_keep_counting(directory: Path) -> None:
    gone = PrometheusMetrics(directory)
    gone.request_finished(record())
    gone.close()
    alive = PrometheusMetrics(directory)
    alive.request_finished(record())
    labels = {"api": "chat", "operation": "chat-completions", "backend": "ptu", "status": "200"}
    assert value(alive.render(), "aigw_requests_total", **labels) == 2


def test_emitted_tokens_carry_the_dimensions_as_labels(directory: Path) -> None:
    metrics = PrometheusMetrics(directory)
    dimensions = {"Subscription ID": "sub-1", "API ID": "chat", "Client IP": "10.0.0.1"}
    metrics.tokens_emitted("llm-usage", dimensions, Usage(7, 3, 10))
    metrics.tokens_emitted("llm-usage", dimensions, Usage(1, 1, 2))
    labels = {
        "namespace": "llm-usage",
        "subscription_id": "sub-1",
        "api_id": "chat",
        "client_ip": "10.0.0.1",
    }
    text = metrics.render()
    assert value(text, "aigw_llm_tokens_total", **labels, token_type="prompt") == 8
    assert value(text, "aigw_llm_tokens_total", **labels, token_type="completion") == 4
    assert value(text, "aigw_llm_tokens_total", **labels, token_type="total") == 12
    assert value(text, "aigw_llm_tokens_total", **labels, token_type="cached_prompt") == 0
    assert value(text, "aigw_llm_tokens_total", **labels, token_type="reasoning") == 0


def test_the_cardinality_guard_folds_new_label_sets_into_other(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = PrometheusMetrics(directory, max_series=10)
    caplog.set_level(logging.WARNING, logger="aigw.metrics")
    for index in range(25):  # 5 token types per client: 2 clients fill the 10 series
        metrics.tokens_emitted("ns", {"Client IP": f"10.0.0.{index}"}, Usage(1, 1, 2))
    text = metrics.render()
    series = [key for key in samples(text) if key[0] == "aigw_llm_tokens_total"]
    kept = {dict(labels)["client_ip"] for _, labels in series}
    assert kept == {"10.0.0.0", "10.0.0.1", "other"}
    # The token type is kept apart even in the folded series.
    assert value(text, "aigw_llm_tokens_total", namespace="ns", client_ip="other",
                 token_type="prompt") == 23  # fmt: skip
    assert value(text, "aigw_metric_series_dropped_total", metric="aigw_llm_tokens") == 23 * 5
    warnings = [r for r in caplog.records if "aigw_llm_tokens" in r.getMessage()]
    assert len(warnings) == 1, "one log line per metric, not one per dropped label set"


def test_forgetting_a_worker_removes_only_its_gauges(tmp_path: Path) -> None:
    directory = MetricsDirectory()
    try:
        (directory.path / "gauge_livemax_123-abcdef.db").write_bytes(b"")
        (directory.path / "counter_123-abcdef.db").write_bytes(b"")
        (directory.path / "gauge_livemax_1234-abcdef.db").write_bytes(b"")
        directory.forget_process(123)
        left = sorted(path.name for path in directory.path.iterdir())
        assert left == ["counter_123-abcdef.db", "gauge_livemax_1234-abcdef.db"]
    finally:
        directory.remove()
    assert not directory.path.exists()


def test_backend_state_shows_the_most_open_breaker_and_all_in_flight(directory: Path) -> None:
    first, second = PrometheusMetrics(directory), PrometheusMetrics(directory)
    first.backend_state("ptu", "open", in_flight=3, requests=10, failures=4)
    second.backend_state("ptu", "closed", in_flight=2, requests=5, failures=0)
    second.backend_state("paygo", "half-open", in_flight=0, requests=1, failures=1)
    second.flush()
    text = first.render()
    assert value(text, "aigw_backend_breaker_state", backend="ptu") == 2
    assert value(text, "aigw_backend_breaker_state", backend="paygo") == 1
    assert value(text, "aigw_backend_in_flight", backend="ptu") == 5
    assert value(text, "aigw_backend_requests_total", backend="ptu") == 15
    assert value(text, "aigw_backend_failures_total", backend="ptu") == 4
    first.backend_state("ptu", "closed", in_flight=0, requests=11, failures=4)
    first.flush()
    text = second.render()
    assert value(text, "aigw_backend_breaker_state", backend="ptu") == 0
    assert value(text, "aigw_backend_in_flight", backend="ptu") == 2


def test_text_a_caller_chose_is_bounded_and_free_of_nul() -> None:
    from aigw.telemetry.record import MAX_TEXT, caller_text

    assert caller_text("gpt-4o") == "gpt-4o"
    assert caller_text(None) is None
    assert caller_text("a\x00b") == "ab"
    assert caller_text("m" * 10_000) == "m" * MAX_TEXT


def test_requests_without_a_first_byte_or_tokens_add_no_such_series(directory: Path) -> None:
    metrics = PrometheusMetrics(directory, max_series=10)
    for index in range(50):  # refused requests naming models of their own
        metrics.request_finished(
            record(status=401, time_to_first_byte=None, usage=Usage(0, 0, 0), model=f"m{index}")
        )
    names = {name for name, _ in samples(metrics.render())}
    assert "aigw_requests_total" in names
    assert not any(name.startswith("aigw_time_to_first_token") for name in names)
    assert "aigw_request_tokens_total" not in names
    assert metrics.cached_rows() == 0, "nothing kept per model name either"


def test_a_failed_flush_leaves_what_it_did_not_write_for_the_next(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting, scraped = PrometheusMetrics(directory), PrometheusMetrics(directory)
    counting.request_finished(record())
    original, calls = MmapedDict.write_value, []

    def failing_once(self: MmapedDict, key: str, value: float, timestamp: float) -> None:
        calls.append(key)
        if len(calls) == 3:
            raise OSError("disk full")
        original(self, key, value, timestamp)

    monkeypatch.setattr(MmapedDict, "write_value", failing_once)
    with pytest.raises(OSError):
        counting.flush()
    monkeypatch.setattr(MmapedDict, "write_value", original)
    counting.flush()
    labels = {"api": "chat", "operation": "chat-completions", "backend": "ptu", "status": "200"}
    text = scraped.render()
    assert value(text, "aigw_requests_total", **labels) == 1
    assert value(text, "aigw_request_duration_seconds_count", **labels) == 1
    assert value(text, "aigw_time_to_first_token_seconds_count", **labels) == 1
