"""A single backend behind its circuit breaker: every attempt is judged and counted.

Every non-pool backend of the runtime is wrapped in one, with or without breaker rules, so
the admin API can show in-flight requests and failures for all of them. Sent to directly, an
open breaker answers 503 without calling the backend; a pool calls `attempt` on the members
it picked and does its own failover. Its health check (if any) runs while it is started.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aigw.backends.base import Backend
from aigw.backends.breaker import CircuitBreaker
from aigw.backends.health import HealthCheck
from aigw.backends.outcome import ErrorReason, Outcome, retry_after_from
from aigw.backends.shared import SharedLink
from aigw.clock import Clock
from aigw.context import RequestContext, Response
from aigw.errors import BackendTimeout, GatewayError


class BackendUnavailable(GatewayError):
    status_code = 503
    reason = "BackendPoolUnavailable"
    default_message = "No backend is available right now"
    source = "forward-request"


def unavailable(available_at: float, now: float) -> BackendUnavailable:
    """The 503 for a tripped backend or pool; Retry-After rounds up, so a client that
    waits as told finds a member taking traffic again."""
    wait = max(1, math.ceil(available_at - now))
    return BackendUnavailable(headers=[("retry-after", str(wait))])


def fails_over(status: int) -> bool:
    """Answers a pool does not pass on while another member may do better."""
    return status == 429 or status >= 500


NO_FIRST_BYTE = "Backend service did not start sending the response in time"

# Outcomes of answers without Retry-After are shared, not built per request.
_PLAIN = tuple(Outcome(status) for status in range(600))


def public_url(url: str) -> str:
    """`scheme://host[:port]/path` of a URL: what the admin API may show of it. A user,
    password, query or fragment is where keys hide (an Azure Functions `?code=`)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class GuardedBackend:
    def __init__(
        self,
        backend: Backend,
        breaker: CircuitBreaker,
        clock: Clock,
        kind: str,
        url: str | None = None,
        health: HealthCheck | None = None,
        shared: SharedLink | None = None,
    ) -> None:
        self.id = backend.id
        self.backend = backend
        self.breaker = breaker
        self.kind = kind
        # Only for status(): forwarding uses the configured URL, never this form.
        self.public_url = None if url is None else public_url(url)
        self.health = health
        self.shared = shared
        self._clock = clock

    async def start(self) -> None:
        await self.backend.start()
        if self.health is not None:
            await self.health.start()

    async def close(self) -> None:
        if self.health is not None:
            await self.health.close()
        await self.backend.close()

    async def send(self, ctx: RequestContext) -> Response:
        if not self.breaker.can_send():
            raise unavailable(self.breaker.available_at(), self._clock.monotonic())
        return await self.attempt(ctx)

    async def attempt(
        self, ctx: RequestContext, first_byte_timeout: float | None = None
    ) -> Response:
        """Send once and judge the answer in the breaker. With `first_byte_timeout`, the
        answer is returned only once its first body byte is in (counted from sending)."""
        breaker = self.breaker
        ticket = breaker.begin()
        outcome: Outcome | None = None
        response: Response | None = None
        try:
            if first_byte_timeout is None:
                response = await self.backend.send(ctx)
            else:
                response = await self._until_first_byte(ctx, first_byte_timeout)
            outcome = self._outcome(response.status_code, response)
        except _Stalled as stalled:
            outcome = _ERRORS[stalled.reason]
            raise stalled.error from None
        except GatewayError as exc:
            outcome = _ERRORS[
                "timeout" if isinstance(exc, BackendTimeout) else "connection-failure"
            ]
            raise
        finally:
            breaker.end(ticket, outcome)
            if response is None:
                breaker.done()
        release = response.release

        async def release_and_count() -> None:
            breaker.done()
            if release is not None:
                await release()

        response.release = release_and_count
        return response

    def _outcome(self, status: int, response: Response) -> Outcome:
        if fails_over(status):
            wait = retry_after_from(response.headers, self._clock.now().timestamp())
            if wait is not None:
                return Outcome(status, None, wait)
        return _PLAIN[status] if 0 <= status < 600 else Outcome(status)

    async def _until_first_byte(self, ctx: RequestContext, seconds: float) -> Response:
        response: Response | None = None
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                response = await self.backend.send(ctx)
                if response.stream is None or fails_over(response.status_code):
                    return response  # failing over does not need its body
                first = await anext(response.stream, None)
        except BaseException as exc:
            if response is not None:
                await response.aclose()
            if isinstance(exc, TimeoutError) and deadline.expired():
                if response is None:
                    raise _Stalled("timeout", BackendTimeout()) from None
                raise _Stalled("stalled", BackendTimeout(NO_FIRST_BYTE)) from None
            if isinstance(exc, GatewayError) and response is not None:
                # The stream broke before its first byte: nothing reached the client yet.
                stalled = isinstance(exc, BackendTimeout)
                raise _Stalled("stalled" if stalled else "connection-failure", exc) from None
            raise
        if first is not None:
            response.stream = _prepend(first, response.stream)
        return response

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = {"id": self.id, "type": self.kind}
        if self.public_url is not None:
            document["url"] = self.public_url
        document.update(self.breaker.counters())
        document["breaker"] = self.breaker.snapshot() if self.breaker.has_rules else None
        document["shared"] = None if self.shared is None else self.shared.status()
        document["healthCheck"] = None if self.health is None else self.health.status()
        return document


class _Stalled(Exception):
    """Inside `attempt` only: how the attempt failed, and the error the caller sees."""

    def __init__(self, reason: ErrorReason, error: GatewayError) -> None:
        self.reason = reason
        self.error = error


_ERRORS: dict[ErrorReason, Outcome] = {
    reason: Outcome(error=reason) for reason in ("connection-failure", "timeout", "stalled")
}


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
