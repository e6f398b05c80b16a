from __future__ import annotations

import pytest

from aigw.errors import GatewayError
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].set-backend-service"


def test_literal_backend_is_selected() -> None:
    ctx = make_ctx()
    assert run(build_one("set-backend-service", {"backend-id": "secondary"}), ctx) is None
    assert ctx.backend_id == "secondary"


def test_unknown_literal_backend_is_a_config_error() -> None:
    issues = issues_of("set-backend-service", {"backend-id": "nope"})
    assert issues == {P: 'backend "nope" is not defined'}


def test_expression_backend_is_checked_per_request() -> None:
    policy = build_one("set-backend-service", {"backend-id": '@((string)context.Variables["b"])'})
    ctx = make_ctx()
    ctx.variables["b"] = "primary"
    run(policy, ctx)
    assert ctx.backend_id == "primary"

    ctx = make_ctx()
    ctx.variables["b"] = "elsewhere"
    with pytest.raises(GatewayError) as info:
        run(policy, ctx)
    error = info.value
    assert (error.status_code, error.reason, error.message) == (
        500,
        "BackendNotFound",
        "Backend not found",
    )
    assert ctx.backend_id is None


def test_expression_producing_null_is_not_found() -> None:
    policy = build_one(
        "set-backend-service", {"backend-id": '@(context.Variables.GetValueOrDefault("b"))'}
    )
    with pytest.raises(GatewayError) as info:
        run(policy, make_ctx())
    assert info.value.reason == "BackendNotFound"


@pytest.mark.parametrize(
    ("section", "allowed"), [("backend", True), ("outbound", False), ("on-error", False)]
)
def test_sections(section: str, allowed: bool) -> None:
    _, issues = build([{"set-backend-service": {"backend-id": "primary"}}], section)
    assert (issues == {}) is allowed


def test_config_errors() -> None:
    assert list(issues_of("set-backend-service", {})) == [f"{P}.backend-id"]
    assert list(issues_of("set-backend-service", {"backend-id": "primary", "base-url": "x"})) == [
        f"{P}.base-url"
    ]


def test_describe() -> None:
    assert (
        build_one("set-backend-service", {"backend-id": "primary"}).describe()
        == "set-backend-service primary"
    )
