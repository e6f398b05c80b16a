"""Runs a chain for one request: inbound → backend → terminal step → outbound, or on-error.

The executor knows sections and the terminal step, never individual policies. Streaming and
completion hooks are driven by the app through `relay_chunk` and `complete`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aigw.context import LastError, RequestContext, Response
from aigw.errors import GatewayError
from aigw.pipeline.chain import Chain
from aigw.pipeline.errors import error_response
from aigw.policies.base import run_statements
from aigw.telemetry.record import StepTiming

log = logging.getLogger("aigw.pipeline")

Terminal = Callable[[RequestContext], Awaitable[Response]]


async def execute(chain: Chain, ctx: RequestContext, terminal: Terminal) -> Response:
    try:
        return await _run_sections(chain, ctx, terminal)
    except GatewayError as exc:
        return await handle_error(chain, ctx, exc)
    except Exception:  # a bug, not a caller's fault: log it, show nothing internal
        log.exception("unhandled error in section %s (request %s)", ctx.section, ctx.request_id)
        return await handle_error(chain, ctx, GatewayError(source=ctx.section))


async def _run_sections(chain: Chain, ctx: RequestContext, terminal: Terminal) -> Response:
    ctx.section = "inbound"
    result = await run_statements(chain.inbound, ctx)
    if result is not None:
        return result
    ctx.section = "backend"
    result = await run_statements(chain.backend, ctx)
    if result is not None:
        return result
    ctx.response = await (terminal(ctx) if ctx.steps is None else _timed_terminal(terminal, ctx))
    if ctx.usage_meter is not None:  # first, so policies' response hooks see the usage
        ctx.response = await ctx.usage_meter.on_response(ctx.response)
    for policy in ctx.observers:
        if policy.observes_response:
            ctx.response = await policy.on_response(ctx, ctx.response)
    ctx.section = "outbound"
    result = await run_statements(chain.outbound, ctx)
    if result is not None:
        await _discard_upstream(ctx, result)
        return result
    return ctx.response


async def _timed_terminal(terminal: Terminal, ctx: RequestContext) -> Response:
    """The backend call, with its timing kept for the request's trace."""
    started, outcome = ctx.clock.monotonic(), "error"
    try:
        response = await terminal(ctx)
        outcome = "ok" if response.status_code < 500 else "error"
        return response
    finally:
        if ctx.steps is not None:
            ctx.steps.append(
                StepTiming("backend", "terminal", started, ctx.clock.monotonic(), outcome)
            )


async def handle_error(chain: Chain, ctx: RequestContext, exc: GatewayError) -> Response:
    """Record `exc` as LastError and run the chain's on-error section on it."""
    section = ctx.section
    ctx.last_error = LastError.from_error(exc, section)
    if exc.detail:
        log.warning("%s in %s (request %s): %s", exc.reason, section, ctx.request_id, exc.detail)
    if ctx.response is not None:
        await ctx.response.aclose()
    ctx.response = error_response(exc)
    if not chain.on_error or section == "on-error":
        return ctx.response
    ctx.section = "on-error"
    try:
        result = await run_statements(chain.on_error, ctx)
    except GatewayError as second:
        log.warning("on-error section failed (request %s): %s", ctx.request_id, second.reason)
        return error_response(second)
    except Exception:
        log.exception("unhandled error in on-error (request %s)", ctx.request_id)
        return error_response(GatewayError())
    return result if result is not None else ctx.response


async def _discard_upstream(ctx: RequestContext, replacement: Response) -> None:
    """An outbound `return-response` replaces the backend's response: free its connection."""
    if ctx.response is not None and ctx.response is not replacement:
        await ctx.response.aclose()
    ctx.response = replacement


async def complete(ctx: RequestContext) -> None:
    """Run every registered completion hook once; one failing hook never skips the others."""
    if ctx.usage_meter is not None:
        try:
            # Once, before the hooks that settle usage.
            await ctx.usage_meter.finish(
                client_left=ctx.client_disconnected, backend_had_request=ctx.backend_has_request
            )
        except Exception:
            log.exception("counting usage failed (request %s)", ctx.request_id)
    for policy in ctx.observers:
        if policy.observes_completion:
            try:
                await policy.on_complete(ctx)
            except Exception:
                log.exception(
                    "completion hook of %s failed (request %s)", policy.name, ctx.request_id
                )
