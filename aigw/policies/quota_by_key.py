"""`quota-by-key`: a call volume (`calls`) and/or bandwidth (`bandwidth`, kilobytes of request
and response bodies) per `renewal-period` seconds for each value of `counter-key`, as APIM
has it: fixed periods counted from `first-period-start` (default: the Unix epoch, UTC).

A call is refused (403) once the period's volume or bandwidth is used up; bandwidth is known
only when the response is done, so it is counted then. With `increment-condition`, only
calls for which it holds at the end count.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from aigw.context import RequestContext, Response
from aigw.errors import ExpressionEvaluationFailure, GatewayError
from aigw.limits.store import CounterStoreUnavailable
from aigw.limits.windows import fixed_period
from aigw.policies.base import Policy, PolicyConfig, record_shadow_rejection
from aigw.policies.limit_support import (
    StoreErrorMode,
    counter_store,
    log,
    pending_writes,
    store_failure,
)
from aigw.policies.registry import register
from aigw.policies.values import text_of

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext


class QuotaByKeyConfig(PolicyConfig):
    calls: int | None = Field(None, gt=0)
    bandwidth: int | None = Field(None, gt=0)  # kilobytes
    renewal_period: int = Field(gt=0)
    counter_key: str = Field(min_length=1)
    increment_condition: str | None = None
    first_period_start: datetime | None = None
    on_store_error: StoreErrorMode = "fail-closed"

    @model_validator(mode="after")
    def _something(self) -> QuotaByKeyConfig:
        if self.calls is None and self.bandwidth is None:
            raise ValueError("give 'calls', 'bandwidth', or both")
        return self


@register("quota-by-key")
class QuotaByKey(Policy):
    config_model = QuotaByKeyConfig
    enforcing = True
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, QuotaByKeyConfig)
        super().__init__(config, build)
        self.config = config
        self.counter_key = build.value(config.counter_key, ".counter-key")
        self.condition = (
            build.condition(config.increment_condition, ".increment-condition")
            if config.increment_condition
            else None
        )
        start = config.first_period_start
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.first_start = start.timestamp() if start is not None else 0.0
        self.store = counter_store(build)
        self.writes = pending_writes(build)
        # Only a bandwidth quota needs to see the response body go by; without it, relayed
        # responses keep their Content-Length and skip the per-chunk call.
        self.chunk_hook_active = config.bandwidth is not None

    async def apply(self, ctx: RequestContext) -> Response | None:
        key = text_of(self.counter_key, ctx)
        if not key:
            raise ExpressionEvaluationFailure(detail=f"{self.name}: counter-key is empty")
        now = ctx.clock.now().timestamp()
        start, end = fixed_period(now, float(self.config.renewal_period), self.first_start)
        config = self.config
        try:
            if config.calls is not None:
                cost = 0 if self.condition is not None else 1
                taken = await self.store.period_take(
                    f"quota-calls:{key}", start, end, config.calls, cost, now
                )
                if not taken.allowed:
                    self._refuse(ctx, "Out of call volume quota", end - now)
            if config.bandwidth is not None:
                taken = await self.store.period_take(
                    f"quota-kb:{key}", start, end, config.bandwidth, 0, now
                )
                if not taken.allowed:
                    self._refuse(ctx, "Out of bandwidth quota", end - now)
        except CounterStoreUnavailable as exc:
            store_failure(ctx, self.name, config.on_store_error, exc)
            return None
        ctx.policy_state[self] = (key, start, end)
        return None

    def _refuse(self, ctx: RequestContext, what: str, seconds: float) -> None:
        left = max(0, math.ceil(seconds))
        hours, rest = divmod(left, 3600)
        error = GatewayError(
            f"{what}. Quota will be replenished in {hours:02d}:{rest // 60:02d}:{rest % 60:02d}.",
            status_code=403,
            reason="QuotaExceeded",
            source=self.name,
            headers=[("retry-after", str(max(1, left)))],
        )
        if not self.shadow:
            raise error
        record_shadow_rejection(ctx, self, error)

    def on_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        if self.config.bandwidth is not None:
            ctx.policy_state[(self, "bytes")] = ctx.policy_state.get((self, "bytes"), 0) + len(
                chunk
            )
        return chunk

    async def on_complete(self, ctx: RequestContext) -> None:
        state = ctx.policy_state.get(self)
        if state is None:
            return
        if self.condition is not None and self.condition.evaluate(ctx) is not True:
            return
        kilobytes = 0
        if self.config.bandwidth is not None:
            response = ctx.response
            sent = len(response.body) if response is not None and response.stream is None else 0
            total = len(ctx.request.body) + sent + ctx.policy_state.get((self, "bytes"), 0)
            kilobytes = math.ceil(total / 1024)
        # Counted after the response, off the connection's path, as token corrections are.
        key, start, end = state
        self.writes.submit(self._count(key, start, end, kilobytes))

    async def _count(self, key: str, start: float, end: float, kilobytes: int) -> None:
        try:
            if self.config.calls is not None and self.condition is not None:
                await self.store.period_adjust(f"quota-calls:{key}", start, end, 1)
            if kilobytes:
                await self.store.period_adjust(f"quota-kb:{key}", start, end, kilobytes)
        except CounterStoreUnavailable as exc:
            log.warning("%s: could not count a call: %s", self.name, exc)

    def describe(self) -> str:
        config = self.config
        limits = []
        if config.calls:
            limits.append(f"{config.calls} calls")
        if config.bandwidth:
            limits.append(f"{config.bandwidth} KB")
        return (
            f"{super().describe()} key={self.counter_key.source} "
            f"{' + '.join(limits)}/{config.renewal_period}s"
        )
