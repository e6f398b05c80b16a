"""`ctx.backend_has_request`: set once the request is written to the backend, not while it
waits for a connection; cleared when the backend refuses it (what it bills follows)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from aigw.backends.http import HttpBackend
from aigw.config.model import BackendConfig
from tests.unit.backends.loopback import serving
from tests.unit.policies.conftest import make_ctx


class Backend:
    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.answer = asyncio.Event()
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived.set()
        await self.answer.wait()
        return web.Response(status=self.status, body=b"{}", content_type="application/json")


@pytest.fixture
async def served() -> AsyncIterator[tuple[Backend, HttpBackend]]:
    backend = Backend()
    async with serving(backend.handle) as url:
        config = BackendConfig.model_validate({"url": url, "max-connections": 1})
        client = HttpBackend("b", config)
        await client.start()
        yield backend, client
        backend.answer.set()
        await client.close()


async def test_a_request_waiting_for_a_connection_is_not_with_the_backend(
    served: tuple[Backend, HttpBackend],
) -> None:
    backend, client = served
    first = make_ctx()
    holding = asyncio.create_task(client.send(first))  # takes the only connection
    await asyncio.wait_for(backend.arrived.wait(), 2)
    assert first.backend_has_request
    queued = make_ctx()
    waiting = asyncio.create_task(client.send(queued))
    await asyncio.sleep(0.05)
    waiting.cancel()  # the client left while its request waited for the connection
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not queued.backend_has_request
    backend.answer.set()
    await (await holding).aclose()


@pytest.mark.parametrize(("status", "held"), [(200, True), (429, False), (503, False)])
async def test_an_answer_head_keeps_or_clears_it(
    served: tuple[Backend, HttpBackend], status: int, held: bool
) -> None:
    backend, client = served
    backend.status = status
    backend.answer.set()
    ctx = make_ctx()
    response = await client.send(ctx)
    assert ctx.backend_has_request is held
    await response.aclose()
