"""A scripted HTTP/1.1 server on 127.0.0.1 for the upstream client's tests.

Each test's handler writes the exact response bytes, so framing (lengths, chunks, early
closes, garbage) is under the test's control; the server counts what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

WAIT = 1.0  # the longest a test waits for something the server should see


class Peer:
    """One accepted connection, as the server sees it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: ScriptedServer
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._server = server
        self.requests: list[bytes] = []  # those that came on this connection
        self.eof = asyncio.Event()  # the client closed (or reset) the connection

    async def read_request(self) -> bytes | None:
        """The next request, head and body; None once the client has closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            request = head + await self.reader.readexactly(_content_length(head))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None
        self.requests.append(request)
        await self._server.record(request)
        return request

    async def wait_eof(self) -> None:
        """Until the client closes the connection (anything it still sends is dropped)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.eof.set()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Handler = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.peers: list[Peer] = []  # one per accepted connection
        self.requests: list[bytes] = []
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def connections(self) -> int:
        return len(self.peers)

    def url(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}"

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def record(self, request: bytes) -> None:
        async with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    async def wait_requests(self, count: int) -> None:
        """Until `count` requests have arrived in all."""
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(reader, writer, self)
        self.peers.append(peer)
        try:
            await self._handler(peer)
        except ConnectionError:
            peer.eof.set()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(handler)
    await server.start(tls)
    try:
        yield server
    finally:
        await server.stop()


def answer_each(response: bytes) -> Handler:
    """A handler that answers every request on its connection with the same bytes."""

    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(response)

    return handle


def with_length(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    """A complete Content-Length response; `extra` is header lines, each ending in CRLF."""
    return b"HTTP/1.1 %s\r\n%scontent-length: %d\r\n\r\n%s" % (status, extra, len(body), body)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
