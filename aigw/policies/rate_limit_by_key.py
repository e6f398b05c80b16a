"""`rate-limit-by-key`: at most `calls` calls per `renewal-period` seconds for each value of
`counter-key` (a sliding window, in 1/60 steps of the period), as APIM has it.

With `increment-condition`, only calls for which it holds at the end count (e.g. successful
ones); they are checked against the counter before forwarding and counted when done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from aigw.context import RequestContext, Response
from aigw.errors import ExpressionEvaluationFailure, GatewayError
from aigw.limits.store import CounterStoreUnavailable, Taken
from aigw.limits.windows import bucket_start
from aigw.policies.base import Policy, PolicyConfig, record_shadow_rejection
from aigw.policies.limit_support import (
    StoreErrorMode,
    counter_store,
    log,
    pending_writes,
    publish,
    store_failure,
    whole_seconds,
)
from aigw.policies.registry import register
from aigw.policies.values import text_of

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext


class RateLimitByKeyConfig(PolicyConfig):
    calls: int = Field(gt=0)
    renewal_period: int = Field(gt=0, le=86400)
    counter_key: str = Field(min_length=1)
    increment_condition: str | None = None
    increment_count: int = Field(1, gt=0)
    retry_after_header_name: str = "Retry-After"
    retry_after_variable_name: str | None = None
    remaining_calls_header_name: str | None = None
    remaining_calls_variable_name: str | None = None
    total_calls_header_name: str | None = None
    on_store_error: StoreErrorMode = "fail-closed"


@register("rate-limit-by-key")
class RateLimitByKey(Policy):
    config_model = RateLimitByKeyConfig
    enforcing = True
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, RateLimitByKeyConfig)
        super().__init__(config, build)
        self.config = config
        self.window = float(config.renewal_period)
        self.counter_key = build.value(config.counter_key, ".counter-key")
        self.condition = (
            build.condition(config.increment_condition, ".increment-condition")
            if config.increment_condition
            else None
        )
        self.store = counter_store(build)
        self.writes = pending_writes(build)

    async def apply(self, ctx: RequestContext) -> Response | None:
        key = text_of(self.counter_key, ctx)
        if not key:
            raise ExpressionEvaluationFailure(detail=f"{self.name}: counter-key is empty")
        key = f"calls:{key}"
        now = ctx.clock.now().timestamp()
        config = self.config
        try:
            if self.condition is None:
                taken = await self.store.window_take(
                    key, self.window, config.calls, config.increment_count, now
                )
            else:  # counted at the end, if the condition holds then
                taken = await self.store.window_peek(key, self.window, config.calls, now)
        except CounterStoreUnavailable as exc:
            store_failure(ctx, self.name, config.on_store_error, exc)
            return None
        if not taken.allowed:
            taken = await self._refused(ctx, key, now, taken)
        ctx.policy_state[self] = (key, taken)
        publish(ctx, None, None, config.remaining_calls_variable_name, taken.remaining)
        return None

    async def _refused(self, ctx: RequestContext, key: str, now: float, taken: Taken) -> Taken:
        wait = whole_seconds(taken.retry_after)
        publish(ctx, None, None, self.config.retry_after_variable_name, wait)
        error = GatewayError(
            f"Rate limit is exceeded. Try again in {wait} seconds.",
            status_code=429,
            reason="RateLimitExceeded",
            source=self.name,
            headers=[(self.config.retry_after_header_name, str(wait))],
        )
        if not self.shadow:
            raise error
        record_shadow_rejection(ctx, self, error)
        if self.condition is None:
            count = self.config.increment_count
            await self.store.window_adjust(
                key, self.window, bucket_start(now, self.window), count, now
            )
        return Taken(True, taken.used, 0, 0.0, taken.bucket)

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        state = ctx.policy_state.get(self)
        if state is not None:
            _, taken = state
            config = self.config
            publish(ctx, response, config.remaining_calls_header_name, None, taken.remaining)
            publish(ctx, response, config.total_calls_header_name, None, config.calls)
        return response

    async def on_complete(self, ctx: RequestContext) -> None:
        state = ctx.policy_state.get(self)
        if state is None or self.condition is None:
            return
        key, _ = state
        if self.condition.evaluate(ctx) is not True:
            return
        # Counted after the response, off the connection's path, as token corrections are.
        self.writes.submit(self._count(key, ctx.clock.now().timestamp()))

    async def _count(self, key: str, now: float) -> None:
        try:
            await self.store.window_adjust(
                key, self.window, bucket_start(now, self.window), self.config.increment_count, now
            )
        except CounterStoreUnavailable as exc:
            log.warning("%s: could not count a call: %s", self.name, exc)

    def describe(self) -> str:
        config = self.config
        return (
            f"{super().describe()} key={self.counter_key.source} "
            f"{config.calls} calls/{config.renewal_period}s"
        )
