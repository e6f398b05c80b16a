"""A small error answer that nobody read (a 429 a pool fails over) keeps its connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from aigw.backends.http import HttpBackend
from aigw.config.model import BackendConfig
from tests.unit.policies.conftest import make_ctx


class Throttling:
    def __init__(self) -> None:
        self.connections: set[object] = set()  # client ports: one per TCP connection
        self.big = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.connections.add(request.transport.get_extra_info("peername")[1])
        body = b"x" * (200_000 if self.big else 8_000)
        response = web.StreamResponse(status=429, headers={"retry-after": "1"})
        response.content_length = len(body)
        await response.prepare(request)
        await asyncio.sleep(0.02)  # the body comes after the head, as from a real backend
        await response.write(body)
        await response.write_eof()
        return response


@pytest.fixture
async def server() -> AsyncIterator[tuple[Throttling, str]]:
    throttling = Throttling()
    app = web.Application()
    app.router.add_post("/{tail:.*}", throttling.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield throttling, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def send_unread(backend: HttpBackend) -> None:
    ctx = make_ctx()
    response = await backend.send(ctx)
    assert response.status_code == 429
    await response.aclose()  # released without reading the body


async def test_unread_small_error_answers_leave_the_connection_reusable(
    server: tuple[Throttling, str],
) -> None:
    throttling, url = server
    backend = HttpBackend("b", BackendConfig.model_validate({"url": url}))
    await backend.start()
    try:
        for _ in range(5):
            await send_unread(backend)
        assert len(throttling.connections) == 1
        # A large unread body is not worth reading: its connection is dropped, so the next
        # request needs a new one.
        throttling.big = True
        await send_unread(backend)
        await send_unread(backend)
        assert len(throttling.connections) == 2
    finally:
        await backend.close()
