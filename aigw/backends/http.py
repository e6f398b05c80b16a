"""An HTTP backend: one pooled keep-alive aiohttp session per backend.

Client-library exceptions are translated into gateway errors here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from aigw.backends.credentials import BackendCredential, credential_header
from aigw.config.model import BackendConfig
from aigw.context import RequestContext, Response
from aigw.errors import BackendConnectionFailure, BackendProtocolError, BackendTimeout
from aigw.headers import HOP_BY_HOP, Headers
from aigw.identity.headers import (
    CALLER_CREDENTIALS,
    gateway_authenticated,
    without_query_credentials,
)

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
        self._config = config
        timeouts = config.timeouts
        # `connect` in aiohttp also counts waiting for a free pooled connection: that wait
        # has its own bound (`pool`), and `sock_connect` is the TCP/TLS connect itself.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.pool + timeouts.connect,
            sock_connect=timeouts.connect,
            sock_read=timeouts.read,
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._config.max_connections,
                limit_per_host=self._config.max_connections_per_host,
                # Shorter than common backends' own idle timeout (uvicorn/vLLM: 5 s), so a
                # pooled connection is not reused just as the backend closes it.
                keepalive_timeout=4,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, ctx: RequestContext, authenticated: bool = False) -> URL:
        request = ctx.request
        url = self.base_url + request.backend_path
        query = request.query_string
        if authenticated:  # the gateway's credential goes alone: no caller key in the query
            query = without_query_credentials(query)
        if query:
            url += "?" + query
        # Already encoded: sent as is, never normalised (no `..` resolution, no re-quoting).
        return URL(url, encoded=True)

    async def send(self, ctx: RequestContext) -> Response:
        if self._session is None:
            await self.start()
        assert self._session is not None
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
        try:
            upstream = await self._session.request(
                request.method,
                self.url_for(ctx, authenticated),
                headers=headers,
                data=body if body or request.method not in ("GET", "HEAD") else None,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise BackendTimeout() from None
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError):
            raise BackendConnectionFailure() from None
        except aiohttp.ClientResponseError:
            raise BackendProtocolError() from None
        except aiohttp.ClientError:
            raise BackendConnectionFailure() from None
        if not 200 <= upstream.status <= 599 or _has_bad_header(upstream.raw_headers):
            # The server could not send these on; better a clear 502 than a broken reply.
            upstream.close()
            raise BackendProtocolError()
        response_headers = Headers.from_asgi(upstream.raw_headers).without_hop_by_hop()

        async def release() -> None:
            # A body read to the end returns the connection to the pool; otherwise drop it.
            # A small error answer nobody read (a 429 a pool fails over) is read first, so
            # its keep-alive connection is reused rather than closed.
            if not upstream.content.at_eof() and _small_error(upstream):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(DRAIN_SECONDS):
                        await upstream.content.read()
            if upstream.content.at_eof():
                upstream.release()
            else:
                upstream.close()

        return Response(
            upstream.status,
            response_headers,
            stream=_relay(upstream),
            release=release,
            from_backend=True,
        )

    async def probe(self, path: str, seconds: float) -> int:
        """A health probe: `GET {url}{path}` with no request's data, within `seconds`; its
        status (the body is read, at most 64 KiB, and dropped). Raises what `send` raises."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        connect = min(self._config.timeouts.connect, seconds)
        headers = {"user-agent": "aigw-health-check"}
        if self.credential is not None:
            # A probe of an authenticated backend authenticates too (else every probe 401s).
            name, value = await credential_header(self.id, self.credential)
            headers[name] = value
        try:
            async with self._session.get(
                URL(self.base_url + path, encoded=True),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=connect),
                allow_redirects=False,
            ) as upstream:
                await upstream.content.read(65536)
                if not upstream.content.at_eof():
                    upstream.close()  # a big body is not worth reading to keep the connection
                return upstream.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise BackendTimeout() from None
        except aiohttp.ClientResponseError:
            raise BackendProtocolError() from None
        except (aiohttp.ClientError, ConnectionError):
            raise BackendConnectionFailure() from None


DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0


def _small_error(upstream: aiohttp.ClientResponse) -> bool:
    length = upstream.content_length
    return upstream.status >= 400 and length is not None and length <= DRAIN_BYTES


# Control characters (other than tab) cannot be relayed in a header value.
_BAD_HEADER_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _has_bad_header(raw: tuple[tuple[bytes, bytes], ...]) -> bool:
    return _BAD_HEADER_BYTES.search(b"\t".join(v for _, v in raw)) is not None


async def _relay(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise BackendTimeout("Backend service stopped sending the response") from None
    except aiohttp.ClientPayloadError:
        raise BackendProtocolError("Backend service sent a truncated response") from None
    except aiohttp.ClientError:
        raise BackendConnectionFailure("Backend service closed the connection") from None
