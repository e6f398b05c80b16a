"""The counter store's own Redis connection: what a URL may ask for (refused at config load
otherwise), AUTH, database and TLS, NOSCRIPT, callers that give up, uvloop, and a server that
answers nonsense. Private `redis-server`s for anything that changes the server; the shared
one on 6379 only under a fresh key prefix, deleted afterwards."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvloop
import yaml

from aigw.config.errors import ConfigError
from aigw.config.loader import load_config, load_config_text
from aigw.limits.redis_connection import RedisAddress, describe_url
from aigw.limits.redis_store import RedisCounterStore, window_key
from aigw.limits.store import CounterStoreUnavailable
from aigw.runtime import build_runtime
from tests.redis_server import REDIS_SERVER, PrivateRedis
from tests.support import free_port

REDIS_URL = os.environ.get("AIGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_767_225_600.0
MINUTE = 60.0


def test_a_url_gives_user_password_database_and_tls() -> None:
    plain = RedisAddress.parse("redis://alice:p%40ss@redis.internal:6380/3")
    assert (plain.host, plain.port, plain.username, plain.password, plain.db) == (
        "redis.internal",
        6380,
        "alice",
        "p@ss",
        3,
    )
    assert plain.tls is None
    assert plain.setup() == [("AUTH", "alice", "p@ss"), ("SELECT", 3)]
    bare = RedisAddress.parse("redis://:secret@localhost")
    assert (bare.port, bare.db, bare.setup()) == (6379, 0, [("AUTH", "secret")])
    assert RedisAddress.parse("redis://h?db=5").db == 5
    assert RedisAddress.parse("redis://h/0").setup() == []
    tls = RedisAddress.parse("rediss://h:6390/0")
    assert tls.tls is not None and tls.tls.verify_mode == ssl.CERT_REQUIRED
    assert tls.tls.check_hostname
    loose = RedisAddress.parse("rediss://h/0?ssl_cert_reqs=none")
    assert loose.tls is not None and loose.tls.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?socket_timeout=1", "does not support socket_timeout"),
        ("redis://h/0?ssl_cert_reqs=none", "does not support ssl_cert_reqs"),  # not TLS
        ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("rediss://h/0?ssl_ca_certs=/nonexistent/ca.pem", "cannot be read"),
        ("rediss://h/0?ssl_check_hostname=perhaps", "ssl_check_hostname must be true or false"),
        ("redis://h/zero", "not a number"),
        ("redis://h:99999/0", "bad port"),
        ("unix:///tmp/redis.sock", "must start with redis:// or rediss://"),
    ],
)
def test_what_the_store_cannot_do_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisAddress.parse(url)


# Generated passwords with a reserved character left unencoded: urllib ends the host part
# there, so pieces of the password read as the port, the database or the query.
MISREAD = [
    "rediss://:Sup3rS3cr/etKeyPart2+x=@cache.example.net:6380",
    "rediss://:Sup3rS3cr#etKeyPart2+x=@cache.example.net:6380",
    "rediss://:Sup3rS3cr?etKeyPart2+x=@cache.example.net:6380",
    "redis://:Sup3rS3cr?db=etKeyPart2@cache.example.net:6380",
    "redis://:Sup3rS3cr/9etKeyPart2@cache.example.net",
    "redis://:Sup3r[Qz7]/etKeyPart2@cache.example.net",  # urllib's own error quotes "Qz7"
]
PIECES = ("Sup3r", "etKeyPart2", "Qz7")


@pytest.mark.parametrize("url", MISREAD)
def test_a_misread_url_is_refused_without_quoting_any_of_it(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        RedisAddress.parse(url)
    assert not any(piece in str(caught.value) for piece in PIECES), caught.value


@pytest.mark.parametrize("url", MISREAD)
def test_a_misread_url_names_its_server_by_a_fixed_text(url: str) -> None:
    # For the stores' messages: "localhost:6379" would be a guess, "Qz7" a piece of the password.
    assert describe_url(url) == ("(unparseable URL)", [])


def test_a_misread_url_is_a_config_error_naming_counters_url_only() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(f"counters: {{url: '{MISREAD[0]}'}}\n")
    assert str(caught.value).startswith("counters.url: ")
    assert "percent-encode reserved characters in the password" in str(caught.value)
    assert not any(piece in str(caught.value) for piece in PIECES)


def test_a_bad_port_is_named_without_quoting_it() -> None:
    with pytest.raises(ValueError, match="bad port") as caught:
        RedisAddress.parse("redis://cache.example.net:63x79/0")
    assert "63x79" not in str(caught.value)


def test_an_unsupported_url_is_a_config_error_naming_counters_url(tmp_path: Path) -> None:
    config = {
        "gateway": {"port": free_port()},
        "counters": {"url": "redis://127.0.0.1:6379/0?health_check_interval=5"},
        "backends": {"demo": {"url": "http://127.0.0.1:9"}},
        "apis": {
            "chat": {
                "type": "openai",
                "path": "openai",
                "backend": "demo",
                "subscription-required": False,
                "policies": {
                    "inbound": [
                        {
                            "llm-token-limit": {
                                "counter-key": "k",
                                "tokens-per-minute": 100,
                                "estimate-prompt-tokens": False,
                            }
                        }
                    ]
                },
            }
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        build_runtime(load_config(path))
    assert "counters.url" in str(caught.value)
    assert "health_check_interval" in str(caught.value)


@pytest.fixture
def keys() -> Iterator[str]:
    """A fresh key prefix on the shared Redis, whose keys are deleted in databases 0 and 13."""
    prefix = f"test-{uuid.uuid4().hex}-"
    yield prefix
    for db in (0, 13):
        client = redis.Redis.from_url(f"{REDIS_URL.rsplit('/', 1)[0]}/{db}")
        try:
            stale = list(client.scan_iter(match=f"aigw:*{prefix}*", count=1000))
            if stale:
                client.delete(*stale)
        finally:
            client.close()


async def test_the_database_in_the_url_is_the_one_used(keys: str) -> None:
    base = REDIS_URL.rsplit("/", 1)[0]
    store = RedisCounterStore(f"{base}/13")
    try:
        await store.window_take(keys + "a", MINUTE, 100, 7, T0)
    finally:
        await store.close()
    in_13 = redis.Redis.from_url(f"{base}/13")
    in_0 = redis.Redis.from_url(f"{base}/0")
    try:
        assert in_13.exists(window_key(keys + "a", MINUTE)) == 1
        assert in_0.exists(window_key(keys + "a", MINUTE)) == 0
    finally:
        in_13.close()
        in_0.close()


async def test_a_named_user_authenticates() -> None:
    server = PrivateRedis(
        "--user", "default", "off", "--user", "alice", "on", ">s3cret", "~*", "+@all"
    )
    server.start()
    try:
        store = RedisCounterStore(f"redis://alice:s3cret@127.0.0.1:{server.port}/0", timeout=0.5)
        try:
            assert (await store.window_take("k", MINUTE, 100, 5, T0)).used == 5
        finally:
            await store.close()
        wrong = RedisCounterStore(f"redis://alice:nope@127.0.0.1:{server.port}/0", timeout=0.5)
        try:
            with pytest.raises(CounterStoreUnavailable, match="WRONGPASS"):
                await wrong.window_take("k", MINUTE, 100, 5, T0)
        finally:
            await wrong.close()
    finally:
        server.stop()


async def test_scripts_flushed_on_the_server_are_sent_again() -> None:
    server = PrivateRedis()
    server.start()
    store = RedisCounterStore(server.url, timeout=0.5)
    try:
        await store.start()
        assert (await store.window_take("k", MINUTE, 100, 5, T0)).used == 5
        client = redis.Redis(port=server.port)
        client.script_flush()
        client.close()
        assert (await store.window_take("k", MINUTE, 100, 5, T0)).used == 10  # once, not twice
        await store.window_adjust("k", MINUTE, T0, -3, T0)
        assert (await store.window_peek("k", MINUTE, 100, T0)).used == 7
    finally:
        await store.close()
        server.stop()


async def test_callers_that_give_up_do_not_shift_the_replies(keys: str) -> None:
    """Replies are matched to commands by their order: a cancelled caller's reply is dropped,
    every other caller gets its own."""
    store = RedisCounterStore(REDIS_URL)
    try:
        await store.start()
        tasks = [
            asyncio.ensure_future(store.window_take(f"{keys}{i}", MINUTE, 10_000, i + 1, T0))
            for i in range(120)
        ]
        await asyncio.sleep(0)  # all sent, none answered yet
        for task in tasks[::3]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 3 == 0:
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert not isinstance(result, BaseException)
                assert result.used == i + 1
        assert (await store.window_peek(f"{keys}7", MINUTE, 10_000, T0)).used == 8
    finally:
        await store.close()


def test_the_store_runs_on_uvloop(keys: str) -> None:
    """The gateway's event loop: its transports are not asyncio's classes."""

    async def use() -> tuple[int, int]:
        store = RedisCounterStore(REDIS_URL)
        try:
            await store.start()
            taken = await store.window_take(keys + "uv", MINUTE, 100, 30, T0)
            await store.window_adjust(keys + "uv", MINUTE, taken.bucket, -10, T0)
            return taken.used, (await store.window_peek(keys + "uv", MINUTE, 100, T0)).used
        finally:
            await store.close()

    assert uvloop.run(use()) == (30, 20)


async def test_a_server_answering_nonsense_is_left_and_the_next_call_connects_again() -> None:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        while await reader.read(65536):
            # The first connection answers in no protocol at all, the second as Redis would.
            writer.write(b"?what\r\n" if first else b"*2\r\n:1\r\n:5\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisCounterStore(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    try:
        with pytest.raises(CounterStoreUnavailable, match="unreadable reply"):
            await store.window_take("k", MINUTE, 100, 5, T0)
        assert (await store.window_take("k", MINUTE, 100, 5, T0)).used == 5
        assert connections == 2
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A private redis-server speaking only TLS, with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj"]
    request += ["/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", *request, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    quiet = ["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--bind", "127.0.0.1", *tls, *quiet],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert))
                client.ping()
                client.close()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield port, cert
    finally:
        process.terminate()
        process.wait(5)


async def test_tls_with_the_servers_certificate(tls_redis: tuple[int, Path]) -> None:
    port, cert = tls_redis
    trusted = RedisCounterStore(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}", timeout=1)
    try:
        assert (await trusted.window_take("k", MINUTE, 100, 5, T0)).used == 5
    finally:
        await trusted.close()
    # Without it the self-signed certificate is not trusted: no counters on an unverified peer.
    untrusted = RedisCounterStore(f"rediss://127.0.0.1:{port}/0", timeout=1)
    try:
        with pytest.raises(CounterStoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.window_take("k", MINUTE, 100, 5, T0)
    finally:
        await untrusted.close()
    # Plain Redis against a TLS port gets no answer it can read: unavailable, not a hang.
    plain = RedisCounterStore(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(CounterStoreUnavailable):
            await plain.window_take("k", MINUTE, 100, 5, T0)
        assert time.monotonic() - started < 0.6
    finally:
        await plain.close()
