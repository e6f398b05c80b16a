"""llm-emit-token-metric / azure-openai-emit-token-metric: dimensions, defaults, emission."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from aigw.context import OperationInfo, ProductInfo, RequestContext, SubscriptionInfo, UserInfo
from aigw.policies.emit_token_metric import EmitTokenMetric
from aigw.usage.model import Usage
from tests.unit.policies.conftest import build_one, issues_of, make_ctx

TEAM_HEADER = '@(context.Request.Headers.GetValueOrDefault("x-team", "none"))'


class Emitted:
    """Stands in for the runtime's telemetry hub: keeps what the policy emits."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], Usage]] = []

    def tokens_emitted(self, namespace: str, dimensions: Mapping[str, str], usage: Usage) -> None:
        self.calls.append((namespace, dict(dimensions), usage))


class Services:
    def __init__(self) -> None:
        self.telemetry = Emitted()
        self.gateway_id = "gw-1"
        self.location = "westeurope"


def policy(name: str = "llm-emit-token-metric", **attributes: Any) -> EmitTokenMetric:
    built = build_one(name, attributes)
    assert isinstance(built, EmitTokenMetric)
    return built


def chat_ctx() -> RequestContext:
    ctx = make_ctx(headers=[("x-team", "blue")], client_ip="198.51.100.4")
    ctx.operation = OperationInfo("chat-completions", "Chat", "POST", "/chat/completions")
    ctx.request.body = b'{"model": "gpt-4o", "messages": []}'
    ctx.model, ctx.deployment_id, ctx.backend_id = "gpt-4o", "prod-4o", "ptu"
    ctx.subscription = SubscriptionInfo("sub-1", "Sub one")
    ctx.product = ProductInfo("starter", "Starter")
    ctx.user = UserInfo("alice")
    ctx.services = Services()
    return ctx


def emit(metric: EmitTokenMetric, ctx: RequestContext, usage: Usage | None) -> Emitted:
    asyncio.run(metric.apply(ctx))
    assert ctx.usage_meter is not None, "the policy asks the pipeline to measure usage"
    ctx.usage_meter.usage = usage
    asyncio.run(metric.on_complete(ctx))
    emitted: Emitted = ctx.services.telemetry
    return emitted


def test_default_dimensions_fill_themselves() -> None:
    names = [
        "API ID", "Operation ID", "Product ID", "User ID", "Subscription ID", "Location",
        "Gateway ID", "Backend ID", "Model", "Deployment", "Client IP",
    ]  # fmt: skip
    metric = policy(namespace="llm-usage", dimensions=[{"name": name} for name in names])
    emitted = emit(metric, chat_ctx(), Usage(30, 12, 42, cached_tokens=5, reasoning_tokens=2))
    namespace, dimensions, usage = emitted.calls[0]
    assert namespace == "llm-usage"
    assert dimensions == {
        "API ID": "chat",
        "Operation ID": "chat-completions",
        "Product ID": "starter",
        "User ID": "alice",
        "Subscription ID": "sub-1",
        "Location": "westeurope",
        "Gateway ID": "gw-1",
        "Backend ID": "ptu",
        "Model": "gpt-4o",
        "Deployment": "prod-4o",
        "Client IP": "198.51.100.4",
    }
    assert usage == Usage(30, 12, 42, cached_tokens=5, reasoning_tokens=2)


def test_values_are_expressions_and_missing_context_is_empty() -> None:
    metric = policy(
        "azure-openai-emit-token-metric",
        dimensions=[
            {"name": "Team", "value": TEAM_HEADER},
            {"name": "Tier", "value": "gold"},
            {"name": "User ID"},
        ],
    )
    ctx = chat_ctx()
    ctx.user = None
    namespace, dimensions, _ = emit(metric, ctx, Usage(1, 1, 2)).calls[0]
    assert namespace == "API Management", "APIM's default namespace"
    assert dimensions == {"Team": "blue", "Tier": "gold", "User ID": ""}


def test_nothing_is_emitted_when_no_model_answered() -> None:
    metric = policy(dimensions=[{"name": "API ID"}])
    assert emit(metric, chat_ctx(), None).calls == []


def test_requests_without_usage_are_left_alone() -> None:
    metric = policy(dimensions=[{"name": "API ID"}])
    ctx = chat_ctx()
    ctx.operation = OperationInfo("list-models", "Models", "GET", "/models")
    asyncio.run(metric.apply(ctx))
    asyncio.run(metric.on_complete(ctx))
    assert ctx.usage_meter is None
    assert ctx.services.telemetry.calls == []


@pytest.mark.parametrize(
    ("dimensions", "path", "mentions"),
    [
        ([{"name": "Team"}], ".dimensions[0].value", "needs a 'value'"),
        ([{"name": "@(context.Api.Id)", "value": "x"}], ".dimensions[0].name", "constant"),
        ([{"name": "API ID"}, {"name": "api id"}], ".dimensions[1].name", "twice"),
        ([{"name": "token type", "value": "x"}], ".dimensions[0].name", "cannot name"),
        ([{"name": "1st", "value": "x"}], ".dimensions[0].name", "cannot name"),
        ([{"name": f"d{i}", "value": "x"} for i in range(17)], ".dimensions", "at most 16"),
        ([], ".dimensions", "at least 1"),
    ],
)
def test_bad_dimensions_are_config_errors(
    dimensions: list[dict[str, str]], path: str, mentions: str
) -> None:
    issues = issues_of("llm-emit-token-metric", {"dimensions": dimensions})
    matching = {p: m for p, m in issues.items() if p.endswith(path)}
    assert matching, issues
    assert any(mentions in message for message in matching.values()), matching


def test_namespace_is_a_constant() -> None:
    issues = issues_of(
        "llm-emit-token-metric",
        {"namespace": "@(context.Api.Id)", "dimensions": [{"name": "API ID"}]},
    )
    assert any(path.endswith(".namespace") for path in issues), issues


def test_only_inbound() -> None:
    issues = issues_of("llm-emit-token-metric", {"dimensions": [{"name": "API ID"}]}, "outbound")
    assert issues
