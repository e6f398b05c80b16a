"""Scope composition with `base`, short-circuit, on-error and `last_error`, on a real runtime."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from aigw.config.errors import ConfigError
from aigw.config.loader import load_config_text
from aigw.context import RequestContext, RequestView, Response
from aigw.errors import BackendConnectionFailure
from aigw.headers import Headers
from aigw.pipeline.executor import execute
from aigw.runtime import OperationTarget, Runtime, build_runtime


def mark(label: str) -> dict[str, Any]:
    return {"set-header": {"name": "x-trace", "exists-action": "append", "value": label}}


def runtime_for(
    global_: list[Any] | None = None,
    product: list[Any] | None = None,
    api: list[Any] | None = None,
    operation: list[Any] | None = None,
    section: str = "inbound",
) -> Runtime:
    config: dict[str, Any] = {
        "backends": {"b": {"url": "http://127.0.0.1:9"}},
        "apis": {"chat": {"type": "openai", "backend": "b"}},
    }
    if global_ is not None:
        config["policies"] = {section: global_}
    if product is not None:
        config["products"] = {"p": {"apis": ["chat"], "policies": {section: product}}}
    if api is not None:
        config["apis"]["chat"]["policies"] = {section: api}
    if operation is not None:
        config["apis"]["chat"]["operations"] = {
            "chat-completions": {"policies": {section: operation}}
        }
    return build_runtime(load_config_text(yaml.safe_dump(config)))


def context_for(runtime: Runtime) -> tuple[RequestContext, OperationTarget]:
    match = runtime.router.match("POST", "/v1/chat/completions")
    assert match is not None
    request = RequestView(
        method="POST",
        scheme="http",
        host="gw",
        path="/v1/chat/completions",
        query_string="",
        headers=Headers(),
        client_ip="127.0.0.1",
        body=b"{}",
    )
    ctx = RequestContext("rid", request, match.route.api, match.route.operation)
    return ctx, match.route.target


async def echo_terminal(ctx: RequestContext) -> Response:
    return Response(200, Headers([("content-type", "application/json")]), b"{}")


async def trace(runtime: Runtime, product: str | None = None) -> list[str]:
    ctx, target = context_for(runtime)
    await execute(target.chain_for(product), ctx, echo_terminal)
    joined = ctx.request.headers.get_joined("x-trace")
    return joined.split(", ") if joined else []


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        (["base", mark("api")], ["global", "api"]),
        ([mark("api"), "base"], ["api", "global"]),
        ([mark("api1"), "base", mark("api2")], ["api1", "global", "api2"]),
        ([mark("api")], ["api"]),  # no base: the parent's statements are dropped
    ],
)
async def test_base_position_decides_order(api: list[Any], expected: list[str]) -> None:
    runtime = runtime_for(global_=[mark("global")], api=api)
    assert await trace(runtime) == expected


async def test_undeclared_section_inherits_parent() -> None:
    runtime = runtime_for(global_=[mark("global")], operation=None, api=None)
    assert await trace(runtime) == ["global"]


async def test_four_scopes_compose_recursively() -> None:
    runtime = runtime_for(
        global_=[mark("g")],
        product=["base", mark("p")],
        api=[mark("a1"), "base"],
        operation=["base", mark("o")],
    )
    assert await trace(runtime, product="p") == ["a1", "g", "p", "o"]
    # Without a product context the product scope is skipped.
    assert await trace(runtime, product=None) == ["a1", "g", "o"]


async def test_short_circuit_skips_backend_and_later_statements() -> None:
    runtime = runtime_for(
        api=[
            {
                "return-response": {
                    "set-status": {"code": 418, "reason": "teapot"},
                    "set-body": "no",
                }
            },
            mark("after"),
        ]
    )
    ctx, target = context_for(runtime)
    called = False

    async def terminal(ctx: RequestContext) -> Response:
        nonlocal called
        called = True
        return await echo_terminal(ctx)

    response = await execute(target.chain_for(None), ctx, terminal)
    assert response.status_code == 418
    assert response.body == b"no"
    assert not called
    assert ctx.request.headers.get_all("x-trace") == []


CONNECTION_FAILED = '@(context.LastError.Reason == "BackendConnectionFailure")'


async def test_on_error_sees_last_error_and_shapes_response() -> None:
    runtime = runtime_for(
        api=[
            {
                "choose": {
                    "when": [
                        {
                            "condition": CONNECTION_FAILED,
                            "policies": [
                                {
                                    "set-header": {
                                        "name": "x-error-reason",
                                        "value": "@(context.LastError.Reason)",
                                    }
                                },
                                {
                                    "set-header": {
                                        "name": "x-error-section",
                                        "value": "@(context.LastError.Section)",
                                    }
                                },
                            ],
                        }
                    ]
                }
            }
        ],
        section="on-error",
    )
    ctx, target = context_for(runtime)

    async def failing(ctx: RequestContext) -> Response:
        raise BackendConnectionFailure()

    response = await execute(target.chain_for(None), ctx, failing)
    assert response.status_code == 502
    assert response.headers.get("x-error-reason") == "BackendConnectionFailure"
    assert response.headers.get("x-error-section") == "backend"
    assert b'"statusCode": 502' in response.body
    assert ctx.last_error is not None and ctx.last_error.source == "forward-request"


async def test_on_error_return_response_replaces_error() -> None:
    runtime = runtime_for(
        api=[{"return-response": {"set-status": {"code": 503}, "set-body": "try later"}}],
        section="on-error",
    )
    ctx, target = context_for(runtime)

    async def failing(ctx: RequestContext) -> Response:
        raise BackendConnectionFailure()

    response = await execute(target.chain_for(None), ctx, failing)
    assert (response.status_code, response.body) == (503, b"try later")


async def test_policy_id_reaches_last_error() -> None:
    runtime = runtime_for(
        api=[
            {
                "check-header": {
                    "id": "need-team",
                    "name": "x-team",
                    "failed-check-httpcode": 400,
                    "failed-check-error-message": "x-team is required",
                }
            }
        ]
    )
    ctx, target = context_for(runtime)
    response = await execute(target.chain_for(None), ctx, echo_terminal)
    assert response.status_code == 400
    assert b"x-team is required" in response.body
    assert ctx.last_error is not None
    assert (ctx.last_error.policy_id, ctx.last_error.reason) == ("need-team", "HeaderNotFound")
    assert ctx.last_error.section == "inbound"


def test_base_inside_choose_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        runtime_for(api=[{"choose": {"when": [{"condition": "true", "policies": ["base"]}]}}])
    assert any(
        issue.path == "apis.chat.policies.inbound[0].choose.when[0].policies[0]"
        for issue in err.value.issues
    ), err.value.issues


def test_second_base_in_a_section_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        runtime_for(global_=[mark("g")], api=["base", mark("api"), "base"])
    found = {issue.path: issue.message for issue in err.value.issues}
    assert found == {"apis.chat.policies.inbound[2]": "'base' may appear only once in a section"}


async def test_one_base_per_section_is_counted_per_scope_and_section() -> None:
    config: dict[str, Any] = {
        "backends": {"b": {"url": "http://127.0.0.1:9"}},
        "policies": {"inbound": [mark("g")], "outbound": ["base"]},
        "apis": {
            "chat": {
                "type": "openai",
                "backend": "b",
                "policies": {"inbound": ["base", mark("a")], "outbound": ["base"]},
            }
        },
    }
    runtime = build_runtime(load_config_text(yaml.safe_dump(config)))
    assert await trace(runtime) == ["g", "a"]
