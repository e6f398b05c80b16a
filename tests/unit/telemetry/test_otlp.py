"""OtlpExporter against a local OTLP/HTTP collector stub: the exact data points and spans that
arrive, sampling and the on/off switches, headers, and shutdown with a dead endpoint."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from aigw.config.model import OtlpConfig
from aigw.telemetry.otlp import OtlpExporter
from aigw.telemetry.otlp_metrics import TOKEN_BUCKETS
from aigw.telemetry.record import RequestRecord, StepTiming
from aigw.usage.model import Usage
from tests.otlp_collector import OtlpCollector, Point

STARTED_AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
STARTED = 500.0  # the request clock's monotonic seconds at the start
START_NS = 1772366400123456000  # STARTED_AT in ns since the epoch

CHAT = RequestRecord(
    request_id="req-1",
    client_request_id="client-1",
    started_at=STARTED_AT,
    started=STARTED,
    method="POST",
    api_id="openai",
    api_type="openai",
    operation_id="chat-completions",
    subscription_id="sub-a",
    product_id="gold",
    user_id=None,
    deployment=None,
    model="gpt-4o",
    backend_id="demo",
    client_ip="127.0.0.1",
    status=200,
    reason=None,
    shadow_rejections=(),
    client_disconnected=False,
    duration=0.25,
    time_to_first_byte=0.05,
    usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
    metered=True,
    cache_hit=False,
)

STEPS = (
    StepTiming("validate-jwt", "inbound", STARTED + 0.001, STARTED + 0.003, policy_id="jwt"),
    StepTiming("llm-token-limit", "inbound", STARTED + 0.003, STARTED + 0.004),
    StepTiming("backend", "terminal", STARTED + 0.005, STARTED + 0.2),
    StepTiming("set-header", "outbound", STARTED + 0.21, STARTED + 0.22, outcome="error"),
)

GENAI = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
}
OWNER = {"aigw.api.id": "openai", "aigw.subscription.id": "sub-a", "aigw.product.id": "gold"}

MakeExporter = Callable[..., Awaitable[OtlpExporter]]


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as stub:
        yield stub


@pytest.fixture
async def make_exporter(collector: OtlpCollector) -> AsyncIterator[MakeExporter]:
    """Started exporters on the collector (config keys as in YAML), closed after the test."""
    made: list[OtlpExporter] = []

    async def make(**settings: Any) -> OtlpExporter:
        config = OtlpConfig.model_validate(
            {"endpoint": collector.url, "export-interval": 60, "timeout": 2, **settings}
        )
        exporter = OtlpExporter(config, "gw-test", instance_id="instance-1")
        await exporter.start()
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        await exporter.close()


async def flush(exporter: OtlpExporter) -> None:
    assert await asyncio.to_thread(exporter.force_flush)


def histogram(point: Point) -> tuple[int | None, float | None, float | None, float | None]:
    return point.count, point.sum, point.min, point.max


async def test_token_usage_histogram_has_input_and_output_per_semantic_conventions(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(traces=False)
    exporter.request_finished(CHAT)
    larger = Usage(prompt_tokens=20, completion_tokens=16, total_tokens=36)
    exporter.request_finished(replace(CHAT, usage=larger))
    await flush(exporter)

    prompt = collector.point("gen_ai.client.token.usage", {"gen_ai.token.type": "input"})
    assert prompt is not None
    assert prompt.attributes == {**GENAI, "gen_ai.token.type": "input", **OWNER}
    assert prompt.unit == "{token}"
    assert prompt.temporality == 2  # cumulative
    assert histogram(prompt) == (2, 30, 10, 20)
    assert prompt.explicit_bounds == list(TOKEN_BUCKETS)
    # 10 and 20 lie in (4, 16] and (16, 64].
    assert prompt.bucket_counts == [0, 0, 1, 1] + [0] * 11
    completion = collector.point("gen_ai.client.token.usage", {"gen_ai.token.type": "output"})
    assert completion is not None
    assert histogram(completion) == (2, 21, 5, 16)
    # A value equal to a bound is counted below it: 16 is in (4, 16].
    assert completion.bucket_counts == [0, 0, 2] + [0] * 12
    assert prompt.resource["service.name"] == "aigw"
    assert prompt.resource["service.instance.id"] == "instance-1"
    assert prompt.resource["aigw.gateway.id"] == "gw-test"


async def test_token_counter_has_every_kind_with_its_source(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(traces=False)
    usage = Usage(
        prompt_tokens=100,
        completion_tokens=40,
        total_tokens=140,
        cached_tokens=64,
        reasoning_tokens=30,
        source="counted",
    )
    exporter.request_finished(replace(CHAT, usage=usage))
    exporter.request_finished(CHAT)  # no cached or reasoning tokens: none added
    await flush(exporter)

    def tokens(kind: str, source: str) -> int | float | None:
        point = collector.point(
            "aigw.llm.tokens", {"aigw.token.type": kind, "aigw.usage.source": source}
        )
        return point.value if point is not None else None

    assert tokens("prompt", "counted") == 100
    assert tokens("completion", "counted") == 40
    assert tokens("total", "counted") == 140
    assert tokens("cached_prompt", "counted") == 64
    assert tokens("reasoning", "counted") == 30
    assert tokens("total", "backend") == 15
    assert tokens("cached_prompt", "backend") is None
    point = collector.point(
        "aigw.llm.tokens", {"aigw.token.type": "prompt", "aigw.usage.source": "backend"}
    )
    assert point is not None and point.monotonic is True
    assert point.attributes == {
        **GENAI,
        "aigw.token.type": "prompt",
        "aigw.usage.source": "backend",
        **OWNER,
    }


async def test_operation_names_providers_and_models(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(traces=False)
    azure = replace(CHAT, api_id="azure", api_type="azure-openai", model=None, deployment="dep")
    exporter.request_finished(replace(azure, operation_id="embeddings", subscription_id=None))
    exporter.request_finished(replace(CHAT, operation_id="completions", product_id=None))
    exporter.request_finished(replace(CHAT, operation_id="responses", subscription_id="sub-r"))
    await flush(exporter)

    embeddings = collector.points("gen_ai.client.token.usage")
    by_operation = {
        (p.attributes["gen_ai.operation.name"], p.attributes["gen_ai.token.type"]): p
        for p in embeddings
    }
    # Embeddings have input tokens only.
    assert set(by_operation) == {
        ("embeddings", "input"),
        ("text_completion", "input"),
        ("text_completion", "output"),
        ("chat", "input"),
        ("chat", "output"),
    }
    assert by_operation["embeddings", "input"].attributes == {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": "dep",
        "gen_ai.token.type": "input",
        "aigw.api.id": "azure",
        "aigw.product.id": "gold",
    }
    assert by_operation["chat", "output"].attributes["aigw.subscription.id"] == "sub-r"
    assert "aigw.product.id" not in by_operation["text_completion", "input"].attributes


async def test_request_durations_counts_and_rejections(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(traces=False)
    exporter.request_finished(CHAT)
    limited = replace(
        CHAT,
        status=429,
        reason="TokenLimitExceeded",
        usage=None,
        backend_id=None,
        duration=0.002,
        time_to_first_byte=None,
    )
    exporter.request_finished(limited)
    exporter.request_finished(replace(CHAT, shadow_rejections=("RateLimitExceeded",)))
    models = replace(
        CHAT, operation_id="models", method="GET", metered=False, usage=None, model=None
    )
    exporter.request_finished(models)
    await flush(exporter)

    route = {"aigw.api.id": "openai", "aigw.operation.id": "chat-completions"}
    ok = collector.point(
        "http.server.request.duration", {"http.response.status_code": 200, **route}
    )
    assert ok is not None and ok.unit == "s"
    assert ok.attributes == {
        "http.request.method": "POST",
        "http.response.status_code": 200,
        **route,
        "aigw.backend.id": "demo",
    }
    assert histogram(ok) == (2, 0.5, 0.25, 0.25)
    rejected = collector.point("http.server.request.duration", {"http.response.status_code": 429})
    assert rejected is not None and "aigw.backend.id" not in rejected.attributes

    rejections = collector.points("aigw.rejections")
    assert [(p.attributes, p.value) for p in rejections] == [
        (
            {
                "aigw.reason": "TokenLimitExceeded",
                "http.response.status_code": 429,
                **route,
                "aigw.subscription.id": "sub-a",
                "aigw.product.id": "gold",
            },
            1,
        )
    ]
    shadow = collector.point("aigw.shadow_rejections", {"aigw.reason": "RateLimitExceeded"})
    assert shadow is not None and shadow.value == 1

    requests = collector.points("aigw.requests")
    assert sum(p.value or 0 for p in requests) == 4
    get_models = collector.point("aigw.requests", {"aigw.operation.id": "models"})
    assert get_models is not None and get_models.value == 1

    first_byte = collector.point("aigw.time_to_first_byte", route)
    assert first_byte is not None and histogram(first_byte) == (2, 0.1, 0.05, 0.05)

    # The GenAI duration counts metered requests only; a failed one carries error.type.
    durations = collector.points("gen_ai.client.operation.duration")
    assert sorted(p.count or 0 for p in durations) == [1, 2]
    failed = collector.point(
        "gen_ai.client.operation.duration", {"error.type": "TokenLimitExceeded"}
    )
    assert failed is not None
    assert failed.attributes == {
        **GENAI,
        "aigw.api.id": "openai",
        "error.type": "TokenLimitExceeded",
    }


async def test_emitted_tokens_and_events(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(traces=False)
    dims = {"Subscription ID": "sub-a", "API ID": "openai"}
    usage = Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
    exporter.tokens_emitted("team-a", dims, usage)
    exporter.tokens_emitted("team-a", dict(reversed(dims.items())), usage)  # same series
    exporter.event("limit_decisions", {"policy": "llm-token-limit", "decision": "rejected"})
    exporter.event("ledger_written_records", {}, 25)
    await flush(exporter)

    emitted = collector.points("aigw.llm.emitted_tokens")
    assert {p.attributes["aigw.token.type"]: p.value for p in emitted} == {
        "prompt": 14,
        "completion": 6,
        "total": 20,
    }
    assert emitted[0].attributes == {
        "aigw.namespace": "team-a",
        "aigw.token.type": emitted[0].attributes["aigw.token.type"],
        "API ID": "openai",
        "Subscription ID": "sub-a",
    }
    decision = collector.point("aigw.limit.decisions")
    assert decision is not None and decision.value == 1.0 and decision.monotonic is True
    assert decision.attributes == {"decision": "rejected", "policy": "llm-token-limit"}
    written = collector.point("aigw.ledger.written.records")
    assert written is not None and written.value == 25.0 and written.attributes == {}


async def test_metrics_are_cumulative_across_exports(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(traces=False)
    exporter.request_finished(CHAT)
    await flush(exporter)
    first = collector.point("aigw.requests")
    exporter.request_finished(CHAT)
    await flush(exporter)
    second = collector.point("aigw.requests")
    assert first is not None and second is not None
    assert (first.value, second.value) == (1, 2)
    assert first.start_ns == second.start_ns < first.time_ns < second.time_ns


async def test_metrics_are_sent_every_export_interval(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(traces=False, **{"export-interval": 0.2})
    exporter.request_finished(CHAT)
    point = await asyncio.to_thread(collector.wait_point, "aigw.requests", timeout=5)
    assert point.value == 1


async def test_trace_has_a_request_span_and_a_child_per_step(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(metrics=False)
    assert exporter.trace_this()
    exporter.request_finished(replace(CHAT, steps=STEPS))
    await flush(exporter)

    spans = collector.spans()
    assert len(spans) == 5
    (root,) = [s for s in spans if not s.parent_span_id]
    assert root.name == "POST openai/chat-completions"
    assert root.kind == "SERVER"
    assert root.scope == "aigw"
    assert root.resource["service.name"] == "aigw"
    assert root.resource["aigw.gateway.id"] == "gw-test"
    assert (root.start_ns, root.end_ns) == (START_NS, START_NS + 250_000_000)
    assert root.status == "UNSET"
    assert root.attributes == {
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "aigw.request_id": "req-1",
        "aigw.client_request_id": "client-1",
        "aigw.api.id": "openai",
        "aigw.operation.id": "chat-completions",
        "aigw.subscription.id": "sub-a",
        "aigw.product.id": "gold",
        "aigw.backend.id": "demo",
        **GENAI,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
    }

    children = sorted((s for s in spans if s.parent_span_id), key=lambda s: s.start_ns)
    assert all(s.parent_span_id == root.span_id and s.trace_id == root.trace_id for s in children)
    assert [(s.name, s.kind) for s in children] == [
        ("policy validate-jwt", "INTERNAL"),
        ("policy llm-token-limit", "INTERNAL"),
        ("backend demo", "CLIENT"),
        ("policy set-header", "INTERNAL"),
    ]
    # Times as recorded, inside the request span and in order.
    assert [(s.start_ns - START_NS, s.end_ns - START_NS) for s in children] == [
        (1_000_000, 3_000_000),
        (3_000_000, 4_000_000),
        (5_000_000, 200_000_000),
        (210_000_000, 220_000_000),
    ]
    jwt, _, backend, header = children
    assert jwt.attributes == {
        "aigw.policy.name": "validate-jwt",
        "aigw.policy.section": "inbound",
        "aigw.policy.id": "jwt",
        "aigw.step.outcome": "ok",
    }
    assert backend.attributes == {"aigw.backend.id": "demo", "aigw.step.outcome": "ok", **GENAI}
    assert header.status == "ERROR" and header.attributes["aigw.step.outcome"] == "error"


async def test_failed_request_span_has_error_status_and_type(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(metrics=False)
    steps = (StepTiming("llm-token-limit", "inbound", STARTED, STARTED + 0.001, "short-circuit"),)
    limited = replace(CHAT, status=429, reason="TokenLimitExceeded", usage=None, steps=steps)
    exporter.request_finished(limited)
    exporter.request_finished(replace(CHAT, request_id="req-2", status=502, steps=STEPS[2:3]))
    await flush(exporter)

    roots = {s.attributes["aigw.request_id"]: s for s in collector.spans() if not s.parent_span_id}
    assert roots["req-1"].status == "ERROR"
    assert roots["req-1"].status_message == "TokenLimitExceeded"
    assert roots["req-1"].attributes["error.type"] == "TokenLimitExceeded"
    assert roots["req-1"].attributes["aigw.reason"] == "TokenLimitExceeded"
    assert "gen_ai.usage.input_tokens" not in roots["req-1"].attributes
    assert roots["req-2"].status == "ERROR" and roots["req-2"].attributes["error.type"] == "502"
    assert roots["req-1"].trace_id != roots["req-2"].trace_id
    (short,) = [s for s in collector.spans() if s.name == "policy llm-token-limit"]
    assert short.status == "UNSET" and short.attributes["aigw.step.outcome"] == "short-circuit"


async def test_records_without_steps_get_no_trace(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter()
    exporter.request_finished(CHAT)
    await flush(exporter)
    assert collector.point("aigw.requests") is not None
    assert collector.received("/v1/traces") == []


async def test_sample_ratio_decides_which_requests_are_traced(make_exporter: MakeExporter) -> None:
    never = await make_exporter(**{"trace-sample-ratio": 0})
    assert not any(never.trace_this() for _ in range(1000))
    always = await make_exporter(**{"trace-sample-ratio": 1})
    assert all(always.trace_this() for _ in range(1000))
    half = await make_exporter(**{"trace-sample-ratio": 0.5})
    assert 350 < sum(half.trace_this() for _ in range(1000)) < 650


async def test_traces_off_sends_no_spans(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(traces=False)
    assert not exporter.trace_this()
    exporter.request_finished(replace(CHAT, steps=STEPS))  # steps from elsewhere: ignored
    await flush(exporter)
    assert collector.point("aigw.requests") is not None
    assert collector.received("/v1/traces") == []


async def test_metrics_off_sends_no_metrics(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(metrics=False)
    exporter.request_finished(replace(CHAT, steps=STEPS))
    exporter.tokens_emitted("ns", {}, Usage(1, 1, 2))
    exporter.event("cache_lookups", {"result": "hit"})
    await flush(exporter)
    assert len(collector.spans()) == 5
    assert collector.received("/v1/metrics") == []


async def test_configured_headers_are_sent_with_both_signals(
    collector: OtlpCollector, make_exporter: MakeExporter
) -> None:
    exporter = await make_exporter(headers={"x-api-key": "secret-value"})
    exporter.request_finished(replace(CHAT, steps=STEPS))
    await flush(exporter)
    exports = collector.received("/v1/metrics") + collector.received("/v1/traces")
    assert {e.path for e in exports} == {"/v1/metrics", "/v1/traces"}
    assert all(e.headers["x-api-key"] == "secret-value" for e in exports)
    assert all(e.headers["content-type"] == "application/x-protobuf" for e in exports)


async def test_endpoint_with_a_path_prefix(collector: OtlpCollector) -> None:
    config = OtlpConfig.model_validate({"endpoint": collector.url + "/", "export-interval": 60})
    exporter = OtlpExporter(config, "gw")
    await exporter.start()
    exporter.request_finished(CHAT)
    await exporter.close()
    assert collector.point("aigw.requests") is not None


async def test_close_sends_what_is_pending(collector: OtlpCollector) -> None:
    config = OtlpConfig.model_validate({"endpoint": collector.url, "export-interval": 3600})
    exporter = OtlpExporter(config, "gw")
    await exporter.start()
    exporter.request_finished(replace(CHAT, steps=STEPS))
    await exporter.close()
    point = collector.point("gen_ai.client.token.usage", {"gen_ai.token.type": "input"})
    assert point is not None and point.sum == 10
    assert len(collector.spans()) == 5
    # Closed: later records are not traced, and closing again is a no-op.
    assert not exporter.trace_this()
    exporter.request_finished(replace(CHAT, steps=STEPS))
    await exporter.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung collector)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("endpoint", ["refused", "silent"])
async def test_dead_endpoint_never_raises_and_close_is_bounded(
    endpoint: str, silent_port: int
) -> None:
    port = _closed_port() if endpoint == "refused" else silent_port
    config = OtlpConfig.model_validate(
        {"endpoint": f"http://127.0.0.1:{port}", "export-interval": 0.1, "timeout": 1}
    )
    exporter = OtlpExporter(config, "gw")
    await exporter.start()
    began = time.perf_counter()
    for n in range(200):
        exporter.request_finished(replace(CHAT, request_id=f"r{n}", steps=STEPS))
        exporter.event("cache_lookups", {"result": "miss"})
    assert time.perf_counter() - began < 1.0  # nothing waited for the network
    await asyncio.sleep(0.3)  # an export is under way (and failing)
    began = time.perf_counter()
    await exporter.close()
    assert time.perf_counter() - began < 1.5


async def test_close_stops_waiting_when_the_caller_cancels(silent_port: int) -> None:
    config = OtlpConfig.model_validate(
        {"endpoint": f"http://127.0.0.1:{silent_port}", "export-interval": 60, "timeout": 30}
    )
    exporter = OtlpExporter(config, "gw")
    await exporter.start()
    exporter.request_finished(CHAT)
    began = time.perf_counter()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await exporter.close()
    assert time.perf_counter() - began < 1.0
