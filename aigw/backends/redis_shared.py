"""The Redis state store for shared circuit breakers (`counters.url`).

A publish is one script run (compare and set on the server, so the longest trip in force is
never overwritten by a shorter one, whatever order replicas write in); a read is one MGET
for every shared backend. Each call is bounded by `timeout`; errors become
`SharedStateUnavailable` with host and port, never the password.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from aigw.backends.shared import SharedStateUnavailable

# KEYS[1] record; ARGV record, not-before (epoch s), ttl ms. 1 if stored, 0 if an open
# record lasting beyond not-before is in the way.
_PUBLISH = """
local old = redis.call('GET', KEYS[1])
if old then
  local ok, record = pcall(cjson.decode, old)
  if ok and type(record) == 'table' and record['state'] == 'open' then
    local till = tonumber(record['until'])
    if till and till > tonumber(ARGV[2]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


class RedisStateStore:
    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        self._timeout = timeout
        self._where, self._secrets = _describe(url)
        # Two connections: the sync task runs one command at a time. No hidden retries:
        # the next poll is the retry.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=2,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = Redis.from_pool(self._pool)
        self._publish = self._client.register_script(_PUBLISH)

    async def publish(self, key: str, record: str, not_before: float, ttl: float) -> bool:
        ttl_ms = max(1, math.ceil(ttl * 1000))
        stored = await self._call(
            self._publish(keys=[key], args=[record, repr(float(not_before)), ttl_ms])
        )
        return bool(stored)

    async def read(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        values = await self._call(self._client.mget(list(keys)))
        return [None if value is None else value.decode("utf-8", "replace") for value in values]

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, command: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await command
        except (RedisError, OSError, TimeoutError) as exc:
            detail = str(exc) or "timed out"
            for secret in self._secrets:
                detail = detail.replace(secret, "***")
            raise SharedStateUnavailable(
                f"Redis at {self._where} is unavailable: {type(exc).__name__}: {detail}"
            ) from exc


def _describe(url: str) -> tuple[str, list[str]]:
    """`host:port` (or the socket path) for messages, and the secrets they must not show."""
    parts = urlsplit(url)
    secrets = [s for s in (parts.password, unquote(parts.password or "")) if s]
    if parts.scheme == "unix":
        return parts.path, secrets
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}", secrets
