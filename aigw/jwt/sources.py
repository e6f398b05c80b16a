"""Where verification keys come from: the gateway's own config, or an OpenID Connect
provider's discovery document and JWKS.

An OIDC source fetches at start and then every `refresh_interval`; a token naming a key id
it does not know triggers at most one refetch per `unknown_key_cooldown`, shared by all
requests waiting for it (single flight). A failed or invalid fetch (error status, not JSON,
oversized, no usable key, wrong issuer) never replaces a good key set; until a first key set
arrives, no token verifies (fail closed). The gateway never fetches a URL a token names:
only the configured discovery URL and the `jwks_uri` it lists (plain HTTP to loopback only
when the discovery URL is too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import aiohttp

from aigw.jwt.keys import UnusableKey, VerificationKey, fingerprint, keys_from_jwks

log = logging.getLogger("aigw.jwt")

DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class KeySource(Protocol):
    @property
    def issuer(self) -> str | None:
        """The issuer this source vouches for (discovery's `issuer`), if any."""

    def vouches_for(self, issuer: object) -> bool:
        """Whether only this source's keys may verify a token naming `issuer`."""

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]: ...

    async def refetch_for(self, kid: str | None) -> bool:
        """Called when no key matched: refetch if allowed; True if the key set changed."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _matching(keys: Sequence[VerificationKey], kid: str | None, alg: str) -> list[VerificationKey]:
    if kid is not None:
        named = [key for key in keys if key.kid == kid and key.accepts(alg)]
        if named:
            return named
        # A token's kid must name one of our keys; keys without an id may still match.
        return [key for key in keys if key.kid is None and key.accepts(alg)]
    return [key for key in keys if key.accepts(alg)]


class StaticKeys:
    """`issuer-signing-keys` from config: never refreshed."""

    def __init__(self, keys: Sequence[VerificationKey]) -> None:
        self.keys = tuple(keys)

    @property
    def issuer(self) -> str | None:
        return None

    def vouches_for(self, issuer: object) -> bool:
        return self.issuer is not None and issuer == self.issuer

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        return _matching(self.keys, kid, alg)

    async def refetch_for(self, kid: str | None) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class FetchLimits:
    timeout: float = 5.0
    max_bytes: int = 512 * 1024
    refresh_interval: float = 3600.0
    unknown_key_cooldown: float = 300.0
    retry_interval: float = 10.0  # while no key set was ever fetched


class FetchFailed(Exception):
    pass


def check_url(url: str, what: str) -> str:
    """HTTPS, or plain HTTP to this machine only (local providers, tests)."""
    parts = urlsplit(url)
    secure = parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    )
    if secure and parts.hostname:
        return url
    raise ValueError(f"{what} must be an https:// URL (http:// only on loopback): {url!r}")


class OidcKeySource:
    def __init__(self, discovery_url: str, limits: FetchLimits = FetchLimits()) -> None:
        self.discovery_url = check_url(discovery_url, "openid-config url")
        self.limits = limits
        self._issuer: str | None = None
        self._keys: tuple[VerificationKey, ...] = ()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._last_unknown_refetch = -float("inf")
        self.fetches = 0  # successful key set fetches, for tests and logs

    @property
    def issuer(self) -> str | None:
        return self._issuer

    @property
    def ready(self) -> bool:
        return bool(self._keys)

    def vouches_for(self, issuer: object) -> bool:
        # From the URL, not the fetched document: the issuer stays ours while the provider
        # is unreachable, so no other key can speak for it meanwhile.
        return isinstance(issuer, str) and issuer.rstrip("/") + DISCOVERY_SUFFIX == (
            self.discovery_url
        )

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        return _matching(self._keys, kid, alg)

    async def start(self) -> None:
        import aiohttp  # here, not at import: a gateway without OIDC keys never loads it

        timeout = aiohttp.ClientTimeout(total=self.limits.timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        await self._refresh("start")  # a provider that is down at start is retried below
        self._task = asyncio.create_task(self._keep_fresh())

    async def close(self) -> None:
        for task in (self._task, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._inflight = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def refetch_for(self, kid: str | None) -> bool:
        if self._session is None:  # not started, or closed: no key, never a crash
            return False
        if self._inflight is None:
            now = time.monotonic()
            # Until a first key set arrives the background task retries; requests add at
            # most one attempt per retry interval, so a down provider is not hammered.
            gap = self.limits.unknown_key_cooldown if self.ready else self.limits.retry_interval
            if now - self._last_unknown_refetch < gap:
                return False
            self._last_unknown_refetch = now
            log.info("key id %r unknown for %s: fetching keys again", kid, self.discovery_url)
            task = asyncio.create_task(self._refresh("unknown key id"))
            task.add_done_callback(self._fetch_done)
            self._inflight = task
        # Shielded: a caller that goes away must not cancel the fetch others wait for.
        inflight = self._inflight
        try:
            return await asyncio.shield(inflight)
        except asyncio.CancelledError:
            waiter = asyncio.current_task()
            if inflight.cancelled() and waiter is not None and not waiter.cancelling():
                return False  # close() ended the fetch: no new keys, the request fails closed
            raise

    def _fetch_done(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _keep_fresh(self) -> None:
        while True:
            interval = self.limits.refresh_interval if self.ready else self.limits.retry_interval
            await asyncio.sleep(interval)
            await self._refresh("scheduled")

    async def _refresh(self, why: str) -> bool:
        """Fetch discovery and JWKS; replace the key set only with a good one."""
        try:
            issuer, keys = await self._fetch()
        except FetchFailed as exc:
            state = "keeping the previous keys" if self.ready else "no keys yet: tokens fail"
            log.warning(
                "fetching keys from %s failed (%s; %s): %s", self.discovery_url, why, state, exc
            )
            return False
        changed = {fingerprint(k) for k in keys} != {fingerprint(k) for k in self._keys}
        self._issuer, self._keys = issuer, tuple(keys)
        self.fetches += 1
        log.info("loaded %d key(s) from %s (%s)", len(keys), self.discovery_url, why)
        return changed

    async def _fetch(self) -> tuple[str, list[VerificationKey]]:
        discovery = await self._get_json(self.discovery_url)
        issuer = discovery.get("issuer")
        if (
            not isinstance(issuer, str)
            or issuer.rstrip("/") + DISCOVERY_SUFFIX != self.discovery_url
        ):
            raise FetchFailed(f"discovery issuer {issuer!r} does not match its URL")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchFailed("discovery document has no 'jwks_uri'")
        try:
            check_url(jwks_uri, "jwks_uri")
        except ValueError as exc:
            raise FetchFailed(str(exc)) from None
        if urlsplit(jwks_uri).scheme == "http" and urlsplit(self.discovery_url).scheme != "http":
            # Plain HTTP on loopback is for local providers: a remote provider's document
            # must not send the gateway to a port on its own machine.
            raise FetchFailed(f"jwks_uri {jwks_uri!r} is plain HTTP, its provider is not")
        try:
            return issuer, keys_from_jwks(await self._get_json(jwks_uri), jwks_uri)
        except UnusableKey as exc:
            raise FetchFailed(str(exc)) from None

    async def _get_json(self, url: str) -> dict[str, Any]:
        import aiohttp

        assert self._session is not None
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise FetchFailed(f"{url} answered {response.status}")
                limit = self.limits.max_bytes
                if (response.content_length or 0) > limit:
                    raise FetchFailed(f"{url} sent more than {limit} bytes")
                # read(n) returns what has arrived so far, so read until the end or the cap.
                body = b""
                while len(body) <= limit:
                    chunk = await response.content.read(limit + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchFailed(f"{url}: {type(exc).__name__} {exc}".strip()) from None
        if len(body) > self.limits.max_bytes:
            raise FetchFailed(f"{url} sent more than {self.limits.max_bytes} bytes")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise FetchFailed(f"{url} did not send JSON") from None
        if not isinstance(document, dict):
            raise FetchFailed(f"{url} did not send a JSON object")
        return document
