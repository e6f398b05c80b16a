"""The Redis counter store: counters shared by every gateway replica.

Each take and each adjust is one round trip: a Lua script (EVALSHA; EVAL once after NOSCRIPT,
which also loads it) that reads, decides and writes atomically on the server, so concurrent
replicas cannot overshoot. The calls go over one pipelined connection (`redis_connection`).

Layout, all keys with a TTL so Redis never fills with dead counters:
- `aigw:w:{key}:{window}`: a hash per sliding window, one field per bucket index (units in
  it); TTL window + one bucket, refreshed on every write.
- `aigw:p:{key}:{start}:{end}`: an integer per quota period; TTL until the period ends + a
  margin. `aigw:ph:{key}:{start}:{end}`, beside it while requests in flight hold some of
  those units: a hash of units held by the minute they were taken in, read for ten minutes
  at most (a hold whose release was lost lapses); TTL eleven minutes after the last write.
`{key}` is the caller's counter key percent-escaped (`:`, `{`, `}` and anything unusual), so
no key can reach into another's name or pick a cluster hash slot. The window length and the
period's end are part of the name so that a limit reconfigured under the same counter key
(a minute window becoming an hour, a daily quota a monthly one starting the same instant)
starts a counter of its own instead of misreading the old one's buckets.

Time is the caller's `now` (the gateway's clock), never Redis `TIME`: the same code then runs
under a fake clock in tests, and replicas' clocks are NTP-synced to well under a bucket. The
scripts get bucket indices computed in Python (`windows`), so all float math lives in one
place and Lua only compares integers. TTLs are relative (PEXPIRE), so a fake clock far from
the real date still expires keys on time.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any
from urllib.parse import quote

from aigw.limits import windows
from aigw.limits.redis_connection import (
    RedisAddress,
    RedisConnection,
    RedisReplyError,
    Script,
    describe_url,
    unavailable_text,
)
from aigw.limits.store import CounterStoreUnavailable, Taken

log = logging.getLogger("aigw.limits")

PERIOD_MARGIN = 60.0  # seconds a period counter outlives its end (replicas' clock skew)

# A window hash holds one field per bucket index, plus `n` (the units in those fields) and
# `o` (no bucket field below this index is left). A take then reads two fields and drops the
# few buckets that left since the last take, instead of summing all sixty; the full list is
# read only for a refusal (for the retry-after walk) or after a long pause. `h{index}`
# fields mark how many of a bucket's units requests in flight hold; they leave with it.
# Numbers go back to Redis as ARGV strings or through `int()`, never as bare Lua numbers:
# Lua prints large ones in exponent form, which HINCRBY refuses.
_LUA_INT = "local function int(v) return string.format('%d', v) end\n"

# KEYS[1] window hash; ARGV oldest bucket, current bucket, limit, cost, ttl ms, fit, held.
# Allowed: {1, used}. Refused: {0, used, {field, units, ...}} (buckets and held marks).
_WINDOW_TAKE = (
    _LUA_INT
    + """
local h = KEYS[1]
local oldest = tonumber(ARGV[1])
local cost = tonumber(ARGV[4])
local state = redis.call('HMGET', h, 'n', 'o')
local used = tonumber(state[1]) or 0
local from = tonumber(state[2]) or oldest
local function index(field)
  if string.sub(field, 1, 1) == 'h' then return tonumber(string.sub(field, 2)), true end
  return tonumber(field), false
end
if from < oldest then
  local gone, left = {}, 0
  if oldest - from <= 64 then
    for b = from, oldest - 1 do gone[#gone + 1] = int(b) end
    for _, units in ipairs(redis.call('HMGET', h, unpack(gone))) do
      if units then left = left + tonumber(units) end
    end
    for b = from, oldest - 1 do gone[#gone + 1] = 'h' .. int(b) end
  else
    local flat = redis.call('HGETALL', h)
    for i = 1, #flat, 2 do
      local b, mark = index(flat[i])
      if b and b < oldest then
        gone[#gone + 1] = flat[i]
        if not mark then left = left + tonumber(flat[i + 1]) end
      end
    end
  end
  if #gone > 0 then redis.call('HDEL', h, unpack(gone)) end
  used = used - left
  redis.call('HSET', h, 'n', int(used), 'o', ARGV[1])
end
if used + math.max(tonumber(ARGV[6]), 1) <= tonumber(ARGV[3]) then
  if cost > 0 then
    redis.call('HINCRBY', h, ARGV[2], ARGV[4])
    redis.call('HINCRBY', h, 'n', ARGV[4])
    if ARGV[7] ~= '0' then redis.call('HINCRBY', h, 'h' .. ARGV[2], ARGV[7]) end
    if not state[2] then redis.call('HSET', h, 'o', ARGV[1]) end
    redis.call('PEXPIRE', h, ARGV[5])
  end
  return {1, used + cost}
end
local flat, live = redis.call('HGETALL', h), {}
for i = 1, #flat, 2 do
  local b = index(flat[i])
  if b and b >= oldest then
    live[#live + 1] = flat[i]
    live[#live + 1] = flat[i + 1]
  end
end
return {0, used, live}
"""
)

# KEYS[1] window hash; ARGV bucket, delta, ttl ms, oldest bucket, held bucket, held. The
# caller has checked both buckets against its clock; `o` catches a bucket a replica ahead of
# it already dropped. A bucket never goes below zero (an emptied field is removed), nor does
# a held mark.
_WINDOW_ADJUST = (
    _LUA_INT
    + """
local h = KEYS[1]
local delta = tonumber(ARGV[2])
local from = redis.call('HGET', h, 'o')
if not from then
  if delta <= 0 then return 0 end
  redis.call('HSET', h, 'o', ARGV[4])
  from = ARGV[4]
end
from = tonumber(from)
if ARGV[6] ~= '0' and tonumber(ARGV[5]) >= from then
  local mark = 'h' .. ARGV[5]
  if redis.call('HINCRBY', h, mark, ARGV[6]) <= 0 then redis.call('HDEL', h, mark) end
end
if delta == 0 or tonumber(ARGV[1]) < from then return 0 end
local units = redis.call('HINCRBY', h, ARGV[1], ARGV[2])
if units <= 0 then
  redis.call('HDEL', h, ARGV[1])
  delta = delta - units
end
if delta ~= 0 then redis.call('HINCRBY', h, 'n', int(delta)) end
redis.call('PEXPIRE', h, ARGV[3])
return units
"""
)

# KEYS[1] period counter, KEYS[2] its holds (a hash: minute index -> units held); ARGV
# limit, cost, ttl ms, held, this minute's index, the oldest live minute's index, holds'
# ttl ms. Allowed: {1, used}. Refused: {0, used, units held in live minutes}.
_PERIOD_TAKE = (
    _LUA_INT
    + """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[2])
if used + math.max(cost, 1) <= tonumber(ARGV[1]) then
  if cost > 0 then
    used = redis.call('INCRBY', KEYS[1], ARGV[2])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    if ARGV[4] ~= '0' then
      redis.call('HINCRBY', KEYS[2], ARGV[5], ARGV[4])
      redis.call('PEXPIRE', KEYS[2], ARGV[7])
    end
  end
  return {1, used}
end
local flat, held, gone = redis.call('HGETALL', KEYS[2]), 0, {}
local oldest = tonumber(ARGV[6])
for i = 1, #flat, 2 do
  if tonumber(flat[i]) < oldest then
    gone[#gone + 1] = flat[i]
  else
    held = held + tonumber(flat[i + 1])
  end
end
if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end
return {0, used, held}
"""
)

# KEYS[1] period counter, KEYS[2] its holds; ARGV delta, ttl ms for a counter this creates
# (a cost charged after a check with cost 0), held (negative: a release), the minute index
# of the take that held them, holds' ttl ms. Neither goes below zero.
_PERIOD_ADJUST = """
if ARGV[3] ~= '0' then
  if redis.call('HINCRBY', KEYS[2], ARGV[4], ARGV[3]) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[4])
  else
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
end
local delta = tonumber(ARGV[1])
if delta == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if delta <= 0 then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return delta
end
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
  return 0
end
return used
"""

# Holds lapse after their lifetime; their hash goes a minute after the last one was written.
_HOLDS_TTL_MS = int((windows.HOLD_LIFETIME_BUCKETS + 1) * windows.HOLD_BUCKET * 1000)


def escape_key(key: str) -> str:
    """The counter key as it appears in Redis: percent-escaped, hence injective."""
    return quote(key, safe="", errors="surrogatepass")


def window_key(key: str, window: float) -> str:
    return f"aigw:w:{escape_key(key)}:{_number(window)}"


def period_key(key: str, period_start: float, period_end: float) -> str:
    return f"aigw:p:{escape_key(key)}:{_number(period_start)}:{_number(period_end)}"


def period_held_key(key: str, period_start: float, period_end: float) -> str:
    """The units of a period that requests in flight hold (present only while some do)."""
    return f"aigw:ph:{escape_key(key)}:{_number(period_start)}:{_number(period_end)}"


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


_SCRIPTS = [
    Script.of(text) for text in (_WINDOW_TAKE, _WINDOW_ADJUST, _PERIOD_TAKE, _PERIOD_ADJUST)
]


class RedisCounterStore:
    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        """ValueError if the URL asks for something the store cannot do."""
        self._timeout = timeout
        self._where, self._secrets = describe_url(url)
        # No hidden retries: a take either answers within `timeout` or fails, and a retried
        # script could charge twice (only NOSCRIPT, which ran nothing, is sent again).
        self._connection = RedisConnection(RedisAddress.parse(url))
        self._window_take, self._window_adjust, self._period_take, self._period_adjust = _SCRIPTS
        self._closed = False

    async def start(self) -> None:
        """Checks the connection and loads the scripts. Failing here is not fatal: requests
        follow their policy's `on-store-error` until Redis answers."""
        deadline = asyncio.get_running_loop().time() + self._timeout * (1 + len(_SCRIPTS))
        try:
            await self._connection.call(("PING",), deadline)
            for script in _SCRIPTS:
                await self._connection.call(("SCRIPT", "LOAD", script.text), deadline)
        except (RedisReplyError, OSError, TimeoutError) as exc:
            log.warning(
                "counter store: %s; limits follow on-store-error until it answers",
                self._unavailable(exc),
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._connection.close()

    async def window_take(
        self,
        key: str,
        window: float,
        limit: int,
        cost: int,
        now: float,
        *,
        fit: int | None = None,
        held: int = 0,
    ) -> Taken:
        current = windows.bucket_index(now, window)
        bucket = current * windows.bucket_size(window)
        must_fit = cost if fit is None else fit
        args = (
            windows.oldest_index(now, window),
            current,
            limit,
            cost,
            _window_ttl(window),
            must_fit,
            held if cost > 0 else 0,
        )
        reply = await self._run(self._window_take, (window_key(key, window),), args)
        allowed, used = bool(reply[0]), int(reply[1])
        if allowed:
            return Taken(True, used, max(0, limit - used), 0.0, bucket)
        live, holds = _fields(reply[2])
        wait = windows.retry_after(live, window, limit, must_fit, now, holds)
        return Taken(False, used, max(0, limit - used), wait, bucket)

    async def window_adjust(
        self,
        key: str,
        window: float,
        bucket: float,
        delta: int,
        now: float,
        *,
        held: int = 0,
        held_bucket: float | None = None,
    ) -> None:
        live = windows.live_adjustment(window, now, bucket, delta, held, held_bucket)
        if live is None:
            return  # those units have left the window: no round trip needed
        args = (
            live.index,
            live.delta,
            _window_ttl(window),
            live.oldest,
            live.held_index,
            live.held,
        )
        await self._run(self._window_adjust, (window_key(key, window),), args)

    async def window_peek(self, key: str, window: float, limit: int, now: float) -> Taken:
        return await self.window_take(key, window, limit, 0, now)

    async def period_take(
        self,
        key: str,
        period_start: float,
        period_end: float,
        limit: int,
        cost: int,
        now: float,
        *,
        held: int = 0,
    ) -> Taken:
        ttl = _ms(period_end - now + PERIOD_MARGIN)
        args = (
            limit,
            cost,
            ttl,
            held if cost > 0 else 0,
            windows.hold_index(now),
            windows.oldest_hold_index(now),
            _HOLDS_TTL_MS,
        )
        reply = await self._run(
            self._period_take, _period_keys(key, period_start, period_end), args
        )
        allowed, used = bool(reply[0]), int(reply[1])
        if allowed:
            return Taken(True, used, max(0, limit - used), 0.0, period_start)
        wait = max(0.0, period_end - now)
        return Taken(False, used, max(0, limit - used), wait, period_start, int(reply[2]))

    async def period_adjust(
        self,
        key: str,
        period_start: float,
        period_end: float,
        delta: int,
        *,
        held: int = 0,
        held_at: float = 0.0,
    ) -> None:
        if delta == 0 and held == 0:
            return
        # No `now` here: a counter created by the adjust lives one whole period + margin,
        # an upper bound on what is left of it.
        ttl = _ms(period_end - period_start + PERIOD_MARGIN)
        args = (delta, ttl, held, windows.hold_index(held_at), _HOLDS_TTL_MS)
        await self._run(self._period_adjust, _period_keys(key, period_start, period_end), args)

    async def _run(self, script: Script, keys: tuple[str, ...], args: tuple[int, ...]) -> Any:
        if self._closed:
            raise CounterStoreUnavailable(f"Redis counter store at {self._where} is closed")
        # One deadline for the whole call (connecting, the script, its reload after NOSCRIPT):
        # what the caller was promised.
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            return await self._connection.run(script, keys, args, deadline)
        except (RedisReplyError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> CounterStoreUnavailable:
        return CounterStoreUnavailable(unavailable_text(self._where, self._secrets, exc))


def _fields(flat: list[Any]) -> tuple[dict[int, int], dict[int, int]]:
    """A refused take's window fields: units per bucket, and units held per bucket."""
    buckets: dict[int, int] = {}
    holds: dict[int, int] = {}
    for i in range(0, len(flat), 2):
        name = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
        if name.startswith("h"):
            holds[int(name[1:])] = int(flat[i + 1])
        else:
            buckets[int(name)] = int(flat[i + 1])
    return buckets, holds


def _period_keys(key: str, period_start: float, period_end: float) -> tuple[str, str]:
    return period_key(key, period_start, period_end), period_held_key(key, period_start, period_end)


def _window_ttl(window: float) -> int:
    return _ms(window + windows.bucket_size(window))
