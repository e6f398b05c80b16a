"""llm-token-limit on a fake clock and the memory store: refusals and their headers, an honest
Retry-After, estimate vs actual, strict mode, quotas across a period boundary, several
limits on one request, shadow mode, and what a broken counter store does."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from aigw.clock import ManualClock
from aigw.config.errors import IssueCollector
from aigw.context import OperationInfo, RequestContext, Response
from aigw.errors import GatewayError
from aigw.headers import Headers
from aigw.limits.memory_store import MemoryCounterStore
from aigw.limits.store import CounterStoreUnavailable
from aigw.limits.windows import period_bounds
from aigw.pipeline.chain import Chain
from aigw.pipeline.executor import complete, execute
from aigw.policies.base import Policy, run_statements
from aigw.policies.build import BuildContext
from aigw.policies.llm_token_limit import TokenLimit
from tests.unit.policies.conftest import issues_of, make_ctx

START = datetime(2026, 3, 31, 23, 59, 0, tzinfo=UTC)
PROMPT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello there"}]}


def limits(*attributes: dict[str, Any]) -> list[Policy]:
    """Policies built together, so they share one counter store as in a runtime."""
    build = BuildContext(issues=IssueCollector(), backend_ids=frozenset())
    built = build.statements(
        [{"llm-token-limit": {"estimate-prompt-tokens": False, **a}} for a in attributes], "p"
    )
    assert not build.issues.issues, build.issues.issues
    return [p for p in built if isinstance(p, Policy)]


def request(
    clock: ManualClock, body: dict[str, Any] | None = None, ip: str = "198.51.100.1"
) -> RequestContext:
    ctx = make_ctx(client_ip=ip)
    ctx.request.body = json.dumps(body or PROMPT).encode()
    ctx.operation = OperationInfo("chat-completions", "chat", "POST", "/chat/completions")
    ctx.model = (body or PROMPT).get("model")
    ctx.clock = clock
    return ctx


def call(policies: list[Policy], ctx: RequestContext, used: int | None) -> Response:
    """Inbound, then (unless refused) a backend answer that used `used` tokens, then the end."""

    async def go() -> Response:
        try:
            refused = await run_statements(policies, ctx)
            assert refused is None
        except GatewayError as exc:
            await complete(ctx)
            await drain(policies)
            raise exc
        response = answer(used)
        if ctx.usage_meter is not None:
            response = await ctx.usage_meter.on_response(response)
        for policy in policies:
            response = await policy.on_response(ctx, response)
        await complete(ctx)
        await drain(policies)
        return response

    return asyncio.run(go())


def answer(used: int | None) -> Response:
    """A backend's JSON answer reporting `used` tokens."""
    body = {
        "id": "x",
        "choices": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": used, "total_tokens": used},
    }
    return Response(200, Headers([("content-type", "application/json")]), json.dumps(body).encode())


async def drain(policies: list[Policy]) -> None:
    """Wait for the counter corrections made after the response (run in the background)."""
    for policy in policies:
        if isinstance(policy, TokenLimit):
            await policy.writes.close()


def refusal(policies: list[Policy], ctx: RequestContext) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        call(policies, ctx, 0)
    return caught.value


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def test_exhausted_minute_is_429_with_an_honest_retry_after(clock: ManualClock) -> None:
    policy = limits(
        {
            "counter-key": "@(context.Request.IpAddress)",
            "tokens-per-minute": 1000,
            "remaining-tokens-header-name": "x-left",
        }
    )
    assert call(policy, request(clock), 600).headers.get("x-left") == "400"
    clock.advance(20)
    call(policy, request(clock), 400)  # the minute is now used up
    clock.advance(1)
    error = refusal(policy, request(clock))
    assert error.status_code == 429 and error.reason == "TokenLimitExceeded"
    wait = int(dict(error.headers)["Retry-After"])
    assert error.message == f"Token limit is exceeded. Try again in {wait} seconds."
    # The first 600 tokens leave the window 60 s after they came: 39 s from now.
    assert wait == 39
    clock.advance(wait - 1)
    refusal(policy, request(clock))  # one second early: still refused
    clock.advance(1)
    call(policy, request(clock), 100)  # waiting as told is enough


def test_a_refused_request_is_not_charged(clock: ManualClock) -> None:
    policy = limits(
        {"counter-key": "k", "tokens-per-minute": 100, "remaining-tokens-header-name": "x-left"}
    )
    call(policy, request(clock), 100)
    for _ in range(3):
        refusal(policy, request(clock))
    clock.advance(60)
    assert call(policy, request(clock), 10).headers.get("x-left") == "90"


def test_the_estimate_refuses_before_the_backend_and_actual_usage_replaces_it(
    clock: ManualClock,
) -> None:
    policy = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 40,
            "estimate-prompt-tokens": True,
            "remaining-tokens-header-name": "x-left",
            "tokens-consumed-header-name": "x-used",
        }
    )
    answer = call(policy, request(clock), 30)
    assert answer.headers.get("x-used") == "30" and answer.headers.get("x-left") == "10"
    long_prompt = {**PROMPT, "messages": [{"role": "user", "content": "word " * 50}]}
    assert refusal(policy, request(clock, long_prompt)).status_code == 429


def test_a_request_larger_than_the_whole_limit_says_so_without_retry_after(
    clock: ManualClock,
) -> None:
    policy = limits({"counter-key": "k", "tokens-per-minute": 5, "estimate-prompt-tokens": True})
    error = refusal(policy, request(clock))
    assert error.status_code == 429 and "Request too large" in error.message
    assert not error.headers


def test_strict_mode_reserves_max_tokens_so_concurrency_cannot_overshoot(
    clock: ManualClock,
) -> None:
    policy = limits({"counter-key": "k", "tokens-per-minute": 1000, "strict": True})
    body = {**PROMPT, "max_tokens": 400}
    ctxs = [request(clock, body) for _ in range(3)]

    async def admit_all() -> list[bool]:
        results = []
        for ctx in ctxs:
            try:
                await run_statements(policy, ctx)
                results.append(True)
            except GatewayError:
                results.append(False)
        return results

    # Two fit (2 x (prompt + 400)), the third would overshoot: refused before any answer.
    assert asyncio.run(admit_all()) == [True, True, False]


def test_default_mode_holds_the_declared_completion_until_the_request_ends(
    clock: ManualClock,
) -> None:
    """Admitted as in APIM when its prompt fits, but while it is in flight others see what its
    max_tokens may still use: concurrency overshoots by one completion at most."""
    policy = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 1000,
            "estimate-prompt-tokens": True,
            "remaining-tokens-header-name": "x-left",
        }
    )
    body = {**PROMPT, "max_tokens": 995}  # 9 + 995 do not fit in 1000; the prompt does
    first = request(clock, body)

    async def second_refused() -> GatewayError:
        with pytest.raises(GatewayError) as caught:
            await run_statements(policy, request(clock, body))
        return caught.value

    async def overlap() -> None:
        assert await run_statements(policy, first) is None
        refused = await second_refused()
        assert refused.status_code == 429 and refused.reason == "TokenLimitExceeded"
        # What stands in the way comes back when the first request ends, not a minute later.
        assert dict(refused.headers)["Retry-After"] == "1"
        clock.advance(1)
        assert (await second_refused()).status_code == 429  # the first is still in flight
        assert first.usage_meter is not None
        response = await first.usage_meter.on_response(answer(30))
        for each in policy:
            response = await each.on_response(first, response)
        assert response.headers.get("x-left") == "970"
        await complete(first)
        await drain(policy)
        assert await run_statements(policy, request(clock, body)) is None

    asyncio.run(overlap())


def test_default_mode_without_max_tokens_holds_only_the_prompt(clock: ManualClock) -> None:
    policy = limits({"counter-key": "k", "tokens-per-minute": 20, "estimate-prompt-tokens": True})

    async def concurrent() -> None:
        # 9 tokens each: two prompts fit, a third does not (what a request declares, it holds).
        assert await run_statements(policy, request(clock)) is None
        assert await run_statements(policy, request(clock)) is None
        with pytest.raises(GatewayError):
            await run_statements(policy, request(clock))

    asyncio.run(concurrent())


def test_strict_mode_refuses_what_default_mode_admits_on_its_prompt(clock: ManualClock) -> None:
    attributes = {"counter-key": "k", "tokens-per-minute": 1000, "estimate-prompt-tokens": True}
    body = {**PROMPT, "max_tokens": 995}
    assert asyncio.run(run_statements(limits(attributes), request(clock, body))) is None
    strict = limits({**attributes, "strict": True})
    with pytest.raises(GatewayError) as caught:
        asyncio.run(run_statements(strict, request(clock, body)))
    assert "Request too large: it needs 1004 tokens" in caught.value.message


def test_a_refusal_behind_reservations_in_flight_is_told_to_come_back_soon(
    clock: ManualClock,
) -> None:
    """Strict mode too: Retry-After counts settled tokens leaving the window, not holds."""
    policy = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 1000,
            "strict": True,
            "estimate-prompt-tokens": True,
        }
    )
    call(policy, request(clock, {**PROMPT, "max_tokens": 491}), 500)  # settled: 60 s left
    clock.advance(10)
    held = request(clock, {**PROMPT, "max_tokens": 400})
    asyncio.run(run_statements(policy, held))  # holds 409 in flight
    clock.advance(1)
    error = refusal(policy, request(clock, {**PROMPT, "max_tokens": 100}))
    assert dict(error.headers)["Retry-After"] == "1"
    error = refusal(policy, request(clock, {**PROMPT, "max_tokens": 600}))
    # 500 + 609 do not fit even once the hold is back: wait for the 500 to leave.
    assert dict(error.headers)["Retry-After"] == "49"


def test_quota_is_403_until_the_period_renews(clock: ManualClock) -> None:
    policy = limits(
        {
            "counter-key": "k",
            "token-quota": 500,
            "token-quota-period": "Monthly",
            "remaining-quota-tokens-header-name": "x-quota",
        }
    )
    assert call(policy, request(clock), 500).headers.get("x-quota") == "0"
    error = refusal(policy, request(clock))
    assert error.status_code == 403 and error.reason == "TokenQuotaExceeded"
    assert (
        error.message
        == "Token quota is exceeded. Quota will be replenished at 2026-04-01T00:00:00Z."
    )
    assert dict(error.headers)["Retry-After"] == "60"
    clock.advance(60)  # April: a new period
    assert call(policy, request(clock), 100).headers.get("x-quota") == "400"


def test_a_strict_quota_held_by_requests_in_flight_is_a_429_for_a_second(
    clock: ManualClock,
) -> None:
    """Not a 403 "wait for the renewal" (a month, here) for what comes back in a second."""
    policy = limits(
        {"counter-key": "k", "token-quota": 1000, "token-quota-period": "Monthly", "strict": True}
    )
    call(policy, request(clock, {**PROMPT, "max_tokens": 300}), 300)  # settled: 700 left
    in_flight = request(clock, {**PROMPT, "max_tokens": 600})
    asyncio.run(run_statements(policy, in_flight))  # holds 600 of them
    error = refusal(policy, request(clock, {**PROMPT, "max_tokens": 200}))
    assert (error.status_code, error.reason) == (429, "TokenQuotaExceeded")
    assert error.message == (
        "Token quota is exceeded for now: requests in flight hold the rest. Try again in 1 seconds."
    )
    assert dict(error.headers)["Retry-After"] == "1"
    # What would not fit even once the holds are back is the quota itself: 403 as before.
    error = refusal(policy, request(clock, {**PROMPT, "max_tokens": 800}))
    assert error.status_code == 403 and dict(error.headers)["Retry-After"] == "60"

    async def end_in_flight() -> None:  # the held request ends, using 100 of its 600
        response = await in_flight.usage_meter.on_response(answer(100))  # type: ignore[union-attr]
        for limit in policy:
            await limit.on_response(in_flight, response)
        await complete(in_flight)
        await drain(policy)

    asyncio.run(end_in_flight())
    assert call(policy, request(clock, {**PROMPT, "max_tokens": 200}), 200).status_code == 200
    # 300 + 100 + 200 used: the quota's own 403 again for what does not fit.
    error = refusal(policy, request(clock, {**PROMPT, "max_tokens": 500}))
    assert error.status_code == 403


def test_a_strict_quota_hold_taken_in_shadow_mode_is_released_too(clock: ManualClock) -> None:
    (policy,) = limits(
        {
            "counter-key": "k",
            "token-quota": 1000,
            "token-quota-period": "Monthly",
            "strict": True,
            "shadow": True,
        }
    )
    assert isinstance(policy, TokenLimit)
    call([policy], request(clock, {**PROMPT, "max_tokens": 900}), 900)
    start, end = period_bounds("Monthly", clock.now().timestamp())

    def state() -> tuple[int, int]:
        taken = asyncio.run(
            policy.store.period_take("tokens:k", start, end, 1000, 1, clock.now().timestamp())
        )
        return taken.used, taken.held

    in_flight = request(clock, {**PROMPT, "max_tokens": 600})
    asyncio.run(run_statements([policy], in_flight))  # over the quota: let through, counted
    assert state() == (1509, 600)  # its prompt (9) and the 600 it may use, held

    async def end_in_flight() -> None:
        response = await in_flight.usage_meter.on_response(answer(100))  # type: ignore[union-attr]
        await policy.on_response(in_flight, response)
        await complete(in_flight)
        await drain([policy])

    asyncio.run(end_in_flight())
    assert state() == (1000, 0)


def test_every_limit_must_pass_and_a_refusal_charges_none_of_them(clock: ManualClock) -> None:
    per_user, per_app = limits(
        {
            "counter-key": "@(context.Request.IpAddress)",
            "tokens-per-minute": 1000,
            "remaining-tokens-header-name": "x-user",
            "estimate-prompt-tokens": True,
        },
        {
            "counter-key": "app",
            "tokens-per-minute": 50,
            "remaining-tokens-header-name": "x-app",
            "estimate-prompt-tokens": True,
        },
    )
    both = [per_user, per_app]
    first = call(both, request(clock), 48)  # leaves the app 2 tokens: less than a prompt
    user_left = int(first.headers.get("x-user"))
    refusal(
        both, request(clock)
    )  # the app limit refuses; the user limit must not keep the estimate
    answer = call([per_user], request(clock), 0)
    assert int(answer.headers.get("x-user")) == user_left


def test_shadow_mode_counts_and_reports_but_never_refuses(clock: ManualClock) -> None:
    policy = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 100,
            "shadow": True,
            "remaining-tokens-header-name": "x-left",
        }
    )
    call(policy, request(clock), 100)
    ctx = request(clock)
    answer = call(policy, ctx, 50)
    assert ctx.shadow_rejections == ["TokenLimitExceeded"]
    assert answer.headers.get("x-left") == "0"


def test_variables_carry_the_numbers(clock: ManualClock) -> None:
    policy = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 100,
            "remaining-tokens-variable-name": "left",
            "tokens-consumed-variable-name": "used",
            "retry-after-variable-name": "wait",
        }
    )
    ctx = request(clock)
    call(policy, ctx, 70)
    assert ctx.variables["left"] == 30 and ctx.variables["used"] == 70
    call(policy, request(clock), 30)
    refused = request(clock)
    refusal(policy, refused)
    assert refused.variables["wait"] == 60


class BrokenStore:
    async def window_take(self, *args: Any, **kwargs: Any) -> Any:
        raise CounterStoreUnavailable("redis at 127.0.0.1:1: connection refused")

    period_take = window_take


@pytest.mark.parametrize("mode", ["fail-closed", "fail-open"])
def test_an_unreachable_store_follows_on_store_error(clock: ManualClock, mode: str) -> None:
    (policy,) = limits({"counter-key": "k", "tokens-per-minute": 100, "on-store-error": mode})
    assert isinstance(policy, TokenLimit)
    policy.store = BrokenStore()  # type: ignore[assignment]
    ctx = request(clock)
    ctx.services = EventsOnly()
    if mode == "fail-open":
        call([policy], ctx, 10)
    else:
        error = refusal([policy], ctx)
        assert error.status_code == 503 and dict(error.headers)["retry-after"] == "5"
        assert "127.0.0.1" not in error.message
    # Counted for the operator, whichever way it went.
    assert ctx.services.telemetry.events == [
        ("limit_store_errors", {"policy": "llm-token-limit", "mode": mode}, 1.0)
    ]


class EventsOnly:
    """The runtime's services as far as a store failure needs them: the telemetry hub."""

    def __init__(self) -> None:
        self.telemetry = self
        self.events: list[tuple[str, dict[str, str], float]] = []

    def event(self, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
        self.events.append((name, dict(labels), amount))


def test_config_errors() -> None:
    assert issues_of("llm-token-limit", {"counter-key": "k", "estimate-prompt-tokens": True})
    assert issues_of(
        "llm-token-limit", {"counter-key": "k", "token-quota": 5, "estimate-prompt-tokens": True}
    )
    assert issues_of(
        "llm-token-limit", {"counter-key": "k", "tokens-per-minute": 5}
    )  # estimate is required
    assert issues_of(
        "azure-openai-token-limit",
        {"counter-key": "k", "tokens-per-minute": 0, "estimate-prompt-tokens": True},
    )
    assert issues_of(
        "llm-token-limit",
        {"counter-key": "k", "tokens-per-minute": 5, "estimate-prompt-tokens": True},
        section="outbound",
    )


def test_operations_without_tokens_are_not_limited(clock: ManualClock) -> None:
    policy = limits({"counter-key": "k", "tokens-per-minute": 1})
    ctx = request(clock)
    ctx.operation = OperationInfo("models", "models", "GET", "/models")
    assert asyncio.run(run_statements(policy, ctx)) is None
    assert ctx.usage_meter is None


def test_a_request_that_outlasts_the_window_is_still_charged_its_usage(
    clock: ManualClock,
) -> None:
    """A long answer (a reasoning model, minutes): its tokens count from when they are known,
    not only inside the minute the request came in."""
    policy = limits(
        {"counter-key": "k", "tokens-per-minute": 1000, "remaining-tokens-header-name": "x-left"}
    )
    ctx = request(clock)

    async def slow() -> None:
        assert await run_statements(policy, ctx) is None
        clock.advance(90)
        assert ctx.usage_meter is not None
        await ctx.usage_meter.on_response(answer(600))
        await complete(ctx)
        await drain(policy)

    asyncio.run(slow())
    assert call(policy, request(clock), 0).headers.get("x-left") == "400"


def test_strict_mode_reserves_nothing_for_the_completion_of_embeddings(
    clock: ManualClock,
) -> None:
    policy = limits({"counter-key": "k", "tokens-per-minute": 100, "strict": True})
    ctx = request(clock, {"model": "text-embedding-3-small", "input": "Hello there"})
    ctx.operation = OperationInfo("embeddings", "embeddings", "POST", "/embeddings")
    assert asyncio.run(run_statements(policy, ctx)) is None


def test_strict_mode_reserves_max_tokens_for_each_of_n_choices(clock: ManualClock) -> None:
    policy = limits({"counter-key": "k", "tokens-per-minute": 1000, "strict": True})
    body = {**PROMPT, "max_tokens": 300, "n": 3}
    assert asyncio.run(run_statements(policy, request(clock, body))) is None
    with pytest.raises(GatewayError) as caught:  # 3 x 300 are taken: a second cannot fit
        asyncio.run(run_statements(policy, request(clock, body)))
    assert caught.value.status_code == 429


def test_a_limit_run_again_inside_retry_holds_one_reservation(clock: ManualClock) -> None:
    build = BuildContext(issues=IssueCollector(), backend_ids=frozenset())
    limit = {
        "counter-key": "k",
        "tokens-per-minute": 1000,
        "estimate-prompt-tokens": True,
        "remaining-tokens-header-name": "x-left",
    }
    statement = {
        "retry": {
            "condition": "true",
            "count": 2,
            "interval": 0,
            "policies": [{"llm-token-limit": limit}],
        }
    }
    built = build.statements([statement], "p")
    assert not build.issues.issues, build.issues.issues
    policies = [p for p in built if isinstance(p, Policy)]
    call(policies, request(clock), 0)  # run three times, settled once: nothing may be left
    ctx = request(clock)
    asyncio.run(run_statements(policies, ctx))
    (reservation,) = [v for k, v in ctx.policy_state.items() if isinstance(k, TokenLimit)]
    assert reservation.minute is not None
    assert reservation.minute.used == reservation.cost  # one estimate taken, once


def test_a_client_that_leaves_while_the_backend_works_pays_for_its_prompt(
    clock: ManualClock,
) -> None:
    """The backend bills a request the client gave up on (a non-streamed answer is made
    whole before its head): the prompt is charged, not nothing."""
    policy = limits(
        {"counter-key": "k", "tokens-per-minute": 1000, "remaining-tokens-header-name": "x-left"}
    )
    ctx = request(clock)

    async def terminal(ctx: RequestContext) -> Response:
        ctx.backend_has_request = True  # written to the backend, which works on it
        ctx.client_disconnected = True  # the app cancels the request when its client leaves
        raise asyncio.CancelledError

    async def leave() -> None:
        with pytest.raises(asyncio.CancelledError):
            await execute(Chain(inbound=tuple(policy)), ctx, terminal)
        await complete(ctx)
        await drain(policy)

    asyncio.run(leave())
    # "Hello there" from the user: 3 per message + 1 role + 2 words + 3 priming the reply.
    assert call(policy, request(clock), 0).headers.get("x-left") == str(1000 - 9)


def test_a_request_refused_later_or_failed_at_the_backend_costs_nothing(
    clock: ManualClock,
) -> None:
    policy = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 1000,
            "estimate-prompt-tokens": True,
            "remaining-tokens-header-name": "x-left",
        }
    )

    async def failing(ctx: RequestContext) -> Response:
        return Response(500, Headers([("content-type", "application/json")]), b"{}")

    async def backend_error() -> None:
        ctx = request(clock)
        assert (await execute(Chain(inbound=tuple(policy)), ctx, failing)).status_code == 500
        await complete(ctx)
        await drain(policy)

    asyncio.run(backend_error())
    assert call(policy, request(clock), 0).headers.get("x-left") == "1000"


def test_shadow_mode_past_the_quota_still_counts_the_minute_in_full(clock: ManualClock) -> None:
    policy = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 1000,
            "token-quota": 5,  # less than any prompt: every request would be refused
            "token-quota-period": "Monthly",
            "estimate-prompt-tokens": True,
            "shadow": True,
            "remaining-tokens-header-name": "x-left",
        }
    )
    call(policy, request(clock), 50)
    assert call(policy, request(clock), 0).headers.get("x-left") == "950"


def test_usage_known_after_the_quota_period_ended_counts_in_the_next_one(
    clock: ManualClock,
) -> None:
    """START is one minute before April: the answer comes in April, and is April's."""
    policy = limits(
        {
            "counter-key": "k",
            "token-quota": 1000,
            "token-quota-period": "Monthly",
            "remaining-quota-tokens-header-name": "x-quota",
        }
    )
    ctx = request(clock)

    async def across() -> None:
        assert await run_statements(policy, ctx) is None
        clock.advance(120)
        assert ctx.usage_meter is not None
        await ctx.usage_meter.on_response(answer(600))
        await complete(ctx)
        await drain(policy)

    asyncio.run(across())
    assert call(policy, request(clock), 0).headers.get("x-quota") == "400"


def test_the_consumed_variable_starts_as_the_prompt_estimate_in_strict_mode_too(
    clock: ManualClock,
) -> None:
    """As APIM sets it before the answer: the prompt estimate, not what strict mode reserves."""
    policy = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 1000,
            "strict": True,
            "tokens-consumed-variable-name": "used",
        }
    )
    ctx = request(clock, {**PROMPT, "max_tokens": 100})
    asyncio.run(run_statements(policy, ctx))
    assert ctx.variables["used"] == 9


class QuotaUnreachable(MemoryCounterStore):
    """The minute counter answers, then the store goes away before the quota's turn."""

    async def period_take(self, *args: Any, **kwargs: Any) -> Any:
        raise CounterStoreUnavailable("redis at 127.0.0.1:1: connection reset")


@pytest.mark.parametrize(("mode", "used"), [("fail-closed", 0), ("fail-open", 50)])
def test_a_store_lost_between_the_minute_and_the_quota_leaves_nothing_taken(
    clock: ManualClock, mode: str, used: int
) -> None:
    """What the minute took is settled: given back after a 503, the real usage after fail-open."""
    attributes = {
        "counter-key": "k",
        "tokens-per-minute": 1000,
        "token-quota": 10000,
        "token-quota-period": "Daily",
        "estimate-prompt-tokens": True,
        "on-store-error": mode,
        "remaining-tokens-header-name": "x-left",
    }
    (policy,) = limits(attributes)
    assert isinstance(policy, TokenLimit)
    store = QuotaUnreachable()
    policy.store = store
    if mode == "fail-open":
        call([policy], request(clock), used)
    else:
        assert refusal([policy], request(clock)).status_code == 503
    taken = asyncio.run(store.window_peek("tpm:k", 60.0, 1000, clock.now().timestamp()))
    assert taken.used == used


class SlowStore(MemoryCounterStore):
    """Applies a take, then answers only once `answer` is set: a Redis script that ran while
    its reply was still on the way when the client left."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow = slow  # "window" or "period": which take is slow to answer
        self.applied = asyncio.Event()
        self.answer = asyncio.Event()

    async def window_take(self, *args: Any, **kwargs: Any) -> Any:
        taken = await super().window_take(*args, **kwargs)
        await self._reply("window")
        return taken

    async def period_take(self, *args: Any, **kwargs: Any) -> Any:
        taken = await super().period_take(*args, **kwargs)
        await self._reply("period")
        return taken

    async def _reply(self, take: str) -> None:
        if take == self.slow:
            self.applied.set()
            await self.answer.wait()


@pytest.mark.parametrize(
    ("slow", "quota"),
    [
        ("window", 10000),  # cancelled during the minute's take
        ("period", 10000),  # during the quota's, after the minute's answered
        ("period", 50),  # during the quota's, which refuses: the minute's part comes back
    ],
)
def test_a_client_that_leaves_during_the_take_is_charged_nothing(
    clock: ManualClock, slow: str, quota: int
) -> None:
    """The store applied the take, the request was cancelled before its answer came: the
    backend never saw the request, so what the take added (holds too) is given back."""
    (policy,) = limits(
        {
            "counter-key": "k",
            "tokens-per-minute": 1000,
            "token-quota": quota,
            "token-quota-period": "Daily",
            "estimate-prompt-tokens": True,
            "strict": True,  # the quota holds the completion too
        }
    )
    assert isinstance(policy, TokenLimit)
    store = policy.store = SlowStore(slow)
    ctx = request(clock, {**PROMPT, "max_tokens": 100})
    reached: list[RequestContext] = []

    async def terminal(ctx: RequestContext) -> Response:
        reached.append(ctx)
        return answer(10)

    async def leave() -> tuple[int, int, int]:
        served = asyncio.create_task(execute(Chain(inbound=(policy,)), ctx, terminal))
        await store.applied.wait()
        ctx.client_disconnected = True
        served.cancel()  # what the app does when the client leaves
        with pytest.raises(asyncio.CancelledError):
            await served
        await complete(ctx)  # the app's `finally`
        store.answer.set()  # the store's reply arrives after all
        await drain([policy])
        now = clock.now().timestamp()
        minute = await store.window_peek("tpm:k", 60.0, 1000, now)
        start, end = period_bounds("Daily", now)
        period = await store.period_take("tokens:k", start, end, 1, 2, now)  # refused: says held
        return minute.used, period.used, period.held

    assert asyncio.run(leave()) == (0, 0, 0)
    assert reached == []
