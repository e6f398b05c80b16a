"""`RequestRecord`: what one finished request was, for metrics, traces and the usage ledger.

Built once per request after its response is done (`record_of`), then handed to every sink.
Times are from the request's clock: `started_at` is wall-clock UTC, durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

from aigw.usage.model import Usage

if TYPE_CHECKING:
    from aigw.context import RequestContext


@dataclass(frozen=True, slots=True)
class StepTiming:
    """One policy (or the backend call) as the request ran it, for trace spans."""

    name: str  # the policy's APIM name, or "backend"
    section: str  # inbound, backend, outbound, on-error; "terminal" for the backend call
    start: float  # monotonic seconds, the request clock's
    end: float
    outcome: str = "ok"  # ok, short-circuit (returned a response), error (raised)
    policy_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str  # unique per request handled (the gateway's own id)
    client_request_id: str | None  # the caller's x-request-id, when it sent one
    started_at: datetime  # UTC
    started: float  # monotonic, the request clock's
    method: str
    api_id: str
    api_type: str  # azure-openai, openai, http
    operation_id: str
    subscription_id: str | None
    product_id: str | None
    user_id: str | None
    deployment: str | None
    model: str | None
    backend_id: str | None
    client_ip: str
    status: int
    # The stable reason of the error that ended the request (TokenLimitExceeded, …), if any.
    reason: str | None
    shadow_rejections: tuple[str, ...]
    client_disconnected: bool
    duration: float  # seconds, until the response ended
    time_to_first_byte: float | None  # seconds until the first body chunk went out
    usage: Usage | None  # None: no model answered (or the operation has no usage)
    metered: bool  # an LLM operation whose usage the gateway measured
    cache_hit: bool  # answered from the gateway's cache, not by a backend
    steps: tuple[StepTiming, ...] = ()


MAX_TEXT: Final = 128


def caller_text(value: str | None) -> str | None:
    """Text a caller chose (model, deployment, user): cut to `MAX_TEXT` characters and free
    of NUL, which PostgreSQL refuses, so it can label metrics and fill ledger columns."""
    if value is None or (len(value) <= MAX_TEXT and "\x00" not in value):
        return value
    return value[:MAX_TEXT].replace("\x00", "")


def record_of(
    ctx: RequestContext,
    *,
    method: str,
    status: int,
    duration: float,
    request_id: str,
    client_request_id: str | None,
) -> RequestRecord:
    meter = ctx.usage_meter
    return RequestRecord(
        request_id=request_id,
        client_request_id=client_request_id,
        started_at=ctx.timestamp,
        started=ctx.started,
        method=method,
        api_id=ctx.api.id,
        api_type=ctx.api.type,
        operation_id=ctx.operation.id,
        subscription_id=ctx.subscription.id if ctx.subscription is not None else None,
        product_id=ctx.product.id if ctx.product is not None else None,
        user_id=caller_text(ctx.user.id) if ctx.user is not None else None,
        deployment=caller_text(ctx.deployment_id),
        model=caller_text(ctx.model),
        backend_id=ctx.backend_id,
        client_ip=ctx.request.client_ip,
        status=status,
        reason=ctx.last_error.reason if ctx.last_error is not None else None,
        shadow_rejections=tuple(ctx.shadow_rejections),
        client_disconnected=ctx.client_disconnected,
        duration=duration,
        time_to_first_byte=(
            ctx.first_byte_at - ctx.started if ctx.first_byte_at is not None else None
        ),
        usage=meter.usage if meter is not None else None,
        metered=meter is not None,
        cache_hit=ctx.cache_hit,
        steps=tuple(ctx.steps) if ctx.steps is not None else (),
    )
