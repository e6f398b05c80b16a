"""What every policy is: a typed config model and a class with a request hook.

A policy is built once from its validated config (expressions compiled, references checked)
and then shared by all requests. Its hooks get the per-request context:

- `apply(ctx)` runs when its section runs; return a `Response` to short-circuit, else None.
- `on_response(ctx, response)` sees the backend's response head (and may replace the
  response) before the outbound section runs.
- `on_chunk(ctx, chunk)` sees (and may rewrite) each streamed response chunk.
- `on_complete(ctx)` runs once after the response is done, failed or abandoned; it runs for
  every policy whose `apply` ran, which is where usage gets settled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from aigw.config.model import kebab
from aigw.context import RequestContext, Response
from aigw.errors import GatewayError

log = logging.getLogger("aigw.policies")

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

Section = Literal["inbound", "backend", "outbound", "on-error"]
SECTIONS: tuple[Section, ...] = ("inbound", "backend", "outbound", "on-error")
ALL_SECTIONS: frozenset[str] = frozenset(SECTIONS)


class PolicyConfig(BaseModel):
    """Base of every policy's config: kebab-case keys as in APIM, unknown keys rejected."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=kebab, populate_by_name=True, frozen=True
    )

    id: str | None = None
    # Shadow mode (enforcing policies only): evaluate and record a rejection, never block.
    shadow: bool = False


class Policy:
    name: ClassVar[str] = ""
    config_model: ClassVar[type[PolicyConfig]] = PolicyConfig
    sections: ClassVar[frozenset[str]] = ALL_SECTIONS
    # Policies that reject requests (ip-filter, check-header, limits …) may run in shadow mode.
    enforcing: ClassVar[bool] = False
    # Set automatically: whether the pipeline must call the streaming/completion hooks.
    observes_response: ClassVar[bool] = False
    observes_chunks: ClassVar[bool] = False
    observes_completion: ClassVar[bool] = False
    # A policy whose class has a chunk hook may not need it with its configuration.
    chunk_hook_active: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.observes_response = cls.on_response is not Policy.on_response
        cls.observes_chunks = cls.on_chunk is not Policy.on_chunk
        cls.observes_completion = cls.on_complete is not Policy.on_complete

    def __init__(self, config: PolicyConfig, build: BuildContext) -> None:
        self.policy_id = config.id
        self.shadow = config.shadow

    async def apply(self, ctx: RequestContext) -> Response | None:
        return None

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        return response

    def on_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        return chunk

    async def on_complete(self, ctx: RequestContext) -> None:
        return None

    def describe(self) -> str:
        """One line for `aigw validate`; subclasses add their key attributes."""
        shadow = " [shadow]" if self.shadow else ""
        return self.name + (f" (id={self.policy_id})" if self.policy_id else "") + shadow

    def children(self) -> Sequence[tuple[str, Sequence[Policy]]]:
        """Nested statement lists (for `choose`), for printing the compiled chain."""
        return ()


def record_shadow_rejection(ctx: RequestContext, policy: Policy, exc: GatewayError) -> None:
    """What the policy would have done, for the access log and the operator's log."""
    ctx.shadow_rejections.append(exc.reason)
    log.info(
        "shadow mode: %s would have rejected request %s with %d %s",
        policy.name,
        ctx.request_id,
        exc.status_code,
        exc.reason,
    )


async def run_statements(statements: Sequence[Policy], ctx: RequestContext) -> Response | None:
    """Run statements in order; the first one that returns a response stops the section."""
    for policy in statements:
        if policy.observes_response or policy.observes_chunks or policy.observes_completion:
            ctx.observers.append(policy)
        try:
            result = await (policy.apply(ctx) if ctx.steps is None else _timed(policy, ctx))
        except GatewayError as exc:
            if exc.policy_id is None:
                exc.policy_id = policy.policy_id
            if policy.shadow:
                record_shadow_rejection(ctx, policy, exc)
                continue
            raise
        if result is not None:
            return result
    return None


async def _timed(policy: Policy, ctx: RequestContext) -> Response | None:
    """`policy.apply`, with its timing kept for the request's trace."""
    from aigw.telemetry.record import StepTiming

    section, started, outcome = ctx.section, ctx.clock.monotonic(), "error"
    try:
        result = await policy.apply(ctx)
        outcome = "ok" if result is None else "short-circuit"
        return result
    finally:
        if ctx.steps is not None:
            ctx.steps.append(
                StepTiming(
                    policy.name, section, started, ctx.clock.monotonic(), outcome, policy.policy_id
                )
            )
