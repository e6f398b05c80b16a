"""Sending a response to the client: complete bodies at once, streams chunk by chunk.

Streamed chunks go through the chunk hooks of the policies that asked for them and are
written as they arrive; nothing is buffered. A stream that breaks after the head was sent
cannot change its status any more, so the connection is aborted instead of pretending the
body ended normally.
"""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from functools import lru_cache
from typing import Any

from aigw.asgi import Send
from aigw.context import LastError, RequestContext, Response
from aigw.errors import GatewayError, StreamAborted

log = logging.getLogger("aigw.relay")


# Statuses whose responses never carry a body, nor a Content-Length (RFC 9110 §8.6).
_NO_BODY = frozenset({204, 304})


@lru_cache(maxsize=2)
def _http_date(second: int) -> bytes:
    return formatdate(second, usegmt=True).encode()


def encode_headers(response: Response, request_id: str) -> list[tuple[bytes, bytes]]:
    raw = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers
        if name != "x-request-id"
    ]
    raw.append((b"x-request-id", request_id.encode("latin-1")))
    if "date" not in response.headers:  # backends send their own; ours get one here
        raw.append((b"date", _http_date(int(time.time()))))
    return raw


async def send_response(
    send: Send, response: Response, request_id: str, ctx: RequestContext | None = None
) -> None:
    observers: list[Any] = []
    if response.stream is None:
        if response.status_code in _NO_BODY:
            response.body = b""
            response.headers.delete("content-length")
        else:
            response.headers.set("content-length", str(len(response.body)))
    elif ctx is not None:
        observers = [p for p in ctx.observers if p.observes_chunks and p.chunk_hook_active]
        if observers:
            response.headers.delete("content-length")  # hooks may change the body's length
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": encode_headers(response, request_id),
        }
    )
    if response.stream is None:
        await send({"type": "http.response.body", "body": response.body, "more_body": False})
    else:
        await _stream_body(send, response, ctx, observers)


async def _stream_body(
    send: Send, response: Response, ctx: RequestContext | None, observers: list[Any]
) -> None:
    assert response.stream is not None
    try:
        async for chunk in response.stream:
            if ctx is not None:
                if ctx.first_byte_at is None:
                    ctx.first_byte_at = ctx.clock.monotonic()
                if ctx.usage_meter is not None:
                    chunk = ctx.usage_meter.on_chunk(chunk)
                for policy in observers:
                    chunk = policy.on_chunk(ctx, chunk)
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except GatewayError as exc:
        if ctx is not None:
            ctx.last_error = LastError.from_error(exc, "outbound")
        log.warning("response stream from backend broke: %s", exc.reason)
        raise StreamAborted(exc.reason) from None
    tail = ctx.usage_meter.end_of_stream() if ctx is not None and ctx.usage_meter else b""
    await send({"type": "http.response.body", "body": tail, "more_body": False})
