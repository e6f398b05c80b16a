"""A small error answer that nobody read (a 429 a pool fails over) keeps its connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from aigw.backends.http import HttpBackend
from aigw.config.model import BackendConfig
from aigw.upstream.client import UpstreamResponse
from tests.unit.backends.loopback import serving
from tests.unit.policies.conftest import make_ctx


class Throttling:
    def __init__(self) -> None:
        self.connections: set[object] = set()  # client ports: one per TCP connection
        self.big = False
        self.body_later = True  # else head and body go out in one write
        self.throttling = True

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.connections.add(request.transport.get_extra_info("peername")[1])
        if not self.throttling:
            return web.Response(body=b'{"ok": true}', content_type="application/json")
        body = b"x" * (200_000 if self.big else 8_000)
        if not self.body_later:
            return web.Response(status=429, headers={"retry-after": "1"}, body=body)
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
    async with serving(throttling.handle) as url:
        yield throttling, url


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


async def test_an_error_body_that_came_with_its_head_is_dropped_and_the_connection_reused(
    server: tuple[Throttling, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    throttling, url = server
    throttling.body_later = False
    waited: list[object] = []
    read_rest = UpstreamResponse.read_rest

    async def reading_rest(self: UpstreamResponse) -> None:
        waited.append(self)
        await read_rest(self)

    monkeypatch.setattr(UpstreamResponse, "read_rest", reading_rest)
    backend = HttpBackend("b", BackendConfig.model_validate({"url": url}))
    await backend.start()
    try:
        for _ in range(5):
            await send_unread(backend)
        assert len(throttling.connections) == 1
        assert waited == []  # all there with the head: nothing waited for
        # The connection serves the next answer whole.
        throttling.throttling = False
        response = await backend.send(make_ctx())
        assert response.status_code == 200
        assert await response.read(1_000) == b'{"ok": true}'
        assert len(throttling.connections) == 1
    finally:
        await backend.close()
