"""`retry`: do something again while a condition holds, with APIM's waits in between.

With nested `policies` (any section) the statements run once, then again while `condition`
holds and fewer than `count` retries were made; a response returned inside ends the section
as usual, and errors go to on-error. Without nested statements, in the backend section, it
plans a retry of the terminal step instead (forwarding is not a policy): the runtime re-sends
the buffered request while the backend's answer meets the condition
(see `aigw.backends.retry_plan`).

The wait before retry n (1-based), as APIM documents it:
- `interval` only: fixed, `interval`;
- `interval` and `delta`: linear, `interval + (n - 1) * delta`;
- `interval`, `delta` and `max-interval`: exponential,
  `interval + (2^(n-1) - 1) * random(0.8 * delta, 1.2 * delta)`, at most `max-interval`;
- `first-fast-retry`: retry 1 does not wait; the later ones wait as above.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from aigw.backends.retry_plan import RETRY_PLAN
from aigw.context import RequestContext, Response
from aigw.policies.base import Policy, PolicyConfig, run_statements
from aigw.policies.registry import register

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

Sleeper = Callable[[float], Awaitable[None]]
Jitter = Callable[[float, float], float]


class RetryConfig(PolicyConfig):
    condition: str = Field(min_length=1)
    count: int = Field(ge=1, le=50)
    interval: float = Field(ge=0, allow_inf_nan=False)
    max_interval: float | None = Field(None, gt=0, allow_inf_nan=False)
    delta: float | None = Field(None, gt=0, allow_inf_nan=False)
    first_fast_retry: bool = False
    policies: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class Backoff:
    """APIM's wait algorithms; which one applies follows from the attributes given."""

    interval: float
    delta: float | None = None
    max_interval: float | None = None
    first_fast_retry: bool = False

    @property
    def algorithm(self) -> str:
        if self.delta is None:
            return "fixed"
        return "linear" if self.max_interval is None else "exponential"

    def seconds(self, retry: int, jitter: Jitter) -> float:
        """The wait before retry number `retry` (1-based)."""
        if retry == 1 and self.first_fast_retry:
            return 0.0
        if self.delta is None:
            return self.interval
        if self.max_interval is None:
            return self.interval + (retry - 1) * self.delta
        step = jitter(0.8 * self.delta, 1.2 * self.delta)
        return min(self.max_interval, self.interval + ((1 << (retry - 1)) - 1) * step)


@register("retry")
class Retry(Policy):
    config_model = RetryConfig

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, RetryConfig)
        super().__init__(config, build)
        self.condition = build.condition(config.condition, ".condition")
        self.retries = config.count
        self.backoff = Backoff(
            config.interval, config.delta, config.max_interval, config.first_fast_retry
        )
        _check_algorithm(config, build)
        # None: retry the terminal step (backend section only).
        self.statements: tuple[Policy, ...] | None = None
        if config.policies is None:
            if build.section != "backend":
                build.error(
                    "retry without 'policies' re-sends the request to the backend, so it is "
                    f"only allowed in the backend section; in '{build.section}' give it the "
                    "statements to retry under 'policies'"
                )
        elif not config.policies:
            build.error(
                "must not be empty (leave it out, in the backend section, to retry forwarding)",
                ".policies",
            )
        else:
            self.statements = tuple(build.nested(config.policies, ".policies"))
        # Replaceable in tests, so waits neither sleep nor vary.
        self.sleep: Sleeper = asyncio.sleep
        self.jitter: Jitter = random.uniform

    async def apply(self, ctx: RequestContext) -> Response | None:
        if self.statements is None:
            ctx.policy_state[RETRY_PLAN] = self  # carried out by the terminal step
            return None
        retry = 0
        try:
            while True:
                result = await run_statements(self.statements, ctx)
                if result is not None or retry >= self.retries or not self.wants_retry(ctx):
                    return result
                retry += 1
                await self.wait(retry)
        finally:
            if retry:
                # A statement that ran again is still one observer: it completes once.
                ctx.observers[:] = dict.fromkeys(ctx.observers)

    # The retry plan of the terminal step (`aigw.backends.retry_plan.RetryPlan`).

    def wants_retry(self, ctx: RequestContext) -> bool:
        return bool(self.condition.evaluate(ctx))

    async def wait(self, retry: int) -> None:
        seconds = self.backoff.seconds(retry, self.jitter)
        if seconds > 0:
            await self.sleep(seconds)

    def describe(self) -> str:
        backoff = self.backoff
        what = "policies" if self.statements is not None else "forwarding"
        fast = ", first fast" if backoff.first_fast_retry else ""
        return (
            f"{super().describe()} ({what} up to {self.retries}x while "
            f"{self.condition.source}; {backoff.algorithm} from {backoff.interval:g}s{fast})"
        )

    def children(self) -> Sequence[tuple[str, Sequence[Policy]]]:
        return [("policies", self.statements)] if self.statements else []


def _check_algorithm(config: RetryConfig, build: BuildContext) -> None:
    if config.max_interval is None:
        return
    if config.delta is None:
        build.error(
            "needs delta: interval, delta and max-interval together select the exponential "
            "wait (interval and delta alone: linear)",
            ".max-interval",
        )
    elif config.max_interval < config.interval:
        build.error("must not be less than interval", ".max-interval")
