from __future__ import annotations

import asyncio
import json

import pytest

from aigw.policies.base import run_statements
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].return-response"


def test_defaults_to_an_empty_200() -> None:
    response = run(build_one("return-response", {}), make_ctx())
    assert response is not None
    assert (response.status_code, response.body, response.headers.items()) == (200, b"", [])


def test_status_headers_and_body() -> None:
    policy = build_one(
        "return-response",
        {
            "set-status": {"code": 429, "reason": "Too many requests"},
            "set-header": [
                {"name": "Content-Type", "value": "application/json"},
                {"name": "Retry-After", "value": ["10"]},
                {
                    "name": "x-who",
                    "value": '@(context.Request.Headers.GetValueOrDefault("x-user", "anon"))',
                },
                {"name": "x-who", "exists-action": "append", "value": "extra"},
            ],
            "set-body": '{"error": "slow down"}',
        },
    )
    ctx = make_ctx(headers=[("x-user", "alice")])
    response = run(policy, ctx)
    assert response is not None
    assert response.status_code == 429
    assert response.headers.items() == [
        ("content-type", "application/json"),
        ("retry-after", "10"),
        ("x-who", "alice, extra"),
    ]
    assert json.loads(response.body) == {"error": "slow down"}
    # The request is left alone: the headers were built for the response only.
    assert ctx.request.headers.items() == [("x-user", "alice")]


def test_body_expression_and_yaml_mapping_body() -> None:
    ctx = make_ctx()
    ctx.variables["n"] = 7
    expr = build_one("return-response", {"set-body": '@("n=" + context.Variables["n"])'})
    response = run(expr, ctx)
    assert response is not None and response.body == b"n=7"

    mapping = build_one("return-response", {"set-body": {"error": {"code": "x", "n": 1}}})
    response = run(mapping, ctx)
    assert response is not None and json.loads(response.body) == {"error": {"code": "x", "n": 1}}


def test_short_circuits_the_statement_list() -> None:
    policies, issues = build(
        [
            {"return-response": {"set-status": {"code": 403}}},
            {"set-variable": {"name": "after", "value": "1"}},
        ]
    )
    assert issues == {}
    ctx = make_ctx()
    response = asyncio.run(run_statements(policies, ctx))
    assert response is not None and response.status_code == 403
    assert "after" not in ctx.variables


@pytest.mark.parametrize("section", ["backend", "outbound", "on-error"])
def test_allowed_in_every_section(section: str) -> None:
    assert build([{"return-response": {}}], section)[1] == {}


def test_header_errors_are_reported_inside_the_policy() -> None:
    issues = issues_of(
        "return-response",
        {"set-header": [{"name": "x-ok", "value": "1"}, {"name": "Content-Length", "value": "5"}]},
    )
    assert list(issues) == [f"{P}.set-header[1].name"]


def test_config_errors() -> None:
    assert list(issues_of("return-response", {"set-status": {"code": 99}})) == [
        f"{P}.set-status.code"
    ]
    assert list(issues_of("return-response", {"set-status": {"cod": 200}})) == [
        f"{P}.set-status.cod"
    ]
    bad_action = {"set-header": [{"name": "x", "exists-action": "nope", "value": "1"}]}
    assert list(issues_of("return-response", bad_action)) == [f"{P}.set-header[0].exists-action"]
    assert list(issues_of("return-response", {"set-status": {"code": 204}, "set-body": "x"})) == [
        f"{P}.set-body"
    ]


def test_describe() -> None:
    policy = build_one(
        "return-response",
        {
            "set-status": {"code": 401},
            "set-header": [{"name": "www-authenticate", "value": "Bearer"}],
            "set-body": "no",
        },
    )
    assert (
        policy.describe()
        == "return-response 401, header www-authenticate override = ['Bearer'], body 'no'"
    )
