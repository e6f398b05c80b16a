"""How a response's end is found: Content-Length, chunks, the socket's close, no body at all;
and whether its connection is kept for the next request."""

from __future__ import annotations

import asyncio

import pytest

from aigw.errors import BackendProtocolError
from tests.unit.upstream.scripted_server import WAIT, Peer, answer_each, serving, with_length
from tests.unit.upstream.sending import Clients, body_of, send


async def test_a_content_length_answer_keeps_its_raw_headers_and_its_connection(
    clients: Clients,
) -> None:
    answer = (
        b"HTTP/1.1 201 Created\r\n"
        b"X-Request-Id: Abc\r\n"
        b"content-type: text/plain\r\n"
        b"Set-Cookie: a=1\r\n"
        b"set-cookie: b=2\r\n"
        b"Content-Length: 5\r\n"
        b"\r\n"
        b"hello"
    )
    async with serving(answer_each(answer)) as server:
        client = clients(server.url())
        first = await send(client)
        assert first.status == 201
        assert first.raw_headers == [
            (b"X-Request-Id", b"Abc"),
            (b"content-type", b"text/plain"),
            (b"Set-Cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"Content-Length", b"5"),
        ]
        assert first.content_length == 5
        assert await body_of(first) == b"hello"
        assert await body_of(await send(client)) == b"hello"
        assert server.connections == 1
        assert len(server.requests) == 2


async def test_chunks_are_handed_over_as_they_arrive(clients: Clients) -> None:
    first_read = asyncio.Event()

    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await first_read.wait()  # the next chunk exists only once the first was read
            await peer.send(b"6\r\n world\r\n0\r\n\r\n")
            first_read.clear()

    async with serving(handle) as server:
        client = clients(server.url())
        for _ in range(2):
            response = await send(client)
            chunks = response.__aiter__()
            assert await chunks.__anext__() == b"hello"
            first_read.set()
            assert await chunks.__anext__() == b" world"
            with pytest.raises(StopAsyncIteration):
                await chunks.__anext__()
            assert response.at_eof()
            response.release()
        assert server.connections == 1


async def test_a_body_without_length_ends_with_the_socket_and_the_connection_is_dropped(
    clients: Clients,
) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\npart one, ")
        await asyncio.sleep(0.02)
        await peer.send(b"part two")
        peer.writer.close()

    async with serving(handle) as server:
        client = clients(server.url())
        response = await send(client)
        assert response.content_length is None
        assert await body_of(response) == b"part one, part two"
        assert client.pool.idle == 0
        assert await body_of(await send(client)) == b"part one, part two"
        assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    ],
    ids=["http-1.0", "connection-close"],
)
async def test_an_answer_that_refuses_keep_alive_is_not_reused(
    clients: Clients, answer: bytes
) -> None:
    async with serving(answer_each(answer)) as server:
        client = clients(server.url())
        assert await body_of(await send(client)) == b"ok"
        assert await body_of(await send(client)) == b"ok"
        assert server.connections == 2


async def test_a_head_answer_ends_with_its_head_and_its_connection_is_dropped(
    clients: Clients,
) -> None:
    # The announced length is that of the GET's body: none follows.
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"
    async with serving(answer_each(answer)) as server:
        client = clients(server.url())
        response = await send(client, "HEAD")
        assert response.status == 200
        assert response.content_length == 1000
        assert response.at_eof()
        assert await body_of(response) == b""  # at once: waiting would time out instead
        assert client.pool.idle == 0
        assert client.pool.in_use == 0
        await body_of(await send(client, "HEAD"))
        assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\ncontent-length: 1000\r\n\r\n',
    ],
    ids=["204", "304"],
)
async def test_answers_without_a_body_complete_and_keep_their_connection(
    clients: Clients, answer: bytes
) -> None:
    async with serving(answer_each(answer)) as server:
        client = clients(server.url())
        for _ in range(3):
            response = await send(client)
            assert response.status in (204, 304)
            assert response.at_eof()
            assert await body_of(response) == b""
        assert server.connections == 1


@pytest.mark.parametrize("apart", [False, True], ids=["one-packet", "apart"])
async def test_informational_answers_are_skipped_for_the_final_one(
    clients: Clients, apart: bool
) -> None:
    informational = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
    )
    final = b"HTTP/1.1 200 OK\r\nx-final: yes\r\ncontent-length: 2\r\n\r\nok"

    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if apart:
                await peer.send(informational)
                await asyncio.sleep(0.02)
                await peer.send(final)
            else:
                await peer.send(informational + final)

    async with serving(handle) as server:
        client = clients(server.url())
        for _ in range(2):
            response = await send(client)
            assert response.status == 200
            assert response.raw_headers == [(b"x-final", b"yes"), (b"content-length", b"2")]
            assert await body_of(response) == b"ok"
        assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nabcd",
    ],
    ids=["content-length", "chunked-between-chunks", "chunked-inside-a-chunk"],
)
async def test_a_body_cut_short_by_a_close_is_a_truncated_response(
    clients: Clients, answer: bytes
) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(answer)
        await asyncio.sleep(0.02)  # the head is read before the close
        peer.writer.close()

    async with serving(handle) as server:
        client = clients(server.url())
        response = await send(client)
        assert response.status == 200
        received = []
        with pytest.raises(BackendProtocolError, match="truncated"):
            async for chunk in response:
                received.append(chunk)
        response.release()
        assert b"".join(received) == b"abcd"  # what came is still handed over first
        assert client.pool.idle == 0
        assert client.pool.in_use == 0


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 600 Beyond\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 099 Below\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
    ],
    ids=["garbage", "bad-digits", "600", "099", "101", "101-upgrade", "length-and-chunked"],
)
async def test_an_invalid_head_is_a_protocol_error_and_its_connection_is_dropped(
    clients: Clients, answer: bytes
) -> None:
    async with serving(answer_each(answer)) as server:
        client = clients(server.url())
        with pytest.raises(BackendProtocolError):
            await send(client)
        assert client.pool.in_use == 0
        assert client.pool.idle == 0
        await asyncio.wait_for(server.peers[0].eof.wait(), 1.0)


async def test_bytes_after_the_end_of_an_answer_are_not_part_of_it(clients: Clients) -> None:
    # Bytes that follow a complete answer in the same read must not be parsed on as a part
    # of it (two Content-Length headers and a body of b"abcEVIL!"), nor the connection kept.
    answer = with_length(b"abc") + with_length(b"EVIL!")  # one write: one read on loopback
    async with serving(answer_each(answer)) as server:
        client = clients(server.url())
        response = await send(client)
        assert response.raw_headers == [(b"content-length", b"3")]
        assert await body_of(response) == b"abc"
        assert client.pool.idle == 0  # bytes nobody asked for: the connection is not trusted
        assert server.connections == 1


async def test_a_partial_answer_after_the_end_of_one_does_not_break_the_next_request(
    clients: Clients,
) -> None:
    # A stray partial head behind an answer must not stay in the parser of a pooled
    # connection, where the next request's valid answer would be parsed after it.
    answer = with_length(b"abc") + b"HTTP/1.1 200 OK\r\n"
    async with serving(answer_each(answer)) as server:
        client = clients(server.url())
        assert await body_of(await send(client)) == b"abc"
        assert await body_of(await send(client)) == b"abc"
        assert server.connections == 2


async def test_a_body_with_a_transfer_coding_other_than_chunked_ends_with_the_socket(
    clients: Clients,
) -> None:
    # RFC 9112 section 6.3: when chunked is not the final transfer coding of a response,
    # its body ends when the server closes (not a truncated response).
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\ncompressed")
        peer.writer.close()

    async with serving(handle) as server:
        client = clients(server.url())
        assert await body_of(await send(client)) == b"compressed"


async def test_bytes_sent_on_an_idle_connection_make_it_unusable(clients: Clients) -> None:
    async def answer_then_babble(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(with_length(b"asked"))
            await asyncio.sleep(0.02)  # the answer was read by now: the connection is idle
            await peer.send(with_length(b"not asked"))

    async with serving(answer_then_babble) as server:
        client = clients(server.url())
        assert await body_of(await send(client)) == b"asked"
        await asyncio.wait_for(server.peers[0].eof.wait(), WAIT)  # closed, not kept
        assert await body_of(await send(client)) == b"asked"
        assert server.connections == 2
