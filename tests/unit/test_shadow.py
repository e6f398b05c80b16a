"""Shadow mode: an enforcing policy evaluates and records its rejection but never blocks."""

from __future__ import annotations

import pytest

from aigw.errors import GatewayError
from aigw.policies.base import run_statements
from tests.unit.policies.conftest import build, make_ctx

FORBID_CALLER = {"action": "forbid", "address": ["203.0.113.7"]}


async def test_shadow_rejection_is_recorded_and_the_request_goes_on() -> None:
    policies, issues = build(
        [
            {"ip-filter": {**FORBID_CALLER, "shadow": True}},
            {"set-header": {"name": "x-after", "value": "ran"}},
        ]
    )
    assert issues == {}
    ctx = make_ctx(client_ip="203.0.113.7")
    assert await run_statements(policies, ctx) is None
    assert ctx.shadow_rejections == ["CallerIpBlocked"]
    assert ctx.request.headers.get("x-after") == "ran"


async def test_the_same_policy_without_shadow_blocks() -> None:
    policies, _ = build([{"ip-filter": FORBID_CALLER}])
    ctx = make_ctx(client_ip="203.0.113.7")
    with pytest.raises(GatewayError) as rejected:
        await run_statements(policies, ctx)
    assert (rejected.value.status_code, rejected.value.reason) == (403, "CallerIpBlocked")
    assert ctx.shadow_rejections == []


async def test_shadow_check_header_records_its_reason() -> None:
    policies, _ = build(
        [
            {
                "check-header": {
                    "name": "x-team",
                    "failed-check-httpcode": 400,
                    "failed-check-error-message": "x-team is required",
                    "shadow": True,
                }
            }
        ]
    )
    ctx = make_ctx()
    assert await run_statements(policies, ctx) is None
    assert ctx.shadow_rejections == ["HeaderNotFound"]


def test_shadow_on_a_policy_that_never_rejects_is_a_config_error() -> None:
    _, issues = build([{"set-header": {"name": "x", "value": "y", "shadow": True}}])
    assert issues == {
        "policies.inbound[0].set-header.shadow": (
            "shadow mode applies only to policies that reject requests, not to 'set-header'"
        )
    }
