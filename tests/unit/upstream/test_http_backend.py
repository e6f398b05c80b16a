"""HttpBackend over the upstream client: no cookie jar between callers; health probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from aigw.backends.http import PROBE_BODY_BYTES, HttpBackend
from aigw.config.model import BackendConfig
from tests.unit.policies.conftest import make_ctx
from tests.unit.upstream.scripted_server import WAIT, Peer, answer_each, serving, with_length

Backend = Callable[[str], AbstractAsyncContextManager[HttpBackend]]


@asynccontextmanager
async def started(url: str) -> AsyncIterator[HttpBackend]:
    backend = HttpBackend("b", BackendConfig.model_validate({"url": url}))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def header_names(request: bytes) -> list[bytes]:
    head = request.split(b"\r\n\r\n", 1)[0]
    return [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:]]


async def test_a_cookie_the_backend_set_is_never_sent_with_a_later_request() -> None:
    answer = with_length(b"{}", extra=b"Set-Cookie: session=caller-one; Path=/\r\n")
    async with serving(answer_each(answer)) as server, started(server.url(host="localhost")) as b:
        for _ in range(2):
            response = await b.send(make_ctx())
            assert response.status_code == 200
            assert response.headers.get("set-cookie") == "session=caller-one; Path=/"
            assert await response.read(1024) == b"{}"
        assert len(server.requests) == 2
        assert b"cookie" not in header_names(server.requests[1])
        assert server.requests[1].startswith(b"POST /chat/completions HTTP/1.1\r\nhost: localhost:")


async def test_a_probe_returns_the_status_and_keeps_the_connection_after_a_small_body() -> None:
    answer = with_length(b'{"status": "down"}', b"503 Service Unavailable")
    async with serving(answer_each(answer)) as server, started(server.url() + "/base/") as b:
        assert await b.probe("/health", 1.0) == 503
        assert await b.probe("/health", 1.0) == 503
        assert server.connections == 1
        request = server.requests[0]
        assert request.startswith(b"GET /base/health HTTP/1.1\r\n")
        assert b"\r\nuser-agent: aigw-health-check\r\n" in request
        assert b"content-length" not in header_names(request)


async def test_a_probe_stops_reading_an_endless_body() -> None:
    sent = 0

    async def endless(peer: Peer) -> None:
        nonlocal sent
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"x" * 4096
        while True:  # until the client drops the connection
            await peer.send(b"1000\r\n%s\r\n" % chunk)
            sent += len(chunk)

    async with serving(endless) as server, started(server.url()) as b:
        # Reading on would end in a timeout after 1 s: the status means it stopped.
        assert await b.probe("/", 1.0) == 200
        await asyncio.wait_for(server.peers[0].eof.wait(), WAIT)
        assert sent > PROBE_BODY_BYTES
