"""The Redis state store for shared circuit breakers (`counters.url`).

A publish is one script run (compare and set on the server, so the longest trip in force is
never overwritten by a shorter one, whatever order replicas write in); a read is one MGET
for every shared backend. Both go over a pipelined connection of their own, the same kind
the counter store uses (`aigw.limits.redis_connection`). Each call is bounded by `timeout`;
errors become `SharedStateUnavailable` with host and port, never the password.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from aigw.backends.shared import SharedStateUnavailable
from aigw.limits.redis_connection import (
    RedisAddress,
    RedisConnection,
    RedisReplyError,
    Script,
    describe_url,
    unavailable_text,
)

# KEYS[1] record; ARGV record, not-before (epoch s), ttl ms. 1 if stored, 0 if an open
# record lasting beyond not-before is in the way.
_PUBLISH = Script.of("""
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
""")


class RedisStateStore:
    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        """ValueError if the URL asks for something the connection cannot do (the config's
        validation refuses such a URL first)."""
        self._timeout = timeout
        self._where, self._secrets = describe_url(url)
        # No hidden retries: the next poll is the retry.
        self._connection = RedisConnection(RedisAddress.parse(url))

    async def publish(self, key: str, record: str, not_before: float, ttl: float) -> bool:
        ttl_ms = max(1, math.ceil(ttl * 1000))
        try:
            stored = await self._connection.run(
                _PUBLISH, (key,), (record, repr(float(not_before)), ttl_ms), self._deadline()
            )
        except (RedisReplyError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        return bool(stored)

    async def read(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        try:
            values = await self._connection.call(("MGET", *keys), self._deadline())
        except (RedisReplyError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        return [None if value is None else value.decode("utf-8", "replace") for value in values]

    async def close(self) -> None:
        self._connection.close()

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeout

    def _unavailable(self, exc: BaseException) -> SharedStateUnavailable:
        return SharedStateUnavailable(unavailable_text(self._where, self._secrets, exc))
