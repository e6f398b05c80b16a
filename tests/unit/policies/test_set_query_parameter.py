from __future__ import annotations

from typing import Any

import pytest

from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].set-query-parameter"
ORIGINAL = [("api-version", "1"), ("a", "x"), ("api-version", "2")]


def query_after(attributes: dict[str, Any], query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    ctx = make_ctx(query=query)
    assert run(build_one("set-query-parameter", attributes), ctx) is None
    return ctx.request.query


def test_override_replaces_all_occurrences_in_place() -> None:
    result = query_after({"name": "api-version", "value": "3"}, ORIGINAL)
    assert result == [("api-version", "3"), ("a", "x")]


def test_override_with_several_values_repeats_the_parameter() -> None:
    result = query_after({"name": "api-version", "value": ["3", 4]}, ORIGINAL)
    assert result == [("api-version", "3"), ("api-version", "4"), ("a", "x")]


def test_override_adds_a_missing_parameter_at_the_end() -> None:
    assert query_after({"name": "b", "value": "y"}, [("a", "x")]) == [("a", "x"), ("b", "y")]


def test_skip_keeps_existing_and_adds_missing() -> None:
    attributes = {"name": "a", "exists-action": "skip", "value": "new"}
    assert query_after(attributes, [("a", "old")]) == [("a", "old")]
    assert query_after(attributes, []) == [("a", "new")]


def test_append_adds_another_occurrence() -> None:
    attributes = {"name": "a", "exists-action": "append", "value": "2"}
    assert query_after(attributes, [("a", "1"), ("b", "x")]) == [("a", "1"), ("b", "x"), ("a", "2")]


def test_delete_removes_every_occurrence() -> None:
    attributes = {"name": "api-version", "exists-action": "delete"}
    assert query_after(attributes, ORIGINAL) == [("a", "x")]


def test_expression_values_and_null_skipping() -> None:
    attributes = {
        "name": "who",
        "value": ["@(context.Api.Id)", '@(context.Variables.GetValueOrDefault("none"))'],
    }
    assert query_after(attributes, []) == [("who", "chat")]


def test_expression_name() -> None:
    ctx = make_ctx()
    ctx.variables["p"] = "dyn"
    run(
        build_one(
            "set-query-parameter", {"name": '@((string)context.Variables["p"])', "value": "1"}
        ),
        ctx,
    )
    assert ctx.request.query == [("dyn", "1")]


@pytest.mark.parametrize("section", ["outbound", "on-error"])
def test_only_allowed_where_a_request_is_being_built(section: str) -> None:
    _, issues = build([{"set-query-parameter": {"name": "a", "value": "1"}}], section)
    assert list(issues) == [f"policies.{section}[0]"]


def test_config_errors_by_path() -> None:
    assert list(
        issues_of("set-query-parameter", {"name": "a", "exists-action": "x", "value": "1"})
    ) == [f"{P}.exists-action"]
    assert list(
        issues_of("set-query-parameter", {"name": "a", "exists-action": "delete", "value": "1"})
    ) == [f"{P}.value"]
    assert list(issues_of("set-query-parameter", {"name": "", "value": "1"})) == [f"{P}.name"]


def test_describe() -> None:
    policy = build_one("set-query-parameter", {"name": "api-version", "value": "2024-10-21"})
    assert policy.describe() == "set-query-parameter api-version override = ['2024-10-21']"
    secret = build_one("set-query-parameter", {"name": "code", "value": "x" * 40})
    assert "xxxx" not in secret.describe()
