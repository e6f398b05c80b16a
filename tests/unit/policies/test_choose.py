from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aigw.context import RequestContext, Response
from aigw.errors import ExpressionEvaluationFailure
from aigw.headers import Headers
from aigw.policies.base import Policy, PolicyConfig, run_statements
from aigw.policies.choose import Branch, Choose
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].choose"
TIER = '@(context.Request.Headers.GetValueOrDefault("x-tier", "") == "{}")'


def mark(value: str) -> dict[str, Any]:
    return {"set-variable": {"name": "branch", "value": value}}


def tiered() -> Policy:
    return build_one(
        "choose",
        {
            "when": [
                {"condition": TIER.format("gold"), "policies": [mark("gold")]},
                {
                    "condition": '@(context.Request.Headers.GetValueOrDefault("x-tier", "") != "")',
                    "policies": [mark("any")],
                },
                {"condition": TIER.format("gold"), "policies": [mark("never")]},
            ],
            "otherwise": [mark("none")],
        },
    )


@pytest.mark.parametrize(("tier", "branch"), [("gold", "gold"), ("silver", "any"), (None, "none")])
def test_first_matching_branch_wins_else_otherwise(tier: str | None, branch: str) -> None:
    ctx = make_ctx(headers=[("x-tier", tier)] if tier else [])
    assert run(tiered(), ctx) is None
    assert ctx.variables == {"branch": branch}


def test_no_match_and_no_otherwise_does_nothing() -> None:
    policy = build_one("choose", {"when": [{"condition": "false", "policies": [mark("x")]}]})
    ctx = make_ctx()
    assert run(policy, ctx) is None
    assert ctx.variables == {}


def test_response_in_a_branch_ends_the_section() -> None:
    policies, issues = build(
        [
            {
                "choose": {
                    "when": [
                        {
                            "condition": "true",
                            "policies": [
                                {"return-response": {"set-status": {"code": 402}}},
                                mark("after-return"),
                            ],
                        }
                    ]
                }
            },
            mark("after-choose"),
        ]
    )
    assert issues == {}
    ctx = make_ctx()
    response = asyncio.run(run_statements(policies, ctx))
    assert response is not None and response.status_code == 402
    assert ctx.variables == {}


def test_nested_statements_inherit_the_section() -> None:
    policy = build_one(
        "choose",
        {
            "when": [
                {"condition": "true", "policies": [{"set-header": {"name": "x-out", "value": "1"}}]}
            ]
        },
        section="outbound",
    )
    ctx = make_ctx(response=Response(200, Headers()))
    run(policy, ctx)
    assert ctx.response is not None and ctx.response.headers.get("x-out") == "1"
    assert "x-out" not in ctx.request.headers


class Observer(Policy):
    async def on_complete(self, ctx: RequestContext) -> None:
        return None


def test_nested_observers_are_registered_only_for_the_branch_that_ran() -> None:
    policy = build_one("choose", {"when": [{"condition": "true"}], "otherwise": []})
    assert isinstance(policy, Choose)
    seen, unseen = Observer(PolicyConfig(), None), Observer(PolicyConfig(), None)  # type: ignore[arg-type]
    policy.branches = (Branch(policy.branches[0].condition, (seen,)),)
    policy.otherwise = (unseen,)
    ctx = make_ctx()
    run(policy, ctx)
    assert ctx.observers == [seen]


def test_condition_that_is_not_boolean_at_run_time_fails() -> None:
    policy = build_one("choose", {"when": [{"condition": '@(context.Variables["v"])'}]})
    ctx = make_ctx()
    ctx.variables["v"] = "yes"
    with pytest.raises(ExpressionEvaluationFailure):
        run(policy, ctx)


def test_config_errors_have_nested_paths() -> None:
    issues = issues_of(
        "choose",
        {
            "when": [
                {"condition": "@(1 + 2)", "policies": [mark("a")]},
                {
                    "condition": "true",
                    "policies": [
                        mark("b"),
                        {"set-header": {"name": "x", "exists-action": "bad", "value": "1"}},
                    ],
                },
            ],
            "otherwise": [{"no-such-policy": {}}],
        },
    )
    assert set(issues) == {
        f"{P}.when[0].condition",
        f"{P}.when[1].policies[1].set-header.exists-action",
        f"{P}.otherwise[0]",
    }


def test_nested_policy_must_be_allowed_in_the_enclosing_section() -> None:
    _, issues = build(
        [
            {
                "choose": {
                    "when": [
                        {"condition": "true", "policies": [{"rewrite-uri": {"template": "/a"}}]}
                    ]
                }
            }
        ],
        "outbound",
    )
    assert list(issues) == ["policies.outbound[0].choose.when[0].policies[0]"]


def test_when_is_required_and_not_empty() -> None:
    assert list(issues_of("choose", {})) == [f"{P}.when"]
    assert list(issues_of("choose", {"when": []})) == [f"{P}.when"]
    assert list(issues_of("choose", {"when": [{"policies": []}]})) == [f"{P}.when[0].condition"]


def test_children_and_describe() -> None:
    policy = tiered()
    assert policy.describe() == "choose (3 when + otherwise)"
    labels = [
        (label, [child.describe() for child in children]) for label, children in policy.children()
    ]
    assert labels[0] == (f"when {TIER.format('gold')}", ["set-variable branch = 'gold'"])
    assert labels[-1] == ("otherwise", ["set-variable branch = 'none'"])
    assert len(labels) == 4
