"""uvicorn's httptools protocol with the edge checks the gateway needs before any app code.

- header count and total header size are capped while parsing → 431, connection closed;
- header values must be ASCII → 400 (they are forwarded byte for byte, and a value that
  changes encoding on the way would reach the backend different from what a policy saw);
- trailers of a chunked body are dropped, never merged into the request headers;
- a connection must send a complete request head within `header_timeout` of opening or of
  its first byte (slow-loris) → 408 or simply closed, and a pending body must arrive within
  `body_timeout` → 408;
- a client that stops reading a response for `send_timeout` is disconnected, so it cannot
  hold a backend connection for ever; a client that is still sending a body nobody reads
  (the answer came first) is disconnected once the answer is out;
- every parser error gets a JSON 400 with a fixed message (the parser's detail goes to the
  debug log) and the connection is closed. Conflicting framing (Content-Length with
  Transfer-Encoding, duplicate Content-Length) is refused by llhttp in its default strict
  mode;
- the app learns of a lost connection through a callback (`ConnectionSignals` in the scope's
  extensions) instead of a watcher task per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aigw.asgi import ConnectionSignals
from aigw.deadline import Deadline
from aigw.pipeline.errors import error_body

log = logging.getLogger("aigw.server")

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_header_count: int = 100
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0


class _Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def protocol_with_limits(limits: EdgeLimits) -> type[GatewayHttpProtocol]:
    """A protocol class bound to one worker's limits (uvicorn instantiates it per connection)."""
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), {"limits": limits})


class GatewayHttpProtocol(HttpToolsProtocol):
    limits = EdgeLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_count = 0
        self._header_bytes = 0
        self._in_head = False
        self._rejected: _Rejected | None = None
        # Armed from a connection's start and between requests until a request's head is in
        # (header_timeout), or while idle after an answer (uvicorn's timeout_keep_alive).
        self._head_deadline = Deadline(self.loop, self._head_timed_out)
        self._idle = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        # One entry per request whose response is not complete yet (pipelining included).
        self._open: deque[tuple[Any, ConnectionSignals]] = deque()

    # Connection lifetime

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)
        open_requests, self._open = self._open, deque()
        for _, signals in open_requests:
            signals.fire()

    def _cancel_timers(self) -> None:
        self._head_deadline.close()
        for timer in (self._body_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._body_timer = self._send_timer = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_stalled(self) -> None:
        self._send_timer = None
        # The client stopped reading: close() would wait for the buffer to drain, so abort.
        self.transport.abort()

    def _arm_head_timer(self) -> None:
        self._head_deadline.arm(self.limits.header_timeout)

    def _between_requests(self) -> bool:
        return not self._in_head and (self.cycle is None or self.cycle.response_complete)

    def _head_timed_out(self) -> None:
        if self._in_head:
            self._reject(408, "Request headers were not received in time")
        elif self._between_requests():  # silent since opening, or sending only line breaks
            self.transport.close()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = 0
        self._header_bytes = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer: never a request header
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            raise _Rejected(431, "Too many request headers")
        self._count(len(name) + len(value))
        if not value.isascii():
            raise _Rejected(400, "Header values must be ASCII text")
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Rejected(431, "Request header fields are too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_deadline.disarm()
        super().on_headers_complete()
        # The ASGI task is scheduled but has not run yet, so the scope can still be extended.
        signals = ConnectionSignals()
        self._open.append((self.cycle, signals))
        self.scope["extensions"] = {"aigw.connection": signals}  # type: ignore[dict-item]

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # uvicorn's steps, but the keep-alive wait is the head deadline's (a timer created
        # and cancelled per request costs ~2 µs): idle between requests, it closes alike.
        self.server_state.total_requests += 1
        unread_body = False
        while self._open and self._open[0][0].response_complete:
            done, _ = self._open.popleft()
            unread_body = unread_body or done.more_body
        if unread_body:
            # Answered before the body was read (404, 413, …): the rest of the body would
            # only keep the connection busy, so it is not waited for.
            self.transport.close()
            return
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self._in_head:  # (a next head already begun keeps its header deadline)
            self._head_deadline.arm(self.timeout_keep_alive)
            self._idle = True

    def _unset_keepalive_if_required(self) -> None:
        pass  # uvicorn's keep-alive timer is never started: see on_response_complete

    # Input

    def data_received(self, data: bytes) -> None:
        if self._idle:
            # Idle no more: the next head is due within header_timeout, even if these
            # bytes are bare line breaks.
            self._idle = False
            self._arm_head_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Rejected):
                self._reject(cause.status, cause.message)
            else:
                self._invalid(cause or exc)
            return
        except httptools.HttpParserError as exc:
            self._invalid(exc)
            return
        except httptools.HttpParserUpgrade:
            self._reject(400, "Protocol upgrades are not supported")
            return
        # Most bodies arrive with their head; only a body still pending gets a deadline.
        if self._body_timer is None and self.cycle is not None and self.cycle.more_body:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete:
            return
        for open_cycle, signals in self._open:
            if open_cycle is cycle:
                signals.body_timed_out = True
        if cycle.response_started:
            self.transport.close()
        else:
            self._reject(408, "Request body was not received in time")

    def _invalid(self, error: BaseException) -> None:
        # The parser's wording is no contract for clients (and changes with llhttp): what
        # went wrong is for the debug log, the client gets a fixed message.
        log.debug("invalid HTTP request from %s: %s", self.client, error)
        self._reject(400, "Invalid HTTP request")

    def _reject(self, status: int, message: str) -> None:
        self._cancel_timers()
        if any(c.response_started and not c.response_complete for c, _ in self._open):
            self.transport.close()  # a response is under way: nothing more can be said
            return
        body = error_body(status, message)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s"
            % (status, _REASONS.get(status, b"Error"), len(body), body)
        )
        self.transport.close()
