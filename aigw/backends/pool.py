"""A pool backend (`type: pool`): pick a member, send, fail over, or answer 503.

    pick (priority, weight, affinity; breakers that cannot send are skipped)
      → send to the member, judged by its breaker
      → 429 / 5xx / unreachable / timeout / no first byte in time:
          release that answer, pick another member not tried yet, send the same body again
      → the first good answer goes back to the pipeline (and is streamed from there: once
        it is returned, nothing is retried)
    nothing to pick at all → 503 with Retry-After = when the soonest member takes traffic

Members are the runtime's own guarded backends, so a member's breaker is the same whether
the request came through this pool, another pool, or straight to the member.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from aigw.backends.guarded import GuardedBackend, fails_over, unavailable
from aigw.backends.selector import PrioritySelector
from aigw.clock import Clock
from aigw.config.model import PoolConfig
from aigw.context import RequestContext, Response
from aigw.errors import GatewayError
from aigw.headers import Headers

log = logging.getLogger("aigw.backends")


class PoolBackend:
    def __init__(
        self, pool_id: str, config: PoolConfig, members: Sequence[GuardedBackend], clock: Clock
    ) -> None:
        self.id = pool_id
        self.members = list(members)
        self.config = config
        self._clock = clock
        self._selector = PrioritySelector(
            [member.priority for member in config.members],
            [member.weight for member in config.members],
        )
        # Each member at most once per request, so never more attempts than members.
        self._max_attempts = min(config.max_attempts or len(members), len(members))
        self._first_byte_timeout = config.first_byte_timeout
        self._breakers = [member.breaker for member in self.members]
        affinity = config.session_affinity
        self._affinity = (
            None if affinity is None else Affinity(pool_id, affinity.cookie, self.members)
        )

    async def start(self) -> None:
        return None  # members are backends of the runtime: it starts and closes them

    async def close(self) -> None:
        return None

    def _available(self, index: int) -> bool:
        return self._breakers[index].can_send()

    async def send(self, ctx: RequestContext) -> Response:
        affinity = self._affinity
        preferred = None if affinity is None else affinity.member_in(ctx.request.headers)
        index = self._selector.pick(self._available, 0, preferred)
        if index is None:
            soonest = min(breaker.available_at() for breaker in self._breakers)
            raise unavailable(soonest, self._clock.monotonic())
        tried = 0
        attempts = 0
        while True:
            attempts += 1
            tried |= 1 << index
            member = self.members[index]
            response: Response | None = None
            error: GatewayError | None = None
            try:
                response = await member.attempt(ctx, self._first_byte_timeout)
            except GatewayError as exc:
                error = exc
            else:
                if not fails_over(response.status_code):
                    if affinity is not None and index != preferred:
                        affinity.stick(response.headers, index)
                    return response
            following = (
                self._selector.pick(self._available, tried)
                if attempts < self._max_attempts
                else None
            )
            if following is None:
                # Nobody left to ask: the caller gets the last answer as it came (a 429 with
                # its own Retry-After), or the last error (502/504, no member named).
                if response is not None:
                    return response
                assert error is not None
                raise error
            if log.isEnabledFor(logging.DEBUG):
                failure = f"status {response.status_code}" if response else repr(error)
                log.debug(
                    "pool %r: member %r failed (%s); trying %r",
                    self.id,
                    member.id,
                    failure,
                    self.members[following].id,
                )
            if response is not None:
                await response.aclose()
            index = following

    def status(self) -> dict[str, Any]:
        now = self._clock.monotonic()
        members = []
        for member, settings in zip(self.members, self.config.members, strict=True):
            counters = member.breaker.counters()
            available_at = member.breaker.available_at()
            members.append(
                {
                    "backend": member.id,
                    "priority": settings.priority,
                    "weight": settings.weight,
                    "state": counters["state"],
                    "reason": counters["reason"],
                    "available": member.breaker.can_send(),
                    "availableInSeconds": round(max(0.0, available_at - now), 3),
                    "inFlight": counters["inFlight"],
                }
            )
        return {
            "id": self.id,
            "type": "pool",
            "available": any(member["available"] for member in members),
            "maxAttempts": self._max_attempts,
            "firstByteTimeout": self._first_byte_timeout,
            "sessionAffinity": None if self._affinity is None else self._affinity.cookie,
            "members": members,
        }


class Affinity:
    """Session affinity by cookie. The cookie holds an opaque token per member (a hash of
    the pool and member ids), never a URL; an unknown or stale token is ignored."""

    def __init__(self, pool_id: str, cookie: str, members: Sequence[GuardedBackend]) -> None:
        self.cookie = cookie
        self._tokens = [
            hashlib.sha256(f"{pool_id}\x00{member.id}".encode()).hexdigest()[:24]
            for member in members
        ]
        self._members = {token: index for index, token in enumerate(self._tokens)}

    def member_in(self, headers: Headers) -> int | None:
        for value in headers.get_all("cookie"):
            for pair in value.split(";"):
                name, _, token = pair.strip().partition("=")
                if name == self.cookie:
                    return self._members.get(token.strip().strip('"'))
        return None

    def stick(self, headers: Headers, index: int) -> None:
        headers.add(
            "set-cookie", f"{self.cookie}={self._tokens[index]}; Path=/; HttpOnly; SameSite=Lax"
        )
