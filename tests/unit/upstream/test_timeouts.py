"""Time bounds: the read timeout bounds each silence (not the whole answer), the connect
timeout bounds the TCP connect; a refused connect fails at once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from aigw.errors import BackendConnectionFailure, BackendTimeout
from tests.unit.upstream.scripted_server import WAIT, Peer, serving
from tests.unit.upstream.sending import Clients, body_of, send


async def hold(peer: Peer) -> None:
    """Read the request, never answer."""
    await peer.read_request()
    await peer.wait_eof()


async def test_no_head_within_the_read_timeout_is_a_timeout(clients: Clients) -> None:
    async with serving(hold) as server:
        client = clients(server.url(), read_timeout=0.1)
        with pytest.raises(BackendTimeout):
            async with asyncio.timeout(WAIT):  # a read timeout not kept fails, not hangs
                await send(client)
        assert client.pool.in_use == 0
        await asyncio.wait_for(server.peers[0].eof.wait(), WAIT)  # not left open


async def test_a_body_that_stalls_longer_than_the_read_timeout_is_a_timeout(
    clients: Clients,
) -> None:
    async def stall(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await peer.wait_eof()

    async with serving(stall) as server:
        client = clients(server.url(), read_timeout=0.1)
        response = await send(client)
        chunks = response.__aiter__()
        assert await chunks.__anext__() == b"abc"
        with pytest.raises(BackendTimeout, match="stopped sending"):
            async with asyncio.timeout(WAIT):
                await chunks.__anext__()
        response.release()
        assert client.pool.idle == 0
        await asyncio.wait_for(server.peers[0].eof.wait(), WAIT)


async def test_a_slow_body_with_short_gaps_outlasts_the_read_timeout(clients: Clients) -> None:
    parts = [b"one ", b"two ", b"three ", b"four ", b"five ", b"six"]

    async def trickle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in parts:
            await asyncio.sleep(0.05)
            await peer.send(b"%x\r\n%s\r\n" % (len(part), part))
        await peer.send(b"0\r\n\r\n")
        await peer.wait_eof()

    async with serving(trickle) as server:
        client = clients(server.url(), read_timeout=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await body_of(await send(client)) == b"".join(parts)
        # The premise, not a performance bound: the whole answer took longer than the timeout.
        assert loop.time() - started > 0.2


async def test_a_refused_connect_is_a_connection_failure(clients: Clients) -> None:
    with socket.socket() as bound:  # holds the port: nothing can listen on it meanwhile
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        client = clients(f"http://127.0.0.1:{port}")
        with pytest.raises(BackendConnectionFailure):
            await send(client)
        assert client.pool.in_use == 0


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, so a connect hangs.
    (A 'non-routable' address is not reliable: some sandboxes' proxies accept anything.)"""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # never accepted: it fills the queue
        with socket.socket() as probe:
            probe.settimeout(0.1)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                pass
            else:
                pytest.skip("this kernel accepts connections beyond the listen backlog")
        yield port


async def test_a_connect_that_hangs_is_a_timeout(clients: Clients, full_listener: int) -> None:
    client = clients(f"http://127.0.0.1:{full_listener}", connect_timeout=0.1)
    with pytest.raises(BackendTimeout):
        async with asyncio.timeout(WAIT):  # a connect timeout not kept fails, not hangs
            await send(client)
    assert client.pool.in_use == 0
