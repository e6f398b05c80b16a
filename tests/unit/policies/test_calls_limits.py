"""rate-limit-by-key and quota-by-key on a fake clock and the memory store: what
`increment-condition`, `increment-count` and a bandwidth quota count at the end of a call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from aigw.clock import ManualClock
from aigw.context import Response
from aigw.errors import GatewayError
from aigw.headers import Headers
from aigw.policies.base import Policy
from aigw.relay import send_response
from tests.unit.policies.conftest import build_one, make_ctx

START = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def call(
    policy: Policy,
    clock: ManualClock,
    status: int = 200,
    *,
    sent: bytes = b"",
    answer: bytes = b"",
    streamed: bool = False,
) -> int:
    """One call through `policy`: admitted, answered with `status` and `answer` (relayed in
    chunks when `streamed`), then ended. The refusal's status when refused."""

    async def go() -> int:
        ctx = make_ctx()
        ctx.clock = clock
        ctx.request.body = sent
        try:
            await policy.apply(ctx)
        except GatewayError as refused:
            return refused.status_code
        if streamed:

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(answer), 100):
                    yield answer[start : start + 100]

            response = Response(status, Headers([]), stream=chunks())
        else:
            response = Response(status, Headers([]), answer)
        ctx.response = response
        ctx.observers.append(policy)

        async def drop(message: dict[str, Any]) -> None:
            return None

        await send_response(drop, response, "r1", ctx)
        await policy.on_complete(ctx)
        await policy.writes.close()  # type: ignore[attr-defined]  # the counting, done
        return status

    return asyncio.run(go())


def test_rate_limit_counts_only_the_calls_its_condition_accepts(clock: ManualClock) -> None:
    policy = build_one(
        "rate-limit-by-key",
        {
            "calls": 2,
            "renewal-period": 60,
            "counter-key": "k",
            "increment-condition": "@(context.Response.StatusCode < 400)",
        },
    )
    assert [call(policy, clock, 500) for _ in range(3)] == [500, 500, 500]  # none counted
    assert [call(policy, clock, 200) for _ in range(2)] == [200, 200]
    assert call(policy, clock, 200) == 429
    clock.advance(61)
    assert call(policy, clock, 200) == 200


def test_rate_limit_counts_each_call_increment_count_times(clock: ManualClock) -> None:
    policy = build_one(
        "rate-limit-by-key",
        {"calls": 6, "renewal-period": 60, "counter-key": "k", "increment-count": 3},
    )
    assert [call(policy, clock) for _ in range(3)] == [200, 200, 429]


def test_a_call_quota_counts_only_the_calls_its_condition_accepts(clock: ManualClock) -> None:
    policy = build_one(
        "quota-by-key",
        {
            "calls": 2,
            "renewal-period": 3600,
            "counter-key": "k",
            "increment-condition": "@(context.Response.StatusCode == 200)",
        },
    )
    assert [call(policy, clock, 503) for _ in range(3)] == [503, 503, 503]
    assert [call(policy, clock, 200) for _ in range(3)] == [200, 200, 403]
    clock.advance(3600)  # the next period
    assert call(policy, clock) == 200


@pytest.mark.parametrize("streamed", [False, True])
def test_a_bandwidth_quota_counts_request_and_response_kilobytes(
    clock: ManualClock, streamed: bool
) -> None:
    policy = build_one("quota-by-key", {"bandwidth": 3, "renewal-period": 3600, "counter-key": "k"})
    # 600 bytes sent + 900 received: 1,500 bytes, counted as 2 KB.
    assert call(policy, clock, sent=b"s" * 600, answer=b"r" * 900, streamed=streamed) == 200
    assert call(policy, clock, sent=b"s" * 100, answer=b"r" * 100, streamed=streamed) == 200
    # 2 + 1 KB used: the quota is spent, the next call is refused before the backend.
    assert call(policy, clock) == 403
    clock.advance(3600)
    assert call(policy, clock) == 200


def test_a_bandwidth_quota_skips_calls_its_condition_rejects(clock: ManualClock) -> None:
    policy = build_one(
        "quota-by-key",
        {
            "bandwidth": 1,
            "renewal-period": 3600,
            "counter-key": "k",
            "increment-condition": "@(context.Response.StatusCode == 200)",
        },
    )
    assert call(policy, clock, 500, answer=b"x" * 5000) == 500
    assert call(policy, clock, 200, answer=b"x" * 2000) == 200
    assert call(policy, clock) == 403
