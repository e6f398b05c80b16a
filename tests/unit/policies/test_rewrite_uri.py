from __future__ import annotations

from typing import Any

import pytest

from aigw.context import RequestContext
from aigw.errors import ExpressionEvaluationFailure
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].rewrite-uri"


def rewrite(attributes: dict[str, Any], **ctx_args: Any) -> RequestContext:
    ctx = make_ctx(**ctx_args)
    assert run(build_one("rewrite-uri", attributes), ctx) is None
    return ctx


def test_path_parameters_come_from_the_matched_parameters() -> None:
    ctx = rewrite(
        {"template": "/openai/deployments/{deployment-id}/chat/completions"},
        matched={"deployment-id": "gpt-4o"},
        path="/v1/gpt-4o/chat",
    )
    assert ctx.request.backend_path == "/openai/deployments/gpt-4o/chat/completions"
    assert ctx.request.path == "/v1/gpt-4o/chat"  # the public path is left alone


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a/b c", "a%2Fb%20c"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("x?y#z%", "x%3Fy%23z%25"),
        ("a:b@c", "a:b@c"),
    ],
)
def test_parameter_values_cannot_change_the_path_structure(value: str, encoded: str) -> None:
    ctx = rewrite({"template": "/items/{id}/x"}, matched={"id": value})
    assert ctx.request.backend_path == f"/items/{encoded}/x"


def test_wildcard_parameter_keeps_slashes_but_not_dot_segments() -> None:
    ctx = rewrite({"template": "/base/{*rest}"}, matched={"rest": "v1/../models/a b"})
    assert ctx.request.backend_path == "/base/v1/%2E%2E/models/a%20b"


def test_a_query_parameter_named_like_a_path_parameter_is_still_copied() -> None:
    ctx = rewrite({"template": "/d/{id}"}, matched={"id": "7"}, query=[("id", "q")])
    assert (ctx.request.backend_path, ctx.request.query) == ("/d/7", [("id", "q")])


def test_missing_path_parameter_is_empty() -> None:
    assert rewrite({"template": "/a/{missing}/b"}).request.backend_path == "/a//b"


def test_query_template_with_parameters_literals_and_unmatched_copy() -> None:
    ctx = rewrite(
        {"template": "/chat?api-version={api-version}&deployment={dep}&flag&q=a%20b"},
        matched={"dep": "gpt"},
        query=[("api-version", "2024-10-21"), ("other", "1"), ("dep", "spoofed")],
    )
    assert ctx.request.backend_path == "/chat"
    assert ctx.request.query == [
        ("api-version", "2024-10-21"),
        ("deployment", "gpt"),
        ("flag", ""),
        ("q", "a b"),
        ("other", "1"),
    ]


def test_matched_parameter_wins_over_the_original_query() -> None:
    ctx = rewrite({"template": "/x?v={v}"}, matched={"v": "matched"}, query=[("v", "query")])
    assert ctx.request.query == [("v", "matched")]


def test_query_parameter_without_a_value_is_left_out() -> None:
    ctx = rewrite({"template": "/x?v={v}&w=1"}, query=[("z", "1")])
    assert ctx.request.query == [("w", "1"), ("z", "1")]


def test_apim_example_copies_only_params_the_operation_did_not_match() -> None:
    # Incoming /get?a=b&c=d on an operation whose template is /get?a={b}.
    args: dict[str, Any] = {
        "query": [("a", "b"), ("c", "d")],
        "url_template": "/get?a={b}",
        "matched": {"b": "b"},
    }
    assert rewrite({"template": "/put"}, **args).request.query == [("c", "d")]
    dropped = rewrite({"template": "/put", "copy-unmatched-params": False}, **args)
    assert (dropped.request.backend_path, dropped.request.query) == ("/put", [])


def test_expression_template_is_parsed_per_request() -> None:
    ctx = rewrite({"template": '@("/v2/" + context.Api.Id + "/{id}")'}, matched={"id": "7"})
    assert ctx.request.backend_path == "/v2/chat/7"


def test_expression_template_that_is_not_a_path_fails() -> None:
    policy = build_one("rewrite-uri", {"template": "@(context.Api.Id)"})
    with pytest.raises(ExpressionEvaluationFailure) as info:
        run(policy, make_ctx())
    assert info.value.status_code == 500


@pytest.mark.parametrize("template", ["chat", "/a/{b", "/a/b}", "/a#frag", "/a b", "/x/{}"])
def test_bad_templates_are_config_errors(template: str) -> None:
    assert list(issues_of("rewrite-uri", {"template": template})) == [f"{P}.template"]


def test_other_config_errors() -> None:
    assert list(issues_of("rewrite-uri", {})) == [f"{P}.template"]
    assert list(issues_of("rewrite-uri", {"template": "/a", "copy-unmatched-params": "maybe"})) == [
        f"{P}.copy-unmatched-params"
    ]
    assert list(build([{"rewrite-uri": {"template": "/a"}}], "backend")[1]) == [
        "policies.backend[0]"
    ]


def test_describe() -> None:
    policy = build_one("rewrite-uri", {"template": "/d/{id}", "copy-unmatched-params": False})
    assert policy.describe() == "rewrite-uri /d/{id} (unmatched params dropped)"
