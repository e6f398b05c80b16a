"""The edge protocol on a fake transport: what a client is told about a request the parser
refuses, and what only the log learns."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import weakref
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from aigw.server.protocol import EdgeLimits, protocol_with_limits


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("203.0.113.7", 50123), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("a refused request never reaches the app")


@pytest.mark.parametrize(
    ("head", "detail"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "content-length",
        ),
        (b"G\x01T / HTTP/1.1\r\nHost: gw\r\n\r\n", "method"),
    ],
    ids=["duplicate-content-length", "invalid-method"],
)
async def test_a_parser_error_is_a_fixed_400_and_its_detail_only_logged(
    head: bytes, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    protocol_class = protocol_with_limits(EdgeLimits())
    config = uvicorn.Config(_app, http=protocol_class, lifespan="off", log_config=None)
    protocol = protocol_class(config, ServerState(), {})
    transport = FakeTransport()
    protocol.connection_made(transport)
    try:
        with caplog.at_level(logging.DEBUG, logger="aigw.server"):
            protocol.data_received(head)
    finally:
        protocol.connection_lost(None)
    status_line, _, rest = bytes(transport.written).partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body == {"statusCode": 400, "message": "Invalid HTTP request"}
    assert transport.closed
    [record] = [r for r in caplog.records if r.name == "aigw.server"]
    assert record.levelno == logging.DEBUG
    assert "203.0.113.7" in record.getMessage()
    assert detail in record.getMessage().lower()  # the parser's own words, for operators


# --- keep-alive: idle between requests, a connection is closed after timeout_keep_alive ----


class IdleTransport(FakeTransport):
    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _connection(
    keep_alive: float, header_timeout: float = 10, state: ServerState | None = None
) -> tuple[Any, IdleTransport]:
    protocol_class = protocol_with_limits(EdgeLimits(header_timeout=header_timeout))
    config = uvicorn.Config(
        _ok, http=protocol_class, lifespan="off", log_config=None, timeout_keep_alive=keep_alive
    )
    config.load()
    protocol = protocol_class(config, state or ServerState(), {})
    transport = IdleTransport()
    protocol.connection_made(transport)
    return protocol, transport


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() -> None:
    protocol, transport = _connection(keep_alive=0.3)
    try:
        protocol.data_received(_get("/one"))
        await asyncio.sleep(0.05)
        assert transport.written.startswith(b"HTTP/1.1 200 OK")
        assert transport.written.endswith(b"/one")
        assert not transport.closed
        await asyncio.sleep(0.75)
        assert transport.closed
    finally:
        protocol.connection_lost(None)


async def test_a_request_within_the_keep_alive_timeout_is_served_and_restarts_it() -> None:
    protocol, transport = _connection(keep_alive=0.5)
    try:
        protocol.data_received(_get("/one"))
        await asyncio.sleep(0.3)
        protocol.data_received(_get("/two"))
        await asyncio.sleep(0.3)  # 0.6 s after the first answer, 0.3 s after the second
        assert transport.written.endswith(b"/two")
        assert not transport.closed
        await asyncio.sleep(0.8)
        assert transport.closed
    finally:
        protocol.connection_lost(None)


async def test_pipelined_requests_are_answered_in_order_and_counted() -> None:
    state = ServerState()
    protocol, transport = _connection(keep_alive=5, state=state)
    try:
        protocol.data_received(_get("/one") + _get("/two") + _get("/three"))
        await asyncio.sleep(0.1)
        written = bytes(transport.written)
        assert written.count(b"HTTP/1.1 200 OK") == 3
        assert written.index(b"/one") < written.index(b"/two") < written.index(b"/three")
        assert not transport.closed
        assert state.total_requests == 3  # what uvicorn's limit_max_requests counts
    finally:
        protocol.connection_lost(None)


async def test_bytes_after_an_answer_end_the_keep_alive_wait_and_start_the_header_timeout() -> None:
    protocol, transport = _connection(keep_alive=5, header_timeout=0.1)
    try:
        protocol.data_received(_get("/one"))
        await asyncio.sleep(0.02)
        assert transport.written.endswith(b"/one")
        protocol.data_received(b"\r\n")  # a line break before a request line: not a request
        await asyncio.sleep(0.6)
        assert transport.closed  # within header_timeout, not the 5 s of keep-alive
    finally:
        protocol.connection_lost(None)


async def test_an_answer_that_completes_during_the_next_head_leaves_its_header_timeout() -> None:
    """A slow head pipelined behind a quick request gets header_timeout from its first
    byte, not the keep-alive wait that the first answer would start on an idle connection."""
    protocol, transport = _connection(keep_alive=5, header_timeout=0.2)
    try:
        protocol.data_received(_get("/one") + b"GET /two HTTP/1.1\r\nHo")
        await asyncio.sleep(0.05)
        assert transport.written.endswith(b"/one")
        await asyncio.sleep(0.6)
        assert b"HTTP/1.1 408" in transport.written
        assert transport.closed
    finally:
        protocol.connection_lost(None)


async def test_a_closed_idle_connection_leaves_no_timer_holding_it() -> None:
    protocol, transport = _connection(keep_alive=30)
    protocol.data_received(_get("/one"))
    await asyncio.sleep(0.05)
    assert transport.written.endswith(b"/one")
    protocol.connection_lost(None)  # the client closed while the connection was idle
    await asyncio.sleep(0)
    gone = weakref.ref(protocol)
    del protocol
    gc.collect()
    assert gone() is None  # no keep-alive or header timer keeps it for 30 s


async def test_shutdown_closes_an_idle_connection() -> None:
    protocol, transport = _connection(keep_alive=30)
    try:
        protocol.data_received(_get("/one"))
        await asyncio.sleep(0.05)
        protocol.shutdown()
        assert transport.closed
    finally:
        protocol.connection_lost(None)
