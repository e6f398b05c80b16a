"""The edge protocol on a fake transport: what a client is told about a request the parser
refuses, and what only the log learns."""

from __future__ import annotations

import asyncio
import json
import logging
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
