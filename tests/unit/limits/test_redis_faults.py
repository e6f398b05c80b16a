"""The Redis store when Redis goes away: a private `redis-server` per test on a free port
(never the shared one), stopped, frozen and restarted under the same store object."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from aigw.limits.redis_store import RedisCounterStore
from aigw.limits.store import CounterStoreUnavailable
from tests.redis_server import PrivateRedis
from tests.support import free_port

T0 = 1_767_225_600.0
TIMEOUT = 0.3


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    private = PrivateRedis()
    private.start()
    try:
        yield private
    finally:
        private.stop()


async def take(store: RedisCounterStore, cost: int = 1, key: str = "k") -> bool:
    return (await store.window_take(key, 60, 1000, cost, T0)).allowed


async def expect_unavailable(store: RedisCounterStore, key: str = "k") -> str:
    started = time.monotonic()
    with pytest.raises(CounterStoreUnavailable) as caught:
        await take(store, key=key)
    assert time.monotonic() - started < TIMEOUT + 0.2  # no hang beyond the timeout
    return str(caught.value)


async def test_a_stopped_redis_fails_fast_and_a_restarted_one_is_used_again(
    server: PrivateRedis,
) -> None:
    store = RedisCounterStore(server.url, timeout=TIMEOUT)
    await store.start()
    try:
        assert await take(store)
        server.stop()
        for _ in range(3):
            message = await expect_unavailable(store)
            assert f"127.0.0.1:{server.port}" in message
        server.start()  # same port, empty, without our scripts
        assert await take(store)
        assert (await store.period_take("q", T0, T0 + 60, 10, 1, T0)).allowed
    finally:
        await store.close()


async def test_a_frozen_redis_times_out_and_recovers(server: PrivateRedis) -> None:
    store = RedisCounterStore(server.url, timeout=TIMEOUT)
    await store.start()
    try:
        assert await take(store)
        server.freeze(True)
        message = await expect_unavailable(store, key="frozen")
        assert f"127.0.0.1:{server.port}" in message
        server.freeze(False)
        assert await take(store)
    finally:
        server.freeze(False)
        await store.close()


async def test_starting_without_redis_is_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    private = PrivateRedis()  # not started yet
    store = RedisCounterStore(private.url, timeout=TIMEOUT)
    try:
        with caplog.at_level(logging.WARNING, logger="aigw.limits"):
            await store.start()
        assert f"127.0.0.1:{private.port}" in caplog.text
        await expect_unavailable(store)
        private.start()
        assert await take(store)
    finally:
        await store.close()
        private.stop()


@pytest.mark.parametrize(
    ("userinfo", "secrets"),
    [
        (":hunter2-secret", ["hunter2-secret"]),
        ("alice:p%40ss%3Aword-9", ["p@ss:word-9", "p%40ss%3Aword-9"]),
    ],
)
async def test_a_password_never_appears_in_the_error(userinfo: str, secrets: list[str]) -> None:
    port = free_port()  # nothing listens there
    store = RedisCounterStore(f"redis://{userinfo}@127.0.0.1:{port}/0", timeout=TIMEOUT)
    try:
        message = await expect_unavailable(store)
    finally:
        await store.close()
    assert f"127.0.0.1:{port}" in message
    for secret in secrets:
        assert secret not in message


async def test_a_wrong_password_is_unavailable_without_showing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    private = PrivateRedis("--requirepass", "the-right-one")
    private.start()
    store = RedisCounterStore(f"redis://:wrong-pw-471@127.0.0.1:{private.port}/0", timeout=TIMEOUT)
    try:
        with caplog.at_level(logging.WARNING, logger="aigw.limits"):
            await store.start()
        with pytest.raises(CounterStoreUnavailable) as caught:
            await take(store)
    finally:
        await store.close()
        private.stop()
    chain = f"{caught.value} {caught.value.__cause__!r} {caplog.text}"
    assert "wrong-pw-471" not in chain
    assert f"127.0.0.1:{private.port}" in str(caught.value)


async def test_a_closed_store_refuses_and_closes_once(server: PrivateRedis) -> None:
    store = RedisCounterStore(server.url, timeout=TIMEOUT)
    await store.close()
    await store.close()
    assert "closed" in await expect_unavailable(store)
