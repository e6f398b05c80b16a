from __future__ import annotations

from typing import Any

import pytest

from aigw.context import Response
from aigw.errors import ExpressionEvaluationFailure
from aigw.headers import Headers
from tests.unit.policies.conftest import build_one, issues_of, make_ctx, run

P = "policies.inbound[0].set-header"


def header(name: str, action: str | None = None, value: Any = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"name": name}
    if action is not None:
        attributes["exists-action"] = action
    if value is not None:
        attributes["value"] = value
    return attributes


def request_headers_after(attributes: dict[str, Any], headers: list[tuple[str, str]]) -> Headers:
    ctx = make_ctx(headers=headers)
    assert run(build_one("set-header", attributes), ctx) is None
    return ctx.request.headers


def test_override_is_the_default_and_replaces_every_line() -> None:
    headers = request_headers_after(header("X-Foo", value="new"), [("x-foo", "a"), ("x-foo", "b")])
    assert headers.get_all("x-foo") == ["new"]


def test_override_adds_a_missing_header() -> None:
    headers = request_headers_after(header("x-foo", "override", "v"), [("other", "1")])
    assert headers.items() == [("other", "1"), ("x-foo", "v")]


def test_skip_keeps_an_existing_header_and_adds_a_missing_one() -> None:
    kept = request_headers_after(header("x-foo", "skip", "new"), [("x-foo", "old")])
    assert kept.get_all("x-foo") == ["old"]
    added = request_headers_after(header("x-foo", "skip", "new"), [])
    assert added.get_all("x-foo") == ["new"]


def test_append_joins_with_existing_values() -> None:
    headers = request_headers_after(header("accept", "append", ["b", "c"]), [("accept", "a")])
    assert headers.get_all("accept") == ["a, b, c"]


def test_append_to_a_separate_line_header_adds_lines() -> None:
    headers = request_headers_after(header("cookie", "append", "b=2"), [("cookie", "a=1")])
    assert headers.get_all("cookie") == ["a=1", "b=2"]


def test_delete_removes_every_line() -> None:
    headers = request_headers_after(
        header("Authorization", "delete"), [("authorization", "Bearer x"), ("authorization", "y")]
    )
    assert "authorization" not in headers


def test_several_values_make_one_comma_joined_line() -> None:
    headers = request_headers_after(header("x-list", value=["a", "b", 3]), [])
    assert headers.get_all("x-list") == ["a, b, 3"]


def test_several_values_of_set_cookie_stay_separate_lines() -> None:
    ctx = make_ctx(response=Response(200, Headers([("set-cookie", "old=1")])))
    policy = build_one(
        "set-header",
        header("Set-Cookie", value=["a=1; Expires=Wed, 21 Oct 2026", "b=2"]),
        "outbound",
    )
    run(policy, ctx)
    assert ctx.response is not None
    assert ctx.response.headers.get_all("set-cookie") == ["a=1; Expires=Wed, 21 Oct 2026", "b=2"]


@pytest.mark.parametrize(
    ("action", "expected"),
    [("override", ["v"]), ("skip", ["old"]), ("append", ["old, v"]), ("delete", [])],
)
def test_outbound_edits_the_response_not_the_request(action: str, expected: list[str]) -> None:
    response = Response(200, Headers([("x-foo", "old")]))
    ctx = make_ctx(headers=[("x-foo", "request")], response=response)
    value = None if action == "delete" else "v"
    run(build_one("set-header", header("x-foo", action, value), "outbound"), ctx)
    assert response.headers.get_all("x-foo") == expected
    assert ctx.request.headers.get_all("x-foo") == ["request"]


def test_on_error_without_a_response_does_nothing() -> None:
    ctx = make_ctx(headers=[("x-foo", "request")])
    assert run(build_one("set-header", header("x-foo", value="v"), "on-error"), ctx) is None
    assert ctx.response is None
    assert ctx.request.headers.get_all("x-foo") == ["request"]


def test_on_error_with_a_response_edits_it() -> None:
    ctx = make_ctx(response=Response(500, Headers()))
    run(build_one("set-header", header("x-error", value="1"), "on-error"), ctx)
    assert ctx.response is not None
    assert ctx.response.headers.get("x-error") == "1"


def test_expression_values_are_evaluated_and_converted() -> None:
    attributes = header(
        "x-out",
        value=[
            '@(context.Request.Headers.GetValueOrDefault("x-user", "anon"))',
            "@(1 + 2)",
            "@(1 == 1)",
        ],
    )
    headers = request_headers_after(attributes, [("x-user", "alice")])
    assert headers.get_all("x-out") == ["alice, 3, True"]


def test_null_values_are_skipped() -> None:
    attributes = header("x-out", value=['@(context.Variables.GetValueOrDefault("nope"))', "b"])
    assert request_headers_after(attributes, []).get_all("x-out") == ["b"]


def test_override_with_only_null_values_removes_the_caller_header() -> None:
    attributes = header("x-user", value='@(context.Variables.GetValueOrDefault("nope"))')
    assert "x-user" not in request_headers_after(attributes, [("x-user", "spoofed")])


def test_append_with_only_null_values_leaves_the_header() -> None:
    attributes = header("x-user", "append", '@(context.Variables.GetValueOrDefault("nope"))')
    assert request_headers_after(attributes, [("x-user", "a")]).get_all("x-user") == ["a"]


def test_name_may_be_an_expression() -> None:
    ctx = make_ctx()
    ctx.variables["h"] = "X-Dynamic"
    run(build_one("set-header", header('@((string)context.Variables["h"])', value="1")), ctx)
    assert ctx.request.headers.get("x-dynamic") == "1"


def test_expression_name_producing_a_framing_header_fails_at_run_time() -> None:
    ctx = make_ctx()
    ctx.variables["h"] = "Content-Length"
    policy = build_one("set-header", header('@((string)context.Variables["h"])', value="1"))
    with pytest.raises(ExpressionEvaluationFailure) as info:
        run(policy, ctx)
    assert info.value.status_code == 500
    assert info.value.reason == "ExpressionValueEvaluationFailure"
    assert "content-length" not in ctx.request.headers


def test_expression_value_with_a_line_break_fails_and_is_not_echoed() -> None:
    ctx = make_ctx()
    ctx.variables["v"] = "a\r\nx-injected: 1"
    policy = build_one("set-header", header("x-foo", value='@((string)context.Variables["v"])'))
    with pytest.raises(ExpressionEvaluationFailure) as info:
        run(policy, ctx)
    assert "injected" not in info.value.message
    assert "x-foo" not in ctx.request.headers


@pytest.mark.parametrize(
    "name", ["Content-Length", "transfer-encoding", "Connection", "keep-alive"]
)
@pytest.mark.parametrize("action", ["override", "delete"])
def test_framing_headers_are_refused(name: str, action: str) -> None:
    value = None if action == "delete" else "1"
    issues = issues_of("set-header", header(name, action, value))
    assert list(issues) == [f"{P}.name"]
    assert "managed by the server" in issues[f"{P}.name"]


def test_invalid_literal_name_and_value_are_config_errors() -> None:
    issues = issues_of("set-header", header("x foo", value=["ok", "a\nb"]))
    assert set(issues) == {f"{P}.name", f"{P}.value[1]"}


def test_delete_takes_no_value() -> None:
    assert list(issues_of("set-header", header("x-foo", "delete", "v"))) == [f"{P}.value"]


def test_other_actions_need_a_value() -> None:
    assert list(issues_of("set-header", header("x-foo", "override"))) == [f"{P}.value"]


def test_bad_option_unknown_key_and_missing_name_are_reported_by_path() -> None:
    assert list(issues_of("set-header", header("x", "replace", "v"))) == [f"{P}.exists-action"]
    assert list(issues_of("set-header", {"name": "x", "value": "v", "bogus": 1})) == [f"{P}.bogus"]
    assert list(issues_of("set-header", {"value": "v"})) == [f"{P}.name"]


def test_bad_expression_is_reported_at_its_value_path() -> None:
    issues = issues_of("set-header", header("x", value=["ok", "@(context.Nope)"]))
    assert list(issues) == [f"{P}.value[1]"]


def test_describe_shows_short_literals_and_expressions_but_not_secrets() -> None:
    plain = build_one("set-header", {"id": "s1", "name": "X-Foo", "value": ["a", "@(1 + 2)"]})
    assert plain.describe() == "set-header (id=s1) x-foo override = ['a', @(1 + 2)]"
    secret = build_one("set-header", header("api-key", value="abc123"))
    assert "abc123" not in secret.describe()
    assert secret.describe() == "set-header api-key override = [<6 chars>]"
    assert build_one("set-header", header("x", "delete")).describe() == "set-header x delete"
