"""Dropping an unread body without waiting for it (a 429 a pool fails over): only once all
of it is in, and never at the cost of the next answer on the connection."""

from __future__ import annotations

import asyncio

from tests.unit.upstream.scripted_server import Peer, serving, with_length
from tests.unit.upstream.sending import Clients, body_of, send


async def settle() -> None:
    """Let the loop hand the client what the server has sent so far."""
    for _ in range(20):
        await asyncio.sleep(0.005)


async def test_a_body_that_came_with_its_head_is_dropped_and_the_next_answer_is_whole(
    clients: Clients,
) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(with_length(b"throttled, retry later", b"429 Too Many Requests"))
        await peer.read_request()
        await peer.send(with_length(b"hello"))
        await peer.read_request()

    async with serving(handle) as server:
        client = clients(server.url())
        throttled = await send(client)
        await settle()
        assert throttled.drop_body_if_arrived()
        assert throttled.at_eof()
        throttled.release()
        assert await body_of(await send(client)) == b"hello"
        assert server.connections == 1


async def test_a_body_still_on_its_way_is_not_dropped(clients: Clients) -> None:
    go_on = asyncio.Event()

    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 10\r\n\r\nfirst")
        await go_on.wait()
        await peer.send(b" half")
        await peer.read_request()

    async with serving(handle) as server:
        client = clients(server.url())
        throttled = await send(client)
        await settle()
        assert not throttled.drop_body_if_arrived()
        go_on.set()
        assert await body_of(throttled) == b"first half"  # nothing was lost


async def test_a_body_that_ended_with_the_socket_is_dropped_and_its_connection_not_reused(
    clients: Clients,
) -> None:
    async def handle(peer: Peer) -> None:
        if await peer.read_request() is None:
            return
        await peer.send(b"HTTP/1.1 503 Service Unavailable\r\n\r\nbusy")
        peer.writer.close()

    async with serving(handle) as server:
        client = clients(server.url())
        first = await send(client)
        await settle()
        assert first.drop_body_if_arrived()
        first.release()
        second = await send(client)
        assert await body_of(second) == b"busy"
        assert server.connections == 2


async def test_bytes_behind_a_dropped_answer_are_never_taken_for_the_next_one(
    clients: Clients,
) -> None:
    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            # An answer with garbage behind it in the same write: a confused backend.
            await peer.send(with_length(b"slow down", b"429 Too Many Requests") + b"HTTP/1.1 200")

    async with serving(handle) as server:
        client = clients(server.url())
        first = await send(client)
        await settle()
        assert first.drop_body_if_arrived()
        first.release()
        second = await send(client)
        assert second.status == 429
        assert await body_of(second) == b"slow down"
        assert server.connections == 2
