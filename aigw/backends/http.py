"""An HTTP backend: one pool of keep-alive connections per backend (aigw.upstream)."""

from __future__ import annotations

import asyncio
import contextlib

from aigw.backends.credentials import BackendCredential, credential_header
from aigw.config.model import BackendConfig
from aigw.context import RequestContext, Response
from aigw.errors import BackendTimeout
from aigw.headers import HOP_BY_HOP, Headers
from aigw.identity.headers import (
    CALLER_CREDENTIALS,
    gateway_authenticated,
    without_query_credentials,
)
from aigw.upstream.client import UpstreamClient, UpstreamResponse, encode_request, origin_of
from aigw.upstream.pool import ConnectionPool

# Never forwarded upstream: framing is recomputed, Host comes from the backend URL.
_REQUEST_SKIP = HOP_BY_HOP | {"host", "content-length", "expect", "x-forwarded-for"}
# When the gateway authenticates the request itself (see aigw/backends/credentials.py).
_AUTHENTICATED_SKIP = _REQUEST_SKIP | {"cookie"}


class HttpBackend:
    def __init__(
        self, backend_id: str, config: BackendConfig, credential: BackendCredential | None = None
    ) -> None:
        assert config.url is not None
        self.id = backend_id
        self.credential = credential
        self._skip = (
            _AUTHENTICATED_SKIP | CALLER_CREDENTIALS | {credential.header}
            if credential is not None
            else _REQUEST_SKIP
        )
        self.base_url = config.url.rstrip("/")
        self._origin, self._base_path = origin_of(self.base_url)
        self._config = config
        self._client: UpstreamClient | None = None

    async def start(self) -> None:
        if self._client is None:
            config = self._config
            limit = config.max_connections
            if config.max_connections_per_host:  # one origin per backend: the smaller bound
                limit = min(limit, config.max_connections_per_host)
            pool = ConnectionPool(
                self._origin,
                limit,
                connect_timeout=config.timeouts.connect,
                pool_timeout=config.timeouts.pool,
                # Shorter than common backends' own idle timeout (uvicorn/vLLM: 5 s), so a
                # pooled connection is not reused just as the backend closes it.
                keepalive=4.0,
            )
            self._client = UpstreamClient(pool, read_timeout=config.timeouts.read)

    async def close(self) -> None:
        if self._client is not None:
            self._client.pool.close()
            self._client = None

    def target_for(self, ctx: RequestContext, authenticated: bool = False) -> str:
        """The request target: the backend URL's path, the request's backend path, the
        query. Already encoded: sent as is, never normalised (no `..` resolution)."""
        request = ctx.request
        target = self._base_path + request.backend_path
        query = request.query_string
        if authenticated:  # the gateway's credential goes alone: no caller key in the query
            query = without_query_credentials(query)
        if query:
            target += "?" + query
        return target or "/"

    async def send(self, ctx: RequestContext) -> Response:
        if self._client is None:
            await self.start()
        assert self._client is not None
        request = ctx.request
        authenticated = self.credential is not None or gateway_authenticated(ctx)
        if self.credential is not None:
            # Applied after every policy: neither the caller nor a policy can replace it.
            credential = await credential_header(self.id, self.credential)
            skip = self._skip
        else:
            credential = None
            skip = _AUTHENTICATED_SKIP if authenticated else _REQUEST_SKIP
        headers = [(k, v) for k, v in request.headers.forwardable() if k not in skip]
        if credential is not None:
            headers.append(credential)
        if request.client_ip:
            # Append the peer we saw; what the client claimed stays in front of it.
            claimed = request.headers.get_joined("x-forwarded-for")
            peer = request.client_ip
            headers.append(("x-forwarded-for", f"{claimed}, {peer}" if claimed else peer))
        body = request.body
        method = request.method
        data = encode_request(
            method,
            self.target_for(ctx, authenticated),
            self._origin.authority,
            headers,
            body if body or method not in ("GET", "HEAD") else None,
        )

        def sent() -> None:
            ctx.backend_has_request = True

        upstream = await self._client.send(method, data, sent)
        if upstream.status >= 400:
            ctx.backend_has_request = False  # refused: nothing the backend bills
        response_headers = Headers.from_asgi(upstream.raw_headers).without_hop_by_hop()

        async def release() -> None:
            # A body read to the end returns the connection to the pool; otherwise drop it.
            # A small error answer nobody read (a 429 a pool fails over) is read first, so
            # its keep-alive connection is reused rather than closed.
            if not upstream.at_eof() and _small_error(upstream):
                await _drop_body(upstream)
            upstream.release()

        return Response(
            upstream.status,
            response_headers,
            stream=upstream,
            release=release,
            from_backend=True,
        )

    async def probe(self, path: str, seconds: float) -> int:
        """A health probe: `GET {url}{path}` with no request's data, within `seconds`; its
        status (the body is read, at most 64 KiB, and dropped). Raises what `send` raises."""
        if self._client is None:
            await self.start()
        assert self._client is not None
        headers = [("user-agent", "aigw-health-check")]
        if self.credential is not None:
            # A probe of an authenticated backend authenticates too (else every probe 401s).
            headers.append(await credential_header(self.id, self.credential))
        data = encode_request(
            "GET", (self._base_path + path) or "/", self._origin.authority, headers, None
        )
        try:
            async with asyncio.timeout(seconds):
                upstream = await self._client.send("GET", data)
                try:
                    read = 0
                    async for chunk in upstream:
                        read += len(chunk)
                        if read > PROBE_BODY_BYTES:
                            break  # a big body is not worth reading to keep the connection
                finally:
                    upstream.release()
                return upstream.status
        except TimeoutError:
            raise BackendTimeout() from None


PROBE_BODY_BYTES = 64 * 1024

DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0


async def _drop_body(upstream: UpstreamResponse) -> None:
    """Read an unread body to its end and drop it, so its connection can be reused. Usually
    it came with its head and is dropped without a wait; else it gets DRAIN_SECONDS."""
    if upstream.drop_body_if_arrived():
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_SECONDS):
            await upstream.read_rest()


def _small_error(upstream: UpstreamResponse) -> bool:
    length = upstream.content_length
    return upstream.status >= 400 and length is not None and length <= DRAIN_BYTES
