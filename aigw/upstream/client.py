"""Send one request to a backend origin and hand back its response as it streams in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from aigw.errors import (
    BackendConnectionFailure,
    BackendProtocolError,
    BackendTimeout,
    GatewayError,
)
from aigw.upstream.connection import UpstreamConnection
from aigw.upstream.pool import ConnectionPool, Origin

log = logging.getLogger("aigw.upstream")

# A request that failed on a reused connection before any answer byte is sent again once
# on a new one (the backend closed the idle connection as we wrote), if repeating it is
# harmless. Others fail: a POST may already be running on the backend.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def origin_of(url: str) -> tuple[Origin, str]:
    """The origin of an absolute http(s) URL and its path prefix (no trailing slash)."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    if parts.hostname is None or parts.username is not None:
        raise ValueError("a backend URL needs a host and no user or password")
    default_port = 443 if tls else 80
    port = parts.port or default_port
    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # an internationalised name, as DNS has it
    authority = f"[{host}]" if ":" in host else host
    if port != default_port:  # aiohttp and browsers leave a default port out
        authority += f":{port}"
    return Origin(host, port, tls, authority), parts.path.rstrip("/")


def encode_request(
    method: str,
    target: str,
    authority: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    """The request head (and a small body) as one buffer. `body` None sends no length."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    if fields.count("\n") != len(headers) or "\x00" in fields or fields.count("\r") != len(headers):
        # Policies refuse such values already; a line break here would split the request.
        raise GatewayError("A request header could not be sent to the backend service")
    length = f"content-length: {len(body)}\r\n" if body is not None else ""
    start = f"{method} {target} HTTP/1.1\r\nhost: {authority}\r\n"
    try:
        data = f"{start}{fields}{length}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        # Text a policy set: that header goes as UTF-8; the others stay byte for byte (a
        # client's header arrives as latin-1 text and is re-encoded the same way).
        data = b"".join(
            [start.encode("latin-1"), *(_field(name, value) for name, value in headers)]
        ) + f"{length}\r\n".encode("latin-1")
    return data + body if body else data


def _field(name: str, value: str) -> bytes:
    line = f"{name}: {value}\r\n"
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        return line.encode("utf-8")


class UpstreamResponse:
    """A backend's answer: status and raw headers at once, the body as an async iterator of
    chunks. `release()` must be called once: the connection goes back to the pool only if
    the body was read to its end."""

    __slots__ = ("_conn", "_pool", "_read_timeout", "raw_headers", "status")

    def __init__(self, conn: UpstreamConnection, pool: ConnectionPool, read_timeout: float):
        self.status = conn.status
        self.raw_headers = conn.headers
        self._conn: UpstreamConnection | None = conn
        self._pool = pool
        self._read_timeout = read_timeout

    @property
    def content_length(self) -> int | None:
        for name, value in self.raw_headers:
            if name.lower() == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    def at_eof(self) -> bool:
        return self._conn is None or self._conn.body_done

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        chunk = await conn.read_chunk(self._read_timeout)
        if chunk is None:
            raise BackendTimeout("Backend service stopped sending the response")
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def drop_body_if_arrived(self) -> bool:
        """Drop the unread body if all of it has arrived (no waiting); True if the response
        is at its end now, False if more is to come (nothing dropped)."""
        return self._conn is None or self._conn.drop_body_if_arrived()

    async def read_rest(self) -> None:
        """Read the rest of the body and drop it (to keep the connection)."""
        async for _ in self:
            pass

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.discard(conn)

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            log.warning("a backend response was dropped without being released")
            self._conn = None
            self._pool.abandon(conn)


class UpstreamClient:
    def __init__(self, pool: ConnectionPool, read_timeout: float) -> None:
        self.pool = pool
        self.read_timeout = read_timeout

    async def send(
        self, method: str, data: bytes, on_sent: Callable[[], None] | None = None
    ) -> UpstreamResponse:
        """Send an encoded request (see `encode_request`) and wait for the response head.
        `on_sent` is called once the request is written (not while it waits for a
        connection)."""
        head_only = method == "HEAD"
        for attempt in (1, 2):
            conn = await self.pool.acquire()
            reused = conn.exchanges > 0
            try:
                conn.send(data, head_only)
                if on_sent is not None:
                    on_sent()
                if not await conn.read_head(self.read_timeout):
                    raise BackendTimeout()
                if not 200 <= conn.status <= 599:
                    raise BackendProtocolError()
            except BaseException as exc:
                # Cancelled (the client left), timed out or broken mid-exchange: never reused.
                self.pool.discard(conn)
                stale = isinstance(exc, BackendConnectionFailure) and not conn.received_any
                if attempt == 1 and stale and reused and method in IDEMPOTENT:
                    continue
                raise
            return UpstreamResponse(conn, self.pool, self.read_timeout)
        raise AssertionError("unreachable")
