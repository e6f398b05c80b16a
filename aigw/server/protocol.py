"""uvicorn's httptools protocol with the edge limits the gateway needs before any app code.

- header count and total header size are capped while parsing → 431 and the connection closed;
- a client must finish sending its request head within `header_timeout` (slow-loris) → 408,
  and its body within `body_timeout` → 408;
- the app learns of a lost connection through a callback (`ConnectionSignals` in the scope's
  extensions) instead of a watcher task per request.
Conflicting framing (Content-Length with Transfer-Encoding, duplicate Content-Length) is
already refused by llhttp in its default strict mode → 400 and the connection closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aigw.pipeline.errors import error_body


class EdgeLimits:
    """Set once per worker before serving (class attributes are read by every connection)."""

    max_header_count = 100
    max_header_bytes = 32 * 1024
    header_timeout = 10.0
    body_timeout = 30.0


class ConnectionSignals:
    """Handed to the app as `scope["extensions"]["aigw.connection"]`."""

    __slots__ = ("_callback", "body_timed_out")

    def __init__(self) -> None:
        self._callback: Callable[[], None] | None = None
        self.body_timed_out = False

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        self._callback = callback

    def fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_count = 0
        self._header_bytes = 0
        self._head_rejected: tuple[int, str] | None = None
        self._head_started = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._signals: ConnectionSignals | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._disarm_body_timer()
        super().connection_lost(exc)
        if self._signals is not None:
            self._signals.fire()
            self._signals = None

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(EdgeLimits.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Only a connection in the middle of sending a head is cut; idle keep-alive
        # connections are uvicorn's keep-alive timeout's business.
        if self._head_started:
            self._reject(408, "Request headers were not received in time")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._header_count = 0
        self._header_bytes = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > EdgeLimits.max_header_count:
            self._head_rejected = (431, "Too many request headers")
            raise OverflowError
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > EdgeLimits.max_header_bytes:
            self._head_rejected = (431, "Request header fields are too large")
            raise OverflowError

    def on_headers_complete(self) -> None:
        self._head_started = False
        self._disarm_head_timer()
        super().on_headers_complete()
        # The ASGI task is scheduled but has not run yet, so the scope can still be extended.
        self._signals = ConnectionSignals()
        self.scope["extensions"] = {"aigw.connection": self._signals}  # type: ignore[dict-item]

    def on_message_complete(self) -> None:
        self._disarm_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._signals = None
        super().on_response_complete()

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete:
            return
        if self._signals is not None:
            self._signals.body_timed_out = True
        if cycle.response_started:
            self.transport.close()
        else:
            self._reject(408, "Request body was not received in time")

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
            # Most bodies arrive with their head; only a body still pending gets a deadline.
            if self._body_timer is None and self.cycle is not None and self.cycle.more_body:
                self._body_timer = self.loop.call_later(
                    EdgeLimits.body_timeout, self._body_timed_out
                )
        except httptools.HttpParserCallbackError:
            if self._head_rejected is None:
                raise
            self._reject(*self._head_rejected)
        except httptools.HttpParserError as exc:
            # llhttp's messages name the framing problem and nothing of ours.
            self._reject(400, f"Invalid HTTP request: {exc}")
        except httptools.HttpParserUpgrade:
            self._reject(400, "Protocol upgrades are not supported")

    def _reject(self, status: int, message: str) -> None:
        body = error_body(status, message)
        reason = {
            400: b"Bad Request",
            408: b"Request Timeout",
            431: b"Request Header Fields Too Large",
        }
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.get(status, b"Error"), len(body), body)
        )
        self.transport.close()
