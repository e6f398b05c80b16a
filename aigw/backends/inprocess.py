"""A backend that calls an ASGI application in the same process (the built-in demo model).

No socket is involved, but the request still goes through the full pipeline and the response
is streamed message by message, exactly as from a remote backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from aigw.context import RequestContext, Response
from aigw.errors import BackendProtocolError
from aigw.headers import HOP_BY_HOP, Headers

_DONE = object()


class InProcessBackend:
    def __init__(self, backend_id: str, app: Any) -> None:
        self.id = backend_id
        self._app = app

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, ctx: RequestContext) -> Response:
        request = ctx.request
        body = request.body
        messages: asyncio.Queue[Any] = asyncio.Queue()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": unquote(request.backend_path),
            "raw_path": request.backend_path.encode(),
            "query_string": _query(request.query),
            "root_path": "",
            "headers": [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in request.headers.forwardable()
                if k not in ("content-length", "host")
            ]
            + [(b"content-length", str(len(body)).encode())],
            "client": (request.client_ip, 0),
            "server": ("aigw-demo", 80),
        }
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # like a client that stays connected
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await messages.put(message)

        async def run() -> None:
            try:
                await self._app(scope, receive, send)
            finally:
                await messages.put(_DONE)

        task = asyncio.create_task(run())
        start = await messages.get()
        if start is _DONE or start.get("type") != "http.response.start":
            task.cancel()
            raise BackendProtocolError()
        headers = Headers(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])
        )
        for name in HOP_BY_HOP:
            if name in headers:
                headers.delete(name)

        async def release() -> None:
            if not task.done():
                task.cancel()

        return Response(
            start["status"], headers, stream=_body(messages), release=release, from_backend=True
        )


async def _body(messages: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
    while True:
        message = await messages.get()
        if message is _DONE:
            return
        if message.get("type") == "http.response.body":
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


def _query(query: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(query).encode() if query else b""
