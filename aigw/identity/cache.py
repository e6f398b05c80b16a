"""One cached token per (identity, resource): single flight, refreshed ahead of expiry.

- A burst of first requests causes one token request; they all wait for it.
- Once a token has used up most of its life (see `refresh_ahead`), the next request starts
  a refresh in the background and keeps using the cached token meanwhile.
- A failed refresh is logged and retried with exponential back-off (driven by requests);
  requests keep using the cached token while it is valid.
- With no valid token, requests wait for an acquisition; if it fails they get
  `TokenUnavailable`, and until the back-off passes they get it at once, without another
  call to a failing endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aigw.clock import SYSTEM_CLOCK, Clock
from aigw.identity.tokens import AccessToken, TokenProvider, TokenUnavailable
from aigw.telemetry.events import IDENTITY_TOKEN_ACQUISITIONS
from aigw.telemetry.sink import EventSink

log = logging.getLogger("aigw.identity")

REFRESH_FLOOR = 300.0  # refresh with at least 5 minutes left (or half the life, if shorter)
REFRESH_FRACTION = 0.1  # … or 10 % of the life, if that is more
EXPIRY_MARGIN = 30.0  # not sent in its last 30 s (or 5 % of its life): it may expire in transit


def refresh_ahead(lifetime: float) -> float:
    """Seconds before expiry at which a refresh starts."""
    return max(REFRESH_FRACTION * lifetime, min(REFRESH_FLOOR, 0.5 * lifetime))


class TokenCache:
    def __init__(
        self,
        provider: TokenProvider,
        resource: str,
        clock: Clock = SYSTEM_CLOCK,
        *,
        timeout: float = 20.0,
        retry_base: float = 1.0,
        retry_cap: float = 60.0,
        retry_cap_without_token: float = 5.0,
    ) -> None:
        self.provider = provider
        self.resource = resource
        self._clock = clock
        self._timeout = timeout
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._retry_cap_without_token = retry_cap_without_token
        self._token: AccessToken | None = None
        self._usable_until = 0.0
        self._refresh_at = 0.0
        self._flight: asyncio.Task[AccessToken] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: str | None = None
        # For the audit trail and tests: how many acquisitions succeeded and failed.
        self.acquired = 0
        self.failed = 0
        # Where acquisitions are counted as metrics (set by the runtime that owns the cache).
        self.events: EventSink | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        flight, self._flight = self._flight, None
        if flight is not None and not flight.done():
            flight.cancel()
            await asyncio.gather(flight, return_exceptions=True)

    def _now(self) -> float:
        return self._clock.now().timestamp()

    async def get(self) -> AccessToken:
        now = self._now()
        token = self._token
        if token is not None and now < self._usable_until:
            if now >= self._refresh_at and self._flight is None and now >= self._retry_at:
                self._begin()  # in the background: this request goes on with `token`
            return token
        if self._flight is None:
            if now < self._retry_at and self._last_error is not None:
                raise TokenUnavailable(self._last_error)
            self._begin()
        assert self._flight is not None
        # Shielded: a caller that gives up does not cancel the acquisition others wait for.
        return await asyncio.shield(self._flight)

    def _begin(self) -> None:
        flight = asyncio.get_running_loop().create_task(self._acquire())
        self._flight = flight
        flight.add_done_callback(self._landed)

    def _landed(self, flight: asyncio.Task[AccessToken]) -> None:
        if self._flight is flight:
            self._flight = None
        if not flight.cancelled():
            flight.exception()  # retrieved here: a failed background refresh is already logged

    async def _acquire(self) -> AccessToken:
        try:
            async with asyncio.timeout(self._timeout):
                token = await self.provider.token(self.resource)
        except TokenUnavailable as exc:
            raise self._failure(str(exc)) from None
        except TimeoutError:
            raise self._failure(f"no answer within {self._timeout:g} s") from None
        except Exception as exc:  # a provider bug must not leave waiters hanging
            log.exception("token provider %s failed unexpectedly", self.provider.kind)
            raise self._failure(f"unexpected {type(exc).__name__}") from None
        now = self._now()
        if token.expires_on <= now:
            raise self._failure("the identity endpoint returned an expired token")
        self._store(token, now)
        return token

    def _store(self, token: AccessToken, now: float) -> None:
        lifetime = token.expires_on - now
        self._token = token
        self._refresh_at = token.expires_on - refresh_ahead(lifetime)
        self._usable_until = token.expires_on - min(EXPIRY_MARGIN, 0.05 * lifetime)
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = None
        self.acquired += 1
        self._count("ok")
        log.info(
            "backend token acquired",
            extra={
                "identity": self.provider.kind,
                "client_id": self.provider.client_id,
                "resource": self.resource,
                "expires_on": _iso(token.expires_on),
            },
        )

    def _count(self, result: str) -> None:
        if self.events is not None:
            labels = {"identity": self.provider.kind, "result": result}
            self.events.event(IDENTITY_TOKEN_ACQUISITIONS, labels)

    def _failure(self, reason: str) -> TokenUnavailable:
        now = self._now()
        valid = self._token is not None and now < self._usable_until
        cap = self._retry_cap if valid else self._retry_cap_without_token
        delay = min(cap, self._retry_base * 2**self._failures)
        if valid:  # the back-off ends when the token does: then requests must try again
            delay = min(delay, self._usable_until - now)
        self._failures += 1
        self._retry_at = now + delay
        self._count("error")
        message = (
            f"{self.provider.kind} identity"
            + (f" (client id {self.provider.client_id})" if self.provider.client_id else "")
            + f" could not get a token for {self.resource}: {reason}"
        )
        self._last_error = message
        self.failed += 1
        if valid:
            assert self._token is not None
            log.warning(
                "%s; still using the cached token (valid until %s); retrying in %.1f s",
                message,
                _iso(self._token.expires_on),
                delay,
            )
        else:
            log.error(
                "%s; no valid token cached; next attempt in %.1f s at the earliest", message, delay
            )
        return TokenUnavailable(message)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
