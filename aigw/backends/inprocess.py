"""A backend that calls an ASGI application in the same process (the built-in demo model).

No socket is involved, but the request still goes through the full pipeline and the response
is streamed message by message, with the flow control, read timeout and error translation of
a remote backend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from aigw.context import RequestContext, RequestView, Response
from aigw.errors import BackendProtocolError, BackendTimeout
from aigw.headers import Headers

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]
# `None` in the queue means the app has returned or raised; nothing follows it.
Messages = asyncio.Queue[Message | None]

# Bounds what a fast app can run ahead of a slow client, like a socket's buffers would.
QUEUE_SIZE = 64

log = logging.getLogger("aigw.backends")


class InProcessBackend:
    def __init__(self, backend_id: str, app: ASGIApp, read_timeout: float) -> None:
        self.id = backend_id
        self.read_timeout = read_timeout
        self._app = app

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, ctx: RequestContext) -> Response:
        messages: Messages = asyncio.Queue(QUEUE_SIZE)
        task = asyncio.create_task(self._run(ctx.request, messages))
        ctx.backend_has_request = True
        task.add_done_callback(self._retrieve)
        try:
            start = await _next(messages, self.read_timeout, None)
            if start is None or start.get("type") != "http.response.start":
                raise BackendProtocolError()
            status = start.get("status")
            if not isinstance(status, int):
                raise BackendProtocolError()
        except BaseException:
            # Cancelled, timed out or no valid head: nobody will read the rest, stop the app.
            task.cancel()
            raise
        if status >= 400:
            ctx.backend_has_request = False  # refused: nothing the backend bills
        headers = Headers.from_asgi(start.get("headers", [])).without_hop_by_hop()

        async def release() -> None:
            # The client is gone or the body was read: an app still running has no reader.
            if not task.done():
                task.cancel()

        stream = _body(messages, self.read_timeout)
        return Response(status, headers, stream=stream, release=release, from_backend=True)

    async def _run(self, request: RequestView, messages: Messages) -> None:
        body = request.body
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # like a client that stays connected
            return {"type": "http.disconnect"}

        try:
            await self._app(_scope(request, len(body)), receive, messages.put)
        finally:
            # After our own cancel nobody reads the queue: a put could block forever.
            current = asyncio.current_task()
            if current is None or not current.cancelling():
                await messages.put(None)

    def _retrieve(self, task: asyncio.Task[None]) -> None:
        # Retrieving the exception keeps asyncio from warning at garbage collection; the
        # caller only sees a 502, so the traceback is logged here, as a remote backend would.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("in-process backend %r failed", self.id, exc_info=exc)


async def _next(messages: Messages, read_timeout: float, message: str | None) -> Message | None:
    """The app's next message; BackendTimeout(message) if none comes within `read_timeout`."""
    if not messages.empty():  # fast path: no timer while the app is ahead of the client
        return messages.get_nowait()
    try:
        async with asyncio.timeout(read_timeout):
            return await messages.get()
    except TimeoutError:
        raise BackendTimeout(message) from None


async def _body(messages: Messages, read_timeout: float) -> AsyncIterator[bytes]:
    stalled = "Backend service stopped sending the response"
    while True:
        message = await _next(messages, read_timeout, stalled)
        if message is None:  # the app ended without a final `more_body=False` message
            raise BackendProtocolError("Backend service sent a truncated response")
        if message.get("type") != "http.response.body":
            continue
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _scope(request: RequestView, content_length: int) -> dict[str, Any]:
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in request.headers.forwardable()
        if k not in ("content-length", "host")
    ]
    headers.append((b"content-length", str(content_length).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": unquote(request.backend_path),
        "raw_path": request.backend_path.encode(),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": (request.client_ip, 0),
        "server": ("aigw-demo", 80),
    }
