"""OTLP export through the real gateway: the official `openai` SDK calls the gateway in front of
the demo backend, and a local collector stub receives the GenAI token histogram (equal to the
usage the backend reported) and the request's trace with its backend span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.helpers import MODEL, base_config
from tests.otlp_collector import OtlpCollector, Point
from tests.support import DemoBackend

MESSAGES: Any = [{"role": "user", "content": "Count my tokens"}]


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as stub:
        yield stub


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend, collector: OtlpCollector) -> dict[str, Any]:
    config = base_config(demo_backend.url)
    config["apis"]["openai"]["policies"] = {
        "inbound": [{"set-header": {"name": "x-from-gateway", "value": "1"}}],
        "outbound": [{"set-header": {"name": "x-gateway", "value": "aigw"}}],
    }
    config["otlp"] = {
        "endpoint": collector.url,
        "headers": {"x-collector-key": "k-123"},
        "export-interval": 0.2,
        "timeout": 2,
        "service-name": "aigw-e2e",
    }
    return config


def _tokens(collector: OtlpCollector, api: str, kind: str, count: int) -> Point:
    """The token histogram of `api` once it has `count` requests."""
    return collector.wait_point(
        "gen_ai.client.token.usage",
        {"aigw.api.id": api, "gen_ai.token.type": kind},
        ready=lambda point: point.count == count,
    )


def test_token_histogram_equals_the_backends_usage(
    openai_client: openai.OpenAI, collector: OtlpCollector
) -> None:
    first = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    second = openai_client.chat.completions.create(
        model=MODEL, messages=[*MESSAGES, {"role": "user", "content": "and these too, please"}]
    )
    assert first.usage is not None and second.usage is not None
    prompt = _tokens(collector, "openai", "input", 2)
    assert prompt.sum == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert prompt.min == min(first.usage.prompt_tokens, second.usage.prompt_tokens)
    completion = _tokens(collector, "openai", "output", 2)
    assert completion.sum == first.usage.completion_tokens + second.usage.completion_tokens
    assert prompt.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.token.type": "input",
        "aigw.api.id": "openai",
    }
    assert prompt.resource["service.name"] == "aigw-e2e"
    duration = collector.wait_point("gen_ai.client.operation.duration", {"aigw.api.id": "openai"})
    assert duration.count == 2 and duration.unit == "s"
    exports = collector.received("/v1/metrics")
    assert all(export.headers["x-collector-key"] == "k-123" for export in exports)


def test_azure_streamed_usage_is_exported_as_azure_openai(
    azure_client: openai.AzureOpenAI, collector: OtlpCollector
) -> None:
    stream = azure_client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-demo-chunks": "4"},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    prompt = _tokens(collector, "azure", "input", 1)
    completion = _tokens(collector, "azure", "output", 1)
    assert (prompt.sum, completion.sum) == (usage.prompt_tokens, usage.completion_tokens)
    assert prompt.attributes["gen_ai.provider.name"] == "azure.ai.openai"
    first_byte = collector.wait_point("aigw.time_to_first_byte", {"aigw.api.id": "azure"})
    assert first_byte.count == 1


def test_request_trace_has_policy_and_backend_child_spans(
    openai_client: openai.OpenAI, collector: OtlpCollector
) -> None:
    openai_client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"x-request-id": "otlp-e2e-trace-1"}
    )

    def request_span() -> Any:
        return next(
            (
                span
                for span in collector.spans()
                if span.attributes.get("aigw.client_request_id") == "otlp-e2e-trace-1"
            ),
            None,
        )

    root = collector.wait(request_span)
    assert root is not None, "no span for the request"
    assert root.name == "POST openai/chat-completions"
    assert root.kind == "SERVER" and root.parent_span_id == ""
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["aigw.backend.id"] == "demo"
    assert root.attributes["gen_ai.usage.input_tokens"] > 0
    assert root.resource["service.name"] == "aigw-e2e"

    children = sorted(
        (s for s in collector.spans() if s.parent_span_id == root.span_id),
        key=lambda s: s.start_ns,
    )
    assert [(s.name, s.kind) for s in children] == [
        ("policy set-header", "INTERNAL"),
        ("backend demo", "CLIENT"),
        ("policy set-header", "INTERNAL"),
    ]
    inbound, backend, outbound = children
    assert inbound.attributes["aigw.policy.section"] == "inbound"
    assert outbound.attributes["aigw.policy.section"] == "outbound"
    assert backend.trace_id == root.trace_id
    assert backend.attributes["gen_ai.request.model"] == MODEL
    # In order, and inside the request span.
    assert root.start_ns <= inbound.start_ns <= inbound.end_ns <= backend.start_ns
    assert backend.start_ns < backend.end_ns <= outbound.start_ns <= outbound.end_ns
    assert outbound.end_ns <= root.end_ns
    exports = collector.received("/v1/traces")
    assert all(export.headers["x-collector-key"] == "k-123" for export in exports)
