"""Reading a request body under a size limit and a deadline."""

from __future__ import annotations

import asyncio

from aigw.asgi import Receive
from aigw.errors import ClientDisconnected, PayloadTooLarge, RequestTimeout


async def read_body(receive: Receive, max_size: int, deadline: float | None) -> bytes:
    """Read the whole body; stop as soon as it crosses `max_size` (chunked bodies included).

    `deadline` is None when the server enforces the body deadline itself."""
    if deadline is None:
        return await _read(receive, max_size)
    try:
        async with asyncio.timeout(deadline):
            return await _read(receive, max_size)
    except TimeoutError:
        raise RequestTimeout() from None


async def _read(receive: Receive, max_size: int) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > max_size:
            raise PayloadTooLarge()
        return body
    parts = [body]
    size = len(body)
    while True:
        if size > max_size:
            raise PayloadTooLarge()
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            break
    if size > max_size:
        raise PayloadTooLarge()
    return b"".join(parts)
