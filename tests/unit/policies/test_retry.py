from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from aigw.backends.retry_plan import RETRY_PLAN, send_planned
from aigw.context import RequestContext, Response
from aigw.errors import BackendConnectionFailure, BackendTimeout, ExpressionEvaluationFailure
from aigw.headers import Headers
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.retry import Backoff, Retry
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].retry"
STATUS_IS_500 = "@(context.Response.StatusCode == 500)"
# Appends "x" to the variable `trail` each time it runs.
GROW_TRAIL = {
    "set-variable": {
        "name": "trail",
        "value": '@((string)context.Variables.GetValueOrDefault("trail", "") + "x")',
    }
}
TRAIL_SHORTER_THAN_3 = '@(((string)context.Variables["trail"]).Length < 3)'


class Sleeps:
    """A sleeper that records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def middle(low: float, high: float) -> float:
    return (low + high) / 2


def retry_policy(attributes: dict[str, Any], section: str = "inbound") -> tuple[Retry, Sleeps]:
    policy = build_one("retry", attributes, section)
    assert isinstance(policy, Retry)
    sleeps = Sleeps()
    policy.sleep = sleeps
    policy.jitter = middle
    return policy, sleeps


def waits(count: int, **attributes: Any) -> list[float]:
    """The waits a retry that always retries makes, in order."""
    policy, sleeps = retry_policy(
        {"condition": "true", "count": count, "policies": [GROW_TRAIL], **attributes}
    )
    ctx = make_ctx()
    assert run(policy, ctx) is None
    assert ctx.variables["trail"] == "x" * (count + 1)
    return sleeps.seconds


# --- wait algorithms -----------------------------------------------------------------------


def test_fixed_interval() -> None:
    assert waits(4, interval=2) == [2, 2, 2, 2]
    assert waits(4, interval=2, **{"first-fast-retry": True}) == [2, 2, 2]  # the first: none


def test_zero_interval_never_sleeps() -> None:
    assert waits(3, interval=0) == []


def test_linear() -> None:
    assert waits(4, interval=1, delta=2) == [1, 3, 5, 7]
    assert waits(4, interval=1, delta=2, **{"first-fast-retry": True}) == [3, 5, 7]


def test_exponential_doubles_up_to_max_interval() -> None:
    attributes = {"interval": 10, "delta": 10, "max-interval": 100}
    assert waits(6, **attributes) == [10, 20, 40, 80, 100, 100]
    assert waits(6, **attributes, **{"first-fast-retry": True}) == [20, 40, 80, 100, 100]


def test_exponential_steps_are_jittered_within_20_percent_of_delta() -> None:
    backoff = Backoff(interval=1, delta=10, max_interval=1000)
    asked: list[tuple[float, float]] = []

    def lowest(low: float, high: float) -> float:
        asked.append((low, high))
        return low

    assert [backoff.seconds(n, lowest) for n in (1, 2, 3, 4)] == [1, 9, 25, 57]
    assert asked == [(8, 12)] * 4
    assert [backoff.seconds(n, lambda low, high: high) for n in (1, 2, 3)] == [1, 13, 37]


def test_exponential_wait_is_capped_even_for_the_last_retry() -> None:
    backoff = Backoff(interval=0.5, delta=1, max_interval=30)
    assert backoff.seconds(50, middle) == 30
    assert Backoff(interval=0.5, delta=1, max_interval=30).algorithm == "exponential"
    assert Backoff(interval=0.5, delta=1).algorithm == "linear"
    assert Backoff(interval=0.5).algorithm == "fixed"


# --- with nested policies --------------------------------------------------------------------


def test_statements_run_again_while_the_condition_holds() -> None:
    policy, sleeps = retry_policy(
        {"condition": TRAIL_SHORTER_THAN_3, "count": 10, "interval": 1, "policies": [GROW_TRAIL]}
    )
    ctx = make_ctx()
    assert run(policy, ctx) is None
    assert ctx.variables["trail"] == "xxx"
    assert sleeps.seconds == [1, 1]


def test_false_condition_runs_once_without_waiting() -> None:
    policy, sleeps = retry_policy(
        {"condition": "false", "count": 5, "interval": 1, "policies": [GROW_TRAIL]}
    )
    ctx = make_ctx()
    run(policy, ctx)
    assert ctx.variables["trail"] == "x"
    assert sleeps.seconds == []


def test_count_bounds_the_retries() -> None:
    policy, sleeps = retry_policy(
        {"condition": "true", "count": 2, "interval": 0.5, "policies": [GROW_TRAIL]}
    )
    ctx = make_ctx()
    run(policy, ctx)
    assert ctx.variables["trail"] == "xxx"  # once, then two retries
    assert sleeps.seconds == [0.5, 0.5]


def test_a_response_returned_inside_ends_the_retries_and_the_section() -> None:
    policy, sleeps = retry_policy(
        {
            "condition": "true",
            "count": 5,
            "interval": 1,
            "policies": [GROW_TRAIL, {"return-response": {"set-status": {"code": 429}}}],
        }
    )
    ctx = make_ctx()
    response = run(policy, ctx)
    assert response is not None and response.status_code == 429
    assert ctx.variables["trail"] == "x"
    assert sleeps.seconds == []


def test_errors_inside_propagate_to_on_error() -> None:
    policy, sleeps = retry_policy(
        {
            "condition": "true",
            "count": 3,
            "interval": 1,
            "policies": [
                {"set-variable": {"name": "s", "value": "@(context.Response.StatusCode)"}}
            ],
        }
    )
    with pytest.raises(ExpressionEvaluationFailure):
        run(policy, make_ctx())
    assert sleeps.seconds == []


def test_condition_sees_the_response_in_outbound() -> None:
    policy, sleeps = retry_policy(
        {
            "condition": "@(context.Response.StatusCode == 503)",
            "count": 2,
            "interval": 1,
            "policies": [
                {"set-header": {"name": "x-seen", "value": "1", "exists-action": "append"}}
            ],
        },
        section="outbound",
    )
    ctx = make_ctx(response=Response(503, Headers()))
    run(policy, ctx)
    assert ctx.response is not None
    assert ctx.response.headers.get_joined("x-seen") == "1, 1, 1"
    assert sleeps.seconds == [1, 1]


class Observer(Policy):
    async def on_complete(self, ctx: RequestContext) -> None:
        return None


def test_a_statement_that_ran_again_completes_once() -> None:
    policy, _ = retry_policy(
        {"condition": "true", "count": 3, "interval": 0, "policies": [GROW_TRAIL]}
    )
    observer = Observer(PolicyConfig(), None)  # type: ignore[arg-type]
    policy.statements = (observer,)
    ctx = make_ctx()
    run(policy, ctx)
    assert ctx.observers == [observer]


# --- without nested policies: retrying the terminal step ----------------------------------


class Backend:
    """A scripted backend: each send answers the next status (or raises the next error)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers: Iterator[int | Exception] = iter(answers)
        self.bodies: list[bytes] = []
        self.released: list[int] = []

    async def send(self, ctx: RequestContext) -> Response:
        self.bodies.append(ctx.request.body)
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        number = len(self.bodies)

        async def release() -> None:
            self.released.append(number)

        return Response(answer, Headers([("x-attempt", str(number))]), release=release)


def planned(attributes: dict[str, Any]) -> tuple[RequestContext, Sleeps]:
    policy, sleeps = retry_policy(attributes, section="backend")
    ctx = make_ctx()
    assert run(policy, ctx) is None
    assert ctx.policy_state[RETRY_PLAN] is policy
    return ctx, sleeps


def forward(ctx: RequestContext, backend: Backend) -> Response:
    return asyncio.run(send_planned(backend.send, ctx))


def test_forwarding_is_retried_until_the_condition_is_false() -> None:
    ctx, sleeps = planned({"condition": STATUS_IS_500, "count": 5, "interval": 1, "delta": 1})
    backend = Backend(500, 500, 200)
    response = forward(ctx, backend)
    assert response.status_code == 200
    assert response.headers.get("x-attempt") == "3"
    assert backend.bodies == [b"{}"] * 3  # the same buffered body each time
    assert backend.released == [1, 2]  # the answers not relayed are released
    assert sleeps.seconds == [1, 2]
    assert ctx.response is None  # the executor sets it from the returned response


def test_exhausted_count_returns_the_last_answer() -> None:
    ctx, sleeps = planned({"condition": STATUS_IS_500, "count": 2, "interval": 1})
    backend = Backend(500, 500, 500, 200)
    response = forward(ctx, backend)
    assert response.status_code == 500
    assert response.headers.get("x-attempt") == "3"
    assert len(backend.bodies) == 3
    assert backend.released == [1, 2]
    assert sleeps.seconds == [1, 1]  # no wait after the last answer


def test_no_retry_when_the_condition_does_not_hold() -> None:
    ctx, sleeps = planned({"condition": STATUS_IS_500, "count": 3, "interval": 1})
    backend = Backend(429, 200)
    assert forward(ctx, backend).status_code == 429
    assert len(backend.bodies) == 1
    assert sleeps.seconds == []


def test_no_plan_sends_once() -> None:
    backend = Backend(500, 200)
    assert forward(make_ctx(), backend).status_code == 500
    assert len(backend.bodies) == 1


def test_a_backend_error_is_judged_by_its_status() -> None:
    ctx, sleeps = planned(
        {"condition": "@(context.Response.StatusCode >= 502)", "count": 3, "interval": 2}
    )
    backend = Backend(BackendTimeout(), BackendConnectionFailure(), 200)
    assert forward(ctx, backend).status_code == 200
    assert len(backend.bodies) == 3
    assert sleeps.seconds == [2, 2]


def test_the_last_backend_error_is_raised_when_retries_run_out() -> None:
    ctx, _ = planned(
        {"condition": "@(context.Response.StatusCode == 504)", "count": 1, "interval": 0}
    )
    backend = Backend(BackendTimeout(), BackendTimeout("second"))
    with pytest.raises(BackendTimeout, match="second"):
        forward(ctx, backend)
    assert len(backend.bodies) == 2
    assert ctx.response is None


def test_a_backend_error_the_condition_rejects_is_raised_at_once() -> None:
    ctx, _ = planned({"condition": STATUS_IS_500, "count": 3, "interval": 0})
    backend = Backend(BackendConnectionFailure(), 200)
    with pytest.raises(BackendConnectionFailure):
        forward(ctx, backend)
    assert len(backend.bodies) == 1


def test_a_failing_condition_releases_the_answer() -> None:
    ctx, _ = planned(
        {"condition": '@(context.Response.Headers["x-missing"] == "1")', "count": 3, "interval": 0}
    )
    backend = Backend(500)
    with pytest.raises(ExpressionEvaluationFailure):
        forward(ctx, backend)
    assert backend.released == [1]
    assert ctx.response is None


def test_the_last_retry_statement_that_ran_sets_the_plan() -> None:
    policies, issues = build(
        [
            {"retry": {"condition": "true", "count": 1, "interval": 0}},
            {"retry": {"condition": "false", "count": 2, "interval": 0}},
        ],
        section="backend",
    )
    assert issues == {}
    ctx = make_ctx()
    for policy in policies:
        run(policy, ctx)
    assert ctx.policy_state[RETRY_PLAN] is policies[1]


# --- config ----------------------------------------------------------------------------------


def test_without_policies_only_the_backend_section_is_allowed() -> None:
    for section in ("inbound", "outbound", "on-error"):
        _, issues = build([{"retry": {"condition": "true", "count": 1, "interval": 0}}], section)
        path = f"policies.{section}[0].retry"
        assert list(issues) == [path]
        assert "only allowed in the backend section" in issues[path]
        assert "'policies'" in issues[path]


def test_required_attributes_and_ranges() -> None:
    assert set(issues_of("retry", {"policies": [GROW_TRAIL]})) == {
        f"{P}.condition",
        f"{P}.count",
        f"{P}.interval",
    }
    base = {"condition": "true", "interval": 0, "policies": [GROW_TRAIL]}
    assert list(issues_of("retry", {**base, "count": 0})) == [f"{P}.count"]
    assert list(issues_of("retry", {**base, "count": 51})) == [f"{P}.count"]
    assert list(issues_of("retry", {**base, "count": 1, "interval": -1})) == [f"{P}.interval"]
    assert list(issues_of("retry", {**base, "count": 1, "delta": 0})) == [f"{P}.delta"]
    assert list(issues_of("retry", {**base, "count": 1, "first-fast": True})) == [f"{P}.first-fast"]
    assert build_one("retry", {**base, "count": 50}).describe().startswith("retry")


def test_max_interval_needs_delta_and_must_not_undercut_interval() -> None:
    base = {"condition": "true", "count": 1, "policies": [GROW_TRAIL]}
    issues = issues_of("retry", {**base, "interval": 1, "max-interval": 10})
    assert list(issues) == [f"{P}.max-interval"]
    assert "delta" in issues[f"{P}.max-interval"]
    issues = issues_of("retry", {**base, "interval": 20, "delta": 1, "max-interval": 10})
    assert issues == {f"{P}.max-interval": "must not be less than interval"}


def test_empty_policies_and_nested_errors_have_paths() -> None:
    base = {"condition": "true", "count": 1, "interval": 0}
    assert list(issues_of("retry", {**base, "policies": []}, "backend")) == [
        "policies.backend[0].retry.policies"
    ]
    issues = issues_of("retry", {**base, "condition": "@(1 + )", "policies": [{"nope": {}}]})
    assert set(issues) == {f"{P}.condition", f"{P}.policies[0]"}
    _, issues = build(
        [{"retry": {**base, "policies": [{"rewrite-uri": {"template": "/a"}}]}}], "outbound"
    )
    assert list(issues) == ["policies.outbound[0].retry.policies[0]"]


def test_describe_and_children() -> None:
    nested = build_one(
        "retry",
        {
            "condition": "true",
            "count": 3,
            "interval": 1,
            "delta": 2,
            "first-fast-retry": True,
            "policies": [GROW_TRAIL],
        },
    )
    assert nested.describe() == "retry (policies up to 3x while true; linear from 1s, first fast)"
    assert [label for label, _ in nested.children()] == ["policies"]
    terminal = build_one(
        "retry", {"condition": STATUS_IS_500, "count": 2, "interval": 0}, "backend"
    )
    assert (
        terminal.describe() == f"retry (forwarding up to 2x while {STATUS_IS_500}; fixed from 0s)"
    )
    assert terminal.children() == []
