"""Sending the same request again when the backend's answer calls for it.

A `retry` statement in the backend section (one without nested statements) leaves a plan for
this request in the context; the terminal step carries it out. Forwarding stays out of the
policy chain, and every attempt happens before the response is returned, so nothing has
reached the client yet: a retry can never repeat part of a stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aigw.context import RequestContext, Response
from aigw.errors import GatewayError
from aigw.headers import Headers

log = logging.getLogger("aigw.backends")

# Where the plan lives in `ctx.policy_state`; the last statement that ran sets it.
RETRY_PLAN = "retry-plan"

Send = Callable[[RequestContext], Awaitable[Response]]


class RetryPlan(Protocol):
    @property
    def retries(self) -> int:
        """Sends allowed after the first one."""
        ...

    def wants_retry(self, ctx: RequestContext) -> bool:
        """Whether to send again, judged with `ctx.response` set to the last answer."""
        ...

    async def wait(self, retry: int) -> None:
        """Pause before retry number `retry` (1-based)."""
        ...


async def send_planned(send: Send, ctx: RequestContext) -> Response:
    """`send(ctx)`, repeated as the request's retry plan says (once if it has none)."""
    plan: RetryPlan | None = ctx.policy_state.get(RETRY_PLAN)
    if plan is None:
        return await send(ctx)
    retry = 0
    while True:
        response, error = await _attempt(send, ctx)
        try:
            again = retry < plan.retries and _judge(plan, ctx, response)
        except BaseException:
            await response.aclose()
            raise
        if not again:
            if error is not None:
                raise error
            return response
        await response.aclose()  # frees the connection; this answer is never relayed
        retry += 1
        log.info(
            "retrying request %s to %s (retry %d of %d) after status %d",
            ctx.request_id,
            ctx.backend_id,
            retry,
            plan.retries,
            response.status_code,
        )
        await plan.wait(retry)


async def _attempt(send: Send, ctx: RequestContext) -> tuple[Response, GatewayError | None]:
    """The backend's answer; no answer (502, 504 …) is judged as one with the error's status."""
    try:
        return await send(ctx), None
    except GatewayError as exc:
        return Response(exc.status_code, Headers(exc.headers)), exc


def _judge(plan: RetryPlan, ctx: RequestContext, response: Response) -> bool:
    previous, ctx.response = ctx.response, response
    try:
        return plan.wants_retry(ctx)
    finally:
        ctx.response = previous
