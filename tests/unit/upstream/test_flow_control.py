"""A fast backend and a slow reader: the socket stops being read while too much is unread, so
the gateway's memory holds a bounded part of the body, and the whole body still arrives."""

from __future__ import annotations

import asyncio
import hashlib
import os

from aigw.upstream.client import UpstreamClient, origin_of
from aigw.upstream.connection import HIGH_WATER, UpstreamConnection
from aigw.upstream.pool import ConnectionPool, Origin
from tests.unit.upstream.scripted_server import Peer, serving
from tests.unit.upstream.sending import send

BODY = os.urandom(10 * 1024 * 1024)
# One read from the socket can land on top of HIGH_WATER unread bytes before reading pauses
# (asyncio and uvloop read at most 256 KiB at a time).
MOST_UNREAD = HIGH_WATER + 256 * 1024


class RecordingPool(ConnectionPool):
    """Remembers the connections it hands out, to look at their transports."""

    def __init__(self, origin: Origin) -> None:
        super().__init__(origin, 1, connect_timeout=0.3, pool_timeout=0.3)
        self.handed_out: list[UpstreamConnection] = []

    async def acquire(self) -> UpstreamConnection:
        conn = await super().acquire()
        self.handed_out.append(conn)
        return conn


async def flood(peer: Peer) -> None:
    await peer.read_request()
    await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY)
    await peer.wait_eof()


async def test_a_slow_reader_pauses_the_socket_and_gets_the_whole_body() -> None:
    async with serving(flood) as server:
        pool = RecordingPool(origin_of(server.url())[0])
        try:
            response = await send(UpstreamClient(pool, read_timeout=0.3))
            transport = pool.handed_out[0].transport
            assert transport is not None
            digest = hashlib.sha256()
            paused_seen = False
            largest = 0
            async for chunk in response:
                digest.update(chunk)
                largest = max(largest, len(chunk))
                await asyncio.sleep(0.002)  # the slow reader: the backend sends much faster
                paused_seen = paused_seen or not transport.is_reading()
            response.release()
            assert digest.digest() == hashlib.sha256(BODY).digest()
            assert paused_seen
            assert largest <= MOST_UNREAD  # never more than that was unread in memory
            assert transport.is_reading()  # resumed, and the connection kept
            assert pool.idle == 1
        finally:
            pool.close()
