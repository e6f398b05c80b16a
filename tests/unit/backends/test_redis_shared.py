"""The Redis state store for shared breakers against the Redis on 127.0.0.1:6379 (a fresh
backend id per test, its key deleted afterwards): the compare-and-set on the server, TTLs,
reads in one MGET, and errors that name the server but never its password."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from aigw.backends.redis_shared import RedisStateStore
from aigw.backends.shared import SharedRecord, SharedStateUnavailable, shared_key
from tests.support import free_port

REDIS_URL = os.environ.get("AIGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_767_225_600.0


@pytest.fixture
async def key() -> AsyncIterator[str]:
    name = shared_key(f"test-{uuid.uuid4().hex}", "http://127.0.0.1:9")
    yield name
    client = Redis.from_url(REDIS_URL)
    try:
        await client.delete(name)
    finally:
        await client.aclose()


@pytest.fixture
async def store() -> AsyncIterator[RedisStateStore]:
    redis_store = RedisStateStore(REDIS_URL, timeout=1.0)
    yield redis_store
    await redis_store.close()


def opened(until: float, origin: str = "a") -> str:
    return SharedRecord("open", T0, origin, until, "throttle", "status 429").encode()


def closed(at: float, origin: str = "a") -> str:
    return SharedRecord("closed", at, origin).encode()


async def test_the_longest_open_record_in_force_is_never_replaced(
    store: RedisStateStore, key: str
) -> None:
    assert await store.read([key]) == [None]
    assert await store.publish(key, opened(T0 + 60), T0 + 60, 120)
    assert not await store.publish(key, opened(T0 + 10, "b"), T0 + 10, 70)
    assert not await store.publish(key, closed(T0 + 30, "b"), T0 + 30, 60)  # still in force
    assert await store.read([key]) == [opened(T0 + 60)]
    assert await store.publish(key, opened(T0 + 90, "b"), T0 + 90, 150)  # a longer trip
    assert await store.publish(key, closed(T0 + 90, "a"), T0 + 90, 60)  # after it ended
    assert await store.read([key, key + ":none"]) == [closed(T0 + 90, "a"), None]


async def test_records_expire_with_their_ttl(store: RedisStateStore, key: str) -> None:
    await store.publish(key, opened(T0 + 5), T0 + 5, 65.5)
    client = Redis.from_url(REDIS_URL)
    try:
        ttl = await client.pttl(key)
    finally:
        await client.aclose()
    assert 65_000 < ttl <= 65_500


async def test_garbage_under_the_key_is_overwritten(store: RedisStateStore, key: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.set(key, "{not json", px=60_000)
    finally:
        await client.aclose()
    assert await store.publish(key, opened(T0 + 5), T0 + 5, 65)
    assert await store.read([key]) == [opened(T0 + 5)]


async def test_an_unreachable_redis_is_unavailable_without_its_password() -> None:
    port = free_port()
    store = RedisStateStore(f"redis://:hunter2-secret@127.0.0.1:{port}/0", timeout=0.3)
    try:
        for call in (store.read(["k"]), store.publish("k", closed(T0), T0, 60)):
            with pytest.raises(SharedStateUnavailable) as caught:
                await call
            assert f"127.0.0.1:{port}" in str(caught.value)
            assert "hunter2" not in str(caught.value)
    finally:
        await store.close()
