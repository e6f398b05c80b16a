"""`llm-token-limit` and `azure-openai-token-limit`: tokens per minute and token quotas per
counter key, as APIM has them, with exact counts for streams and an optional strict mode.

Before forwarding, the policy takes the request's cost from the counters: the prompt
estimate when `estimate-prompt-tokens` is on, else nothing. As in APIM, the request is
admitted if that prompt fits in what is left (without estimation: if anything is left). The
minute window also holds the completion the request declares (`max_tokens` …) until it
ends, so concurrent requests see it. Strict mode admits only if prompt and completion (with
`strict-max-tokens` when none is declared) fit, in the quota too. A refusal is 429 (tokens
per minute, with an honest `Retry-After`) or 403 (quota, with the time it renews), and
nothing is charged. After the response, the actual usage replaces what was taken; a client
that leaves while the take is in flight is charged nothing either (the take, already sent to
the store, runs to its end and is given back). See the README for windows, streams and the
multi-replica setup.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from pydantic import Field, model_validator

from aigw.context import RequestContext, Response
from aigw.errors import ExpressionEvaluationFailure, GatewayError
from aigw.limits.store import CounterStoreUnavailable, Taken
from aigw.limits.windows import HELD_RETRY, bucket_start, fits, period_bounds
from aigw.policies.base import Policy, PolicyConfig, record_shadow_rejection
from aigw.policies.limit_support import (
    StoreErrorMode,
    counter_store,
    pending_writes,
    publish,
    store_failure,
    token_counter,
    whole_seconds,
)
from aigw.policies.registry import register
from aigw.policies.values import text_of
from aigw.usage.meter import meter_for

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

log = logging.getLogger("aigw.limits")

QuotaPeriod = Literal["Hourly", "Daily", "Weekly", "Monthly", "Yearly"]
MINUTE = 60.0
DEFAULT_STRICT_MAX_TOKENS = 4096


class TokenLimitConfig(PolicyConfig):
    counter_key: str = Field(min_length=1)
    tokens_per_minute: int | None = Field(None, gt=0)
    token_quota: int | None = Field(None, gt=0)
    token_quota_period: QuotaPeriod | None = None
    estimate_prompt_tokens: bool
    retry_after_header_name: str = "Retry-After"
    retry_after_variable_name: str | None = None
    remaining_tokens_header_name: str | None = None
    remaining_tokens_variable_name: str | None = None
    remaining_quota_tokens_header_name: str | None = None
    remaining_quota_tokens_variable_name: str | None = None
    tokens_consumed_header_name: str | None = None
    tokens_consumed_variable_name: str | None = None
    # Ours: admit only if prompt + max_tokens fit, so concurrency cannot overshoot.
    strict: bool = False
    strict_max_tokens: int = Field(DEFAULT_STRICT_MAX_TOKENS, gt=0)
    on_store_error: StoreErrorMode = "fail-closed"

    @model_validator(mode="after")
    def _limits(self) -> TokenLimitConfig:
        if self.tokens_per_minute is None and self.token_quota is None:
            raise ValueError("give 'tokens-per-minute', 'token-quota', or both")
        if (self.token_quota is None) != (self.token_quota_period is None):
            raise ValueError("'token-quota' and 'token-quota-period' go together")
        return self


@dataclass(slots=True)
class Reservation:
    """What a request took, filled in as each counter's take succeeds."""

    key: str
    cost: int  # taken from the minute window: the prompt estimate and the completion held
    held: int  # of `cost`, the completion bound: released when the request ends
    quota_cost: int  # taken from the quota: `cost` in strict mode, else the prompt estimate
    quota_held: int  # of `quota_cost`, the completion bound (strict mode): released at the end
    taken_at: float  # when it was taken: where the quota's hold is released
    minute: Taken | None
    quota: Taken | None
    period: tuple[float, float] | None
    settled: bool = False


class TokenLimit(Policy):
    config_model = TokenLimitConfig
    enforcing = True
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, TokenLimitConfig)
        super().__init__(config, build)
        self.config = config
        self.counter_key = build.value(config.counter_key, ".counter-key")
        self.store = counter_store(build)
        self.writes = pending_writes(build)
        needs_counting = config.estimate_prompt_tokens or config.strict
        # Streams without usage from the backend are counted too, so the tokenizer is
        # always at hand; it loads in the background at start.
        self.counter = token_counter(build)
        self.estimate = needs_counting

    # -- before forwarding -----------------------------------------------------------------

    async def apply(self, ctx: RequestContext) -> Response | None:
        meter = meter_for(ctx, self.counter)
        if meter is None:
            return None  # not a model call: nothing to count
        if self in ctx.policy_state:
            return None  # run again (inside `retry`): the request holds its reservation
        key = text_of(self.counter_key, ctx)
        if not key:
            raise ExpressionEvaluationFailure(detail=f"{self.name}: counter-key is empty")
        prompt = await meter.estimate_prompt() if self.estimate else 0
        completion = 0
        if meter.operation != "embeddings":  # no completion there
            fallback = self.config.strict_max_tokens if self.config.strict else 0
            completion = _max_tokens(meter.body, fallback)
        now = ctx.clock.now().timestamp()
        reservation = Reservation(key, prompt + completion, completion, 0, 0, now, None, None, None)
        # Shielded: a client that leaves cancels the request, but the store applies a take it
        # was sent all the same, so the take runs on and what it took is given back.
        take = asyncio.ensure_future(self._take(ctx, reservation, prompt))
        try:
            await asyncio.shield(take)
        except asyncio.CancelledError:
            self.writes.submit(self._give_back(ctx, take, reservation))
            raise
        except Exception as exc:
            # Refused by the quota or the store lost after the minute took its part: that
            # part is settled at the end, like a whole reservation.
            if reservation.minute is not None:
                ctx.policy_state[self] = reservation
            if not isinstance(exc, CounterStoreUnavailable):
                raise
            store_failure(ctx, self.name, self.config.on_store_error, exc)
            return None
        ctx.policy_state[self] = reservation
        config = self.config
        publish(ctx, None, None, config.tokens_consumed_variable_name, prompt)
        if reservation.minute is not None:
            publish(
                ctx, None, None, config.remaining_tokens_variable_name, reservation.minute.remaining
            )
        if reservation.quota is not None:
            publish(
                ctx,
                None,
                None,
                config.remaining_quota_tokens_variable_name,
                reservation.quota.remaining,
            )
        return None

    async def _take(self, ctx: RequestContext, reservation: Reservation, prompt: int) -> None:
        config = self.config
        key, cost, now = reservation.key, reservation.cost, reservation.taken_at
        completion = reservation.held
        # What must fit for admission, and what the quota takes: all of it in strict mode,
        # else the prompt (APIM's rule). The minute window holds the completion either way,
        # so concurrent requests see it.
        fit = quota_cost = cost if config.strict else prompt
        if config.tokens_per_minute is not None:
            minute = await self.store.window_take(
                f"tpm:{key}", MINUTE, config.tokens_per_minute, cost, now, fit=fit, held=completion
            )
            if not minute.allowed:
                minute = await self._refused_minute(ctx, key, cost, fit, completion, now, minute)
            reservation.minute = minute
        quota_held = 0
        if config.token_quota is not None and config.token_quota_period is not None:
            period = period_bounds(config.token_quota_period, now)
            # Default mode takes the prompt only: a quota's 403 says "wait for the renewal",
            # which must not come from what requests in flight merely hold for a second.
            # Strict mode takes the completion bound too, marked as held: a refusal that only
            # those holds cause is a 429 for a second, not a 403 until the renewal.
            if config.strict:
                quota_held = completion
            quota = await self.store.period_take(
                f"tokens:{key}",
                period[0],
                period[1],
                config.token_quota,
                quota_cost,
                now,
                held=quota_held,
            )
            if not quota.allowed:
                quota = await self._refused_quota(
                    ctx, key, quota_cost, quota_held, period, now, quota
                )
            reservation.quota_cost, reservation.quota_held = quota_cost, quota_held
            reservation.quota, reservation.period = quota, period

    async def _refused_minute(
        self,
        ctx: RequestContext,
        key: str,
        cost: int,
        fit: int,
        held: int,
        now: float,
        taken: Taken,
    ) -> Taken:
        limit = self.config.tokens_per_minute
        assert limit is not None
        if fit > limit:
            error = GatewayError(
                f"Request too large: it needs {fit} tokens, the limit is {limit} tokens per "
                "minute.",
                status_code=429,
                reason="TokenLimitExceeded",
                source=self.name,
            )
        else:
            wait = whole_seconds(taken.retry_after)
            publish(ctx, None, None, self.config.retry_after_variable_name, wait)
            error = GatewayError(
                f"Token limit is exceeded. Try again in {wait} seconds.",
                status_code=429,
                reason="TokenLimitExceeded",
                source=self.name,
                headers=[(self.config.retry_after_header_name, str(wait))],
            )
        if not self.shadow:
            raise error
        record_shadow_rejection(ctx, self, error)
        # Shadow mode lets it through, and counts it, so later decisions stay true.
        bucket = bucket_start(now, MINUTE)
        await self.store.window_adjust(f"tpm:{key}", MINUTE, bucket, cost, now, held=held)
        return Taken(True, taken.used + cost, max(0, limit - taken.used - cost), 0.0, bucket)

    async def _refused_quota(
        self,
        ctx: RequestContext,
        key: str,
        cost: int,
        held: int,
        period: tuple[float, float],
        now: float,
        taken: Taken,
    ) -> Taken:
        limit = self.config.token_quota
        assert limit is not None
        if taken.held and fits(taken.used - taken.held, cost, limit):
            # Only what requests in flight hold is missing: it comes back when they end.
            wait = whole_seconds(HELD_RETRY)
            message = (
                "Token quota is exceeded for now: requests in flight hold the rest. "
                f"Try again in {wait} seconds."
            )
            status = 429
        else:
            renews = datetime.fromtimestamp(period[1], UTC).isoformat().replace("+00:00", "Z")
            wait = whole_seconds(taken.retry_after)
            message = f"Token quota is exceeded. Quota will be replenished at {renews}."
            status = 403
        publish(ctx, None, None, self.config.retry_after_variable_name, wait)
        error = GatewayError(
            message,
            status_code=status,
            reason="TokenQuotaExceeded",
            source=self.name,
            headers=[(self.config.retry_after_header_name, str(wait))],
        )
        if not self.shadow:
            raise error
        record_shadow_rejection(ctx, self, error)
        await self.store.period_adjust(
            f"tokens:{key}", period[0], period[1], cost, held=held, held_at=now
        )
        return Taken(True, taken.used + cost, max(0, limit - taken.used - cost), 0.0, period[0])

    # -- after the response ----------------------------------------------------------------

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        reservation: Reservation | None = ctx.policy_state.get(self)
        meter = ctx.usage_meter
        if reservation is None or meter is None:
            return response
        consumed = meter.usage.total_tokens if meter.usage is not None else None
        if consumed is not None:
            # A buffered JSON answer: its headers can say what it cost. The counters are
            # corrected after the answer went out, off the response's path.
            reservation.minute, reservation.quota = (
                _after(
                    reservation.minute, consumed - reservation.cost, self.config.tokens_per_minute
                ),
                _after(
                    reservation.quota, consumed - reservation.quota_cost, self.config.token_quota
                ),
            )
        self._publish_headers(ctx, response, reservation, consumed)
        return response

    async def on_complete(self, ctx: RequestContext) -> None:
        reservation: Reservation | None = ctx.policy_state.get(self)
        if reservation is None or reservation.settled:
            return
        reservation.settled = True
        meter = ctx.usage_meter
        usage = meter.usage if meter is not None else None
        # No successful backend answer (refused later, backend error, nothing sent): the
        # request costs nothing. Otherwise it costs what it used, streams included.
        consumed = usage.total_tokens if usage is not None else 0
        publish(ctx, None, None, self.config.tokens_consumed_variable_name, consumed)
        if _changes(reservation, consumed):
            self.writes.submit(self._correct(reservation, consumed, ctx.clock.now().timestamp()))

    async def _give_back(
        self, ctx: RequestContext, take: asyncio.Future[None], reservation: Reservation
    ) -> None:
        """The end of a take the client's leaving interrupted: what it took, if anything, is
        given back (the backend never saw the request)."""
        try:
            await take
        except (GatewayError, CounterStoreUnavailable):
            pass  # refused, or the store went away: `reservation` has what was taken before
        except Exception:
            log.exception("%s: a take interrupted by the client's leaving failed", self.name)
        reservation.settled = True
        if _changes(reservation, 0):
            await self._correct(reservation, 0, ctx.clock.now().timestamp())

    async def _correct(self, reservation: Reservation, consumed: int, now: float) -> None:
        # Each counter on its own: one the store could not correct must not keep the other
        # from being corrected (or its hold from being released).
        try:
            if reservation.minute is not None:
                # Tokens beyond what was taken count from now, when they became known: in
                # the bucket of the take they would miss the window after a long answer.
                # What was held is released where it was taken, in the same step.
                delta = consumed - reservation.cost
                taken = reservation.minute.bucket
                bucket = taken if delta < 0 else bucket_start(now, MINUTE)
                await self.store.window_adjust(
                    f"tpm:{reservation.key}",
                    MINUTE,
                    bucket,
                    delta,
                    now,
                    held=-reservation.held,
                    held_bucket=taken,
                )
        except CounterStoreUnavailable as exc:
            log.warning("%s: could not settle a request's %d tokens: %s", self.name, consumed, exc)
        period = self.config.token_quota_period
        if reservation.period is None or period is None:
            return
        try:
            # The same for the quota: an answer that ends in the next period counts there;
            # what was held is released where it was taken.
            counter, reserved = f"tokens:{reservation.key}", reservation.period
            extra, released = consumed - reservation.quota_cost, -reservation.quota_held
            start, end = reserved if extra < 0 else period_bounds(period, now)
            first = extra if (start, end) == reserved else 0
            await self.store.period_adjust(
                counter, *reserved, first, held=released, held_at=reservation.taken_at
            )
            if (start, end) != reserved:
                await self.store.period_adjust(counter, start, end, extra)
        except CounterStoreUnavailable as exc:
            log.warning("%s: could not settle a request's quota: %s", self.name, exc)

    def _publish_headers(
        self,
        ctx: RequestContext,
        response: Response,
        reservation: Reservation,
        consumed: int | None,
    ) -> None:
        config = self.config
        if reservation.minute is not None:
            publish(
                ctx,
                response,
                config.remaining_tokens_header_name,
                config.remaining_tokens_variable_name,
                reservation.minute.remaining,
            )
        if reservation.quota is not None:
            publish(
                ctx,
                response,
                config.remaining_quota_tokens_header_name,
                config.remaining_quota_tokens_variable_name,
                reservation.quota.remaining,
            )
        if consumed is not None:
            publish(
                ctx,
                response,
                config.tokens_consumed_header_name,
                config.tokens_consumed_variable_name,
                consumed,
            )

    def describe(self) -> str:
        config = self.config
        parts = []
        if config.tokens_per_minute:
            parts.append(f"{config.tokens_per_minute}/min")
        if config.token_quota:
            parts.append(f"{config.token_quota}/{config.token_quota_period}")
        mode = ", strict" if config.strict else ""
        estimate = ", estimate" if config.estimate_prompt_tokens else ""
        limits = " + ".join(parts)
        return f"{super().describe()} key={self.counter_key.source} {limits}{estimate}{mode}"


def _changes(reservation: Reservation, consumed: int) -> bool:
    """Whether settling at `consumed` writes anything: a count to correct, a hold to release."""
    minute = reservation.minute is not None and (
        consumed != reservation.cost or reservation.held > 0
    )
    quota = reservation.period is not None and (
        consumed != reservation.quota_cost or reservation.quota_held > 0
    )
    return minute or quota


def _after(taken: Taken | None, delta: int, limit: int | None) -> Taken | None:
    if taken is None or limit is None:
        return None
    # From the limit, not from `remaining`: that stopped at 0 if the take went past the limit.
    used = taken.used + delta
    return Taken(True, used, max(0, limit - used), 0.0, taken.bucket)


def _max_tokens(body: dict[str, Any], default: int) -> int:
    """The most the completion can use: `n` choices (Chat Completions, Completions) of at
    most the request's max tokens each (`default` each when it declares none)."""
    n = body.get("n")
    choices = n if _positive(n) else 1
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if _positive(value):
            return choices * value
    return choices * default


def _positive(value: object) -> TypeGuard[int]:
    return type(value) is int and value > 0


@register("llm-token-limit")
class LlmTokenLimit(TokenLimit):
    """Any OpenAI-compatible API: chat completions, completions, embeddings, responses."""


@register("azure-openai-token-limit")
class AzureOpenAiTokenLimit(TokenLimit):
    """The same engine under APIM's Azure OpenAI name."""
