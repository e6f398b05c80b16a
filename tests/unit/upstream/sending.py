"""Client-side helpers: a pooled client for a test server, a request, a whole body."""

from __future__ import annotations

from collections.abc import Sequence

from aigw.upstream.client import UpstreamClient, UpstreamResponse, encode_request, origin_of
from aigw.upstream.pool import ConnectionPool


class Clients:
    """Makes clients with short timeouts and closes their pools at the end of a test."""

    def __init__(self) -> None:
        self._pools: list[ConnectionPool] = []

    def __call__(
        self,
        url: str,
        *,
        limit: int = 4,
        read_timeout: float = 0.3,
        connect_timeout: float = 0.3,
        pool_timeout: float = 0.3,
        keepalive: float = 4.0,
    ) -> UpstreamClient:
        origin, _ = origin_of(url)
        pool = ConnectionPool(
            origin,
            limit,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            keepalive=keepalive,
        )
        self._pools.append(pool)
        return UpstreamClient(pool, read_timeout)

    def close(self) -> None:
        for pool in self._pools:
            pool.close()


async def send(
    client: UpstreamClient,
    method: str = "GET",
    target: str = "/",
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> UpstreamResponse:
    data = encode_request(method, target, client.pool.origin.authority, headers, body)
    return await client.send(method, data)


async def body_of(response: UpstreamResponse) -> bytes:
    """The whole body; the response is released (its connection pooled if reusable)."""
    try:
        return b"".join([chunk async for chunk in response])
    finally:
        response.release()
