"""One keep-alive connection to a backend: it parses the response as bytes arrive and hands
its head and body to the one reader of the exchange in progress.

The body is queued as it arrives; reading from the socket pauses while a slow client leaves
more than HIGH_WATER bytes unread, so a fast backend cannot fill the gateway's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httptools

from aigw.deadline import Deadline
from aigw.errors import BackendConnectionFailure, BackendProtocolError, GatewayError

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.exchanges = 0  # responses completed on this connection
        self.idle_since = 0.0
        self._paused = False
        self._waiter: asyncio.Future[bool] | None = None
        self._silence = Deadline(loop, self._silent)
        self._begin(head_only=False)

    def _begin(self, head_only: bool) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_received = False
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.error: GatewayError | None = None
        self._head_only = head_only  # a HEAD request: the head is the whole answer
        self._informational = False
        self._until_close = False  # no length and not chunked: the body ends with the socket
        self._body: deque[bytes] = deque()
        self._buffered = 0

    # -- the exchange ---------------------------------------------------------------------

    def send(self, data: bytes, head_only: bool) -> None:
        assert self.transport is not None
        self._begin(head_only)
        self.transport.write(data)

    async def read_head(self, silence: float) -> bool:
        """Wait for the response head; False if `silence` seconds passed without a byte."""
        while not self.head_received:
            if self.error is not None:
                raise self.error
            if not await self._wait(silence):
                return False
        return True

    async def read_chunk(self, silence: float) -> bytes | None:
        """The body bytes that arrived since the last call (waiting for some), b"" at the
        end, None if `silence` seconds passed without a byte."""
        while not self._body:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            if not await self._wait(silence):
                return None
        chunk = self._body.popleft() if len(self._body) == 1 else b"".join(self._drain())
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def drop_body_if_arrived(self) -> bool:
        """Drop a body that arrived whole without being read; True if it had (the response
        is then at its end), False if more is to come (nothing dropped)."""
        if not self.complete:
            return False
        self._body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return True

    def _drain(self) -> list[bytes]:
        parts = list(self._body)
        self._body.clear()
        return parts

    @property
    def body_done(self) -> bool:
        """The whole response arrived and was read."""
        return self.complete and not self._body

    @property
    def finished(self) -> bool:
        """The whole response was read and the connection can take another request."""
        return self.body_done and self.keep_alive and self.error is None and not self.closed

    def close(self) -> None:
        self.closed = True
        self._silence.close()
        if self.transport is not None:
            self.transport.close()

    async def _wait(self, silence: float) -> bool:
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        self._silence.arm(silence)
        try:
            return await waiter
        finally:
            self._waiter = None
            self._silence.disarm()

    def _silent(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _fail(self, error: GatewayError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.close()
        self._wake()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.complete or self.closed:
            # Bytes nobody asked for (after a HEAD answer, or while idle): not trustworthy.
            self.close()
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BackendProtocolError())
        except httptools.HttpParserError:
            self._fail(
                BackendProtocolError("Backend service sent a malformed response")
                if self.head_received
                else BackendProtocolError()
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._silence.close()
        if not self.complete and self.error is None:
            if self.head_received and self._until_close:
                self.complete = True  # the socket's end is the body's end
            elif self.head_received:
                self.error = BackendProtocolError("Backend service sent a truncated response")
            else:
                self.error = BackendConnectionFailure()
        self._wake()

    def pause_writing(self) -> None:  # the request is in memory already: nothing to hold
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._informational = True  # 100 Continue, 103 Early Hints: the answer follows
            self.headers = []
            return
        self.status = status
        self.head_received = True
        if self._head_only:
            self.complete = True  # llhttp would wait for the announced body: never reuse
        elif status not in (204, 304):
            self._until_close = _ends_with_the_connection(self.headers)
        self._wake()

    def on_message_begin(self) -> None:
        if self.complete:
            # More bytes behind a complete answer, in the same read: never take them for a
            # part of it, nor keep the connection whose next answer they would corrupt.
            raise BackendProtocolError()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self._head_only:
            return
        self.complete = True
        self.keep_alive = not self._until_close and self._parser.should_keep_alive()
        self.exchanges += 1
        self._wake()


def _ends_with_the_connection(headers: list[tuple[bytes, bytes]]) -> bool:
    """No Content-Length and no final chunked coding: the body runs to the close
    (RFC 9112 §6.3)."""
    length = chunked = False
    for name, value in headers:
        name = name.lower()
        if name == b"content-length":
            length = True
        elif name == b"transfer-encoding":
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
    return not length and not chunked
