"""Keep-alive connections to one backend origin, at most `limit` at a time.

The most recently used idle connection is taken first (its socket is warm); one that has
been idle longer than `keepalive` seconds is closed rather than reused, since the backend
may be closing it at that very moment (uvicorn and vLLM close after 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

from aigw.errors import BackendConnectionFailure, BackendTimeout
from aigw.upstream.connection import UpstreamConnection


@dataclass(frozen=True, slots=True)
class Origin:
    host: str  # for the socket: a name or an IP address without brackets
    port: int
    tls: bool
    authority: str  # the Host header


@lru_cache(maxsize=1)
def default_tls_context() -> ssl.SSLContext:
    """The system's trust store (SSL_CERT_FILE / SSL_CERT_DIR are honoured), built once."""
    return ssl.create_default_context()


class ConnectionPool:
    def __init__(
        self,
        origin: Origin,
        limit: int,
        connect_timeout: float,
        pool_timeout: float,
        keepalive: float = 4.0,
    ) -> None:
        self.origin = origin
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._keepalive = keepalive
        self._idle: list[UpstreamConnection] = []
        self._in_use = 0  # connected or connecting, not idle
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> UpstreamConnection:
        deadline: float | None = None
        while True:
            # Idle times on time.monotonic(): CPython 3.11's get_running_loop() costs a
            # getpid() system call, twice per exchange; the loop is needed only below.
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()
                if conn.closed or now - conn.idle_since > self._keepalive:
                    conn.close()
                    continue
                self._in_use += 1
                return conn
            loop = self._loop = asyncio.get_running_loop()
            if self._in_use < self._limit:
                self._in_use += 1
                try:
                    return await self._connect(loop)
                except BaseException:
                    self._in_use -= 1
                    self._wake_one()
                    raise
            if deadline is None:
                deadline = loop.time() + self._pool_timeout
            await self._wait_for_a_connection(loop, deadline)

    def release(self, conn: UpstreamConnection) -> None:
        """Give back a connection after its exchange: kept if its response was read to the
        end and both sides allow keep-alive, closed otherwise."""
        self._in_use -= 1
        if conn.finished and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            if self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(self._keepalive, self._expire)
        else:
            conn.close()
        self._wake_one()

    def discard(self, conn: UpstreamConnection) -> None:
        """Give back a connection that must not be reused, whatever its state."""
        conn.close()
        self.release(conn)

    def abandon(self, conn: UpstreamConnection) -> None:
        """A response dropped without `release` (a bug): close its connection and free its
        slot, from wherever the garbage collector runs, so the pool cannot leak away."""
        conn.close()
        self._in_use -= 1
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_one)

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        origin = self.origin
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(loop),
                    origin.host,
                    origin.port,
                    ssl=default_tls_context() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
        except TimeoutError:
            raise BackendTimeout() from None
        except (OSError, ValueError):  # refused, unreachable, DNS, TLS (ssl.SSLError)
            raise BackendConnectionFailure() from None
        return conn

    async def _wait_for_a_connection(
        self, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # a connection came free just too late for us: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):  # unless a wake-up skipped it already
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise BackendTimeout() from None
            raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _expire(self) -> None:
        self._sweep = None
        now = time.monotonic()
        keep = []
        for conn in self._idle:
            if conn.closed or now - conn.idle_since > self._keepalive:
                conn.close()
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            oldest = min(conn.idle_since for conn in keep)
            delay = max(oldest + self._keepalive - now, 0.05)
            self._sweep = asyncio.get_running_loop().call_later(delay, self._expire)
