from __future__ import annotations

import pytest

from aigw.errors import ExpressionEvaluationFailure
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].set-variable"


def test_literal_value_is_stored_as_a_string() -> None:
    ctx = make_ctx()
    assert run(build_one("set-variable", {"name": "tier", "value": "gold"}), ctx) is None
    assert ctx.variables == {"tier": "gold"}


@pytest.mark.parametrize(("raw", "stored"), [(5, "5"), (1.5, "1.5"), (True, "true")])
def test_yaml_scalars_stay_strings(raw: object, stored: str) -> None:
    ctx = make_ctx()
    run(build_one("set-variable", {"name": "v", "value": raw}), ctx)
    assert ctx.variables["v"] == stored


def test_expression_value_keeps_its_type() -> None:
    ctx = make_ctx(headers=[("x-user", "alice")])
    run(build_one("set-variable", {"name": "n", "value": "@(1 + 2)"}), ctx)
    run(
        build_one(
            "set-variable",
            {"name": "u", "value": '@(context.Request.Headers.GetValueOrDefault("x-user"))'},
        ),
        ctx,
    )
    assert ctx.variables == {"n": 3, "u": "alice"}


def test_later_statements_see_the_variable() -> None:
    policies, issues = build(
        [
            {"set-variable": {"name": "who", "value": "bob"}},
            {"set-header": {"name": "x-who", "value": '@((string)context.Variables["who"])'}},
        ]
    )
    assert issues == {}
    ctx = make_ctx()
    for policy in policies:
        run(policy, ctx)
    assert ctx.request.headers.get("x-who") == "bob"


def test_failing_expression_raises_a_500() -> None:
    ctx = make_ctx()
    policy = build_one(
        "set-variable", {"name": "v", "value": '@((int)context.Variables["missing"])'}
    )
    with pytest.raises(ExpressionEvaluationFailure):
        run(policy, ctx)
    assert "v" not in ctx.variables


@pytest.mark.parametrize("section", ["inbound", "backend", "outbound", "on-error"])
def test_allowed_in_every_section(section: str) -> None:
    _, issues = build([{"set-variable": {"name": "a", "value": "1"}}], section)
    assert issues == {}


def test_config_errors() -> None:
    assert list(issues_of("set-variable", {"name": "a"})) == [f"{P}.value"]
    assert list(issues_of("set-variable", {"value": "1"})) == [f"{P}.name"]
    assert list(issues_of("set-variable", {"name": "a", "value": "@(nope"})) == [f"{P}.value"]


def test_describe_hides_secret_looking_literals() -> None:
    assert (
        build_one("set-variable", {"name": "tier", "value": "gold"}).describe()
        == "set-variable tier = 'gold'"
    )
    assert (
        "s3cr3t"
        not in build_one("set-variable", {"name": "api-token", "value": "s3cr3t"}).describe()
    )
