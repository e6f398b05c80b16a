"""Token limits with the Redis counter store, through real gateway processes.

Two gateways share the Redis on 127.0.0.1:6379 (counter keys carry a fresh prefix per run,
deleted afterwards) and take load from 50 concurrent clients on one counter key; a gateway
with `--workers 2` shares its counters through Redis; and a private `redis-server` on a
port of its own is stopped, frozen and restarted under load.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.helpers import assert_error, base_config, wait_until
from tests.redis_server import PrivateRedis
from tests.support import DemoBackend, Gateway

REDIS_URL = os.environ.get("AIGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = uuid.uuid4().hex[:8]
MODEL = "gpt-4o"
HELLO = [{"role": "user", "content": "Hello"}]
PROMPT_TOKENS = 8  # "Hello" as gpt-4o counts it, and as the demo backend reports it
MAX_TOKENS = 20
LIMIT = 2000
CLIENTS = 50
STORE_TIMEOUT = 0.3


def limit_api(path: str, tpm: int, **extra: Any) -> dict[str, Any]:
    key = f'@("{RUN}:{path}:" + context.Request.Headers.GetValueOrDefault("x-key", "-"))'
    policy = {
        "counter-key": key,
        "tokens-per-minute": tpm,
        "estimate-prompt-tokens": True,
        "remaining-tokens-header-name": "x-remaining-tokens",
        **extra,
    }
    return {
        "type": "openai",
        "subscription-required": False,
        "path": path,
        "backend": "demo",
        "policies": {"inbound": ["base", {"llm-token-limit": policy}]},
    }


def redis_config(demo_url: str, counters_url: str, **apis: dict[str, Any]) -> dict[str, Any]:
    config = base_config(demo_url)
    config["counters"] = {"url": counters_url, "timeout": STORE_TIMEOUT}
    config["apis"].update(apis)
    return config


@pytest.fixture(scope="module", autouse=True)
def forget_counters() -> Iterator[None]:
    """Delete this run's counters from the shared Redis afterwards (they expire anyway)."""
    yield
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"aigw:*{RUN}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, demo_backend: DemoBackend
) -> Iterator[list[Gateway]]:
    config = redis_config(
        demo_backend.url,
        REDIS_URL,
        strict=limit_api("strict", LIMIT, strict=True),
        loose=limit_api("loose", LIMIT),
        small=limit_api("small", 300),
        quota=limit_api(
            "quota", 1_000_000, strict=True, **{"token-quota": 300, "token-quota-period": "Monthly"}
        ),
    )
    workdir = Path(tmp_path_factory.mktemp("replicas"))
    gateways = [Gateway(workdir, config), Gateway(workdir, config)]
    yield gateways
    for gateway in gateways:
        gateway.stop()


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": HELLO, "max_tokens": MAX_TOKENS, **extra}


def demo_headers(key: str, chunks: int, latency_ms: int = 20) -> dict[str, str]:
    return {"x-key": key, "x-demo-chunks": str(chunks), "x-demo-latency-ms": str(latency_ms)}


@dataclass
class Load:
    admitted: list[int]  # usage.total_tokens of each 200
    refused: int
    seconds: float


async def _load(gateways: list[Gateway], path: str, key: str, latency_ms: int = 20) -> Load:
    """`CLIENTS` clients, each sending to both gateways in turn until it is refused twice."""
    admitted: list[int] = []
    refused = 0
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)

    async def client(http: httpx.AsyncClient, index: int) -> None:
        nonlocal refused
        mine = 0
        for turn in range(40):
            gateway = gateways[(index + turn) % len(gateways)]
            chunks = 5 + (index * 7 + turn) % 16  # answers of 13 to 28 tokens
            response = await http.post(
                f"{gateway.url}/{path}/v1/chat/completions",
                json=chat_body(),
                headers=demo_headers(key, chunks, latency_ms),
            )
            if response.status_code == 200:
                admitted.append(response.json()["usage"]["total_tokens"])
                continue
            assert_error(response, 429, "Token limit is exceeded")
            refused, mine = refused + 1, mine + 1
            if mine == 2:
                return

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        await asyncio.gather(*(client(http, index) for index in range(CLIENTS)))
    return Load(admitted, refused, time.monotonic() - started)


def test_strict_mode_never_admits_more_than_the_limit_across_two_replicas(
    replicas: list[Gateway],
) -> None:
    load = asyncio.run(_load(replicas, "strict", uuid.uuid4().hex))
    largest = PROMPT_TOKENS + MAX_TOKENS  # what strict mode reserves for each request
    assert max(load.admitted) <= largest
    assert sum(load.admitted) <= LIMIT, (sum(load.admitted), len(load.admitted))
    # Unused reservations come back: the limit gets used, not just reserved (keeping them
    # would stop near 2000 * 20.5 / 28 tokens, the average answer over the reservation).
    assert sum(load.admitted) > 0.9 * LIMIT
    assert load.refused == 2 * CLIENTS
    assert load.seconds < 10


def test_default_mode_overshoots_by_at_most_the_largest_single_request(
    replicas: list[Gateway],
) -> None:
    """Without strict mode a request is admitted while its prompt fits, but it holds its
    max_tokens while in flight, so concurrent requests cannot all cross the limit together:
    only the completion of the request that crossed it goes over. (A backend latency of
    100 ms keeps many requests in flight: taking only prompts went ~125 tokens over here.)"""
    load = asyncio.run(_load(replicas, "loose", uuid.uuid4().hex, latency_ms=100))
    largest = max(load.admitted)
    assert largest <= PROMPT_TOKENS + MAX_TOKENS
    over = sum(load.admitted) - LIMIT
    assert over <= largest - PROMPT_TOKENS, (over, len(load.admitted))
    # What was held comes back when a request ends: the limit gets used, not just held.
    assert sum(load.admitted) > 0.9 * LIMIT
    assert load.refused == 2 * CLIENTS
    assert load.seconds < 10


def test_a_refusal_behind_a_request_in_flight_on_another_replica_retries_soon(
    replicas: list[Gateway],
) -> None:
    """Refused because of what a request on the other replica holds: `Retry-After: 1`, and a
    client that waits that long is admitted once that request has ended."""
    key = uuid.uuid4().hex

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as http:
            # 8 + 295 tokens do not fit in 300; its prompt does, so it is admitted.
            slow = asyncio.create_task(
                http.post(
                    f"{replicas[0].url}/small/v1/chat/completions",
                    json=chat_body(max_tokens=295),
                    headers=demo_headers(key, 5, latency_ms=500),
                )
            )
            await asyncio.sleep(0.2)
            refused = await http.post(
                f"{replicas[1].url}/small/v1/chat/completions",
                json=chat_body(),
                headers=demo_headers(key, 5, latency_ms=0),
            )
            await asyncio.sleep(int(refused.headers.get("retry-after", "0")))
            first = await slow
            admitted = await http.post(
                f"{replicas[1].url}/small/v1/chat/completions",
                json=chat_body(),
                headers=demo_headers(key, 5, latency_ms=0),
            )
            return first, refused, admitted

    first, refused, admitted = asyncio.run(scenario())
    assert first.status_code == 200, first.text
    assert_error(refused, 429, "Token limit is exceeded. Try again in 1 seconds.")
    assert refused.headers["retry-after"] == "1"
    assert admitted.status_code == 200, admitted.text
    # 300 - 13 (the first, settled) - 13 (this one)
    assert admitted.headers["x-remaining-tokens"] == "274"


def test_a_strict_quota_held_on_another_replica_is_a_429_not_a_403(
    replicas: list[Gateway],
) -> None:
    """What a request in flight on the other replica holds of a quota comes back when it
    ends: the refusal says so (429, `Retry-After: 1`) instead of "wait for the renewal"."""
    key = uuid.uuid4().hex
    url = "/quota/v1/chat/completions"

    async def scenario() -> tuple[httpx.Response, ...]:
        async with httpx.AsyncClient(timeout=10) as http:
            # 8 + 250 of the 300: admitted, and holds its 250 while it runs.
            slow = asyncio.create_task(
                http.post(
                    f"{replicas[0].url}{url}",
                    json=chat_body(max_tokens=250),
                    headers=demo_headers(key, 5, latency_ms=500),
                )
            )
            await asyncio.sleep(0.2)
            held = await http.post(
                f"{replicas[1].url}{url}",
                json=chat_body(max_tokens=60),
                headers=demo_headers(key, 5, latency_ms=0),
            )
            too_large = await http.post(
                f"{replicas[1].url}{url}",
                json=chat_body(max_tokens=295),
                headers=demo_headers(key, 5, latency_ms=0),
            )
            first = await slow
            await asyncio.sleep(int(held.headers.get("retry-after", "0")))
            admitted = await http.post(
                f"{replicas[1].url}{url}",
                json=chat_body(max_tokens=60),
                headers=demo_headers(key, 5, latency_ms=0),
            )
            return first, held, too_large, admitted

    first, held, too_large, admitted = asyncio.run(scenario())
    assert first.status_code == 200, first.text
    assert_error(
        held,
        429,
        "Token quota is exceeded for now: requests in flight hold the rest. "
        "Try again in 1 seconds.",
    )
    assert held.headers["retry-after"] == "1"
    # 8 + 303 would not fit even with nothing held: the quota's own answer.
    assert_error(too_large, 403, "Token quota is exceeded. Quota will be replenished at")
    assert admitted.status_code == 200, admitted.text


def test_default_mode_overshoots_by_at_most_the_last_request_without_concurrency(
    replicas: list[Gateway],
) -> None:
    """One client alternating between the replicas: admitted while anything is left, so the
    limit is exceeded by no more than the request that crossed it."""
    key, admitted = uuid.uuid4().hex, []
    with httpx.Client(timeout=10) as http:
        for turn in range(40):
            response = http.post(
                f"{replicas[turn % 2].url}/small/v1/chat/completions",
                json=chat_body(),
                headers=demo_headers(key, 5 + turn % 16, latency_ms=0),
            )
            if response.status_code == 429:
                break
            assert response.status_code == 200, response.text
            admitted.append(response.json()["usage"]["total_tokens"])
            time.sleep(0.01)  # its charge is settled just after the answer
    assert response.status_code == 429
    # Each was admitted while its prompt (8 tokens) fitted; the refused one no longer did.
    assert sum(admitted) - admitted[-1] + PROMPT_TOKENS <= 300 < sum(admitted) + PROMPT_TOKENS
    assert sum(admitted) - 300 <= max(admitted) - PROMPT_TOKENS


def test_several_workers_share_their_counters_through_redis(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    config = redis_config(demo_backend.url, REDIS_URL, workers=limit_api("workers", 100))
    gateway = Gateway(tmp_path, config, "--workers", "2")
    try:
        key, statuses = uuid.uuid4().hex, []
        for _ in range(10):  # a new connection each time, so both workers take requests
            with httpx.Client(base_url=gateway.url, timeout=10) as http:
                response = http.post(
                    "/workers/v1/chat/completions",
                    json=chat_body(),
                    headers=demo_headers(key, MAX_TOKENS, latency_ms=0),
                )
            statuses.append(response.status_code)
            time.sleep(0.02)
        # 28 tokens each: admitted at 0, 28, 56 and 84 used, then refused by every worker.
        assert statuses == [200] * 4 + [429] * 6
    finally:
        assert gateway.stop() == 0


# --- Redis going away ---------------------------------------------------------------------


@dataclass
class Outcome:
    at: float
    api: str
    status: int
    seconds: float
    retry_after: str | None


class Traffic:
    """Threads sending requests to the fail-closed and fail-open APIs until stopped."""

    def __init__(self, gateway: Gateway, threads: int = 4) -> None:
        self.gateway = gateway
        self.outcomes: list[Outcome] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        api = ("closed", "open")[index % 2]
        key = f"load-{index}"
        with httpx.Client(base_url=self.gateway.url, timeout=10) as http:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    response = http.post(
                        f"/{api}/v1/chat/completions",
                        json=chat_body(),
                        headers=demo_headers(key, 5, latency_ms=5),
                    )
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(repr(exc))
                    continue
                problem = _unexpected(response)
                if problem:
                    with self.lock:
                        self.errors.append(problem)
                outcome = Outcome(
                    started,
                    api,
                    response.status_code,
                    time.monotonic() - started,
                    response.headers.get("retry-after"),
                )
                with self.lock:
                    self.outcomes.append(outcome)

    def between(self, start: float, end: float, api: str) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if o.api == api and start <= o.at < end]

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_stopped_frozen_and_restarted_under_load(
    tmp_path: Path, demo_backend: DemoBackend, private_redis: PrivateRedis
) -> None:
    config = redis_config(
        demo_backend.url,
        private_redis.url,
        closed=limit_api("closed", 100_000),
        open=limit_api("open", 100_000, **{"on-store-error": "fail-open"}),
        after=limit_api("after", 100),
    )
    gateway = Gateway(tmp_path, config)
    try:
        _outage_under_load(gateway, private_redis)
    finally:
        gateway.stop()
    log = gateway.stderr()
    assert "LimitStoreUnavailable" in log and "fail-open" in log


def _outage_under_load(gateway: Gateway, private_redis: PrivateRedis) -> None:
    traffic = Traffic(gateway)
    try:
        time.sleep(0.3)
        private_redis.stop()
        down = time.monotonic()
        time.sleep(1.0)
        up = time.monotonic()
        private_redis.start()  # the same port, empty: the scripts are loaded again
        assert wait_until(lambda: _recent(traffic, "closed", 200), timeout=5)
        time.sleep(0.3)
        frozen = time.monotonic()
        private_redis.freeze(True)  # no answer at all: each check waits out the timeout
        time.sleep(1.5)
        thawed = time.monotonic()
        private_redis.freeze(False)
        assert wait_until(lambda: _recent(traffic, "closed", 200), timeout=5)
        time.sleep(0.3)
    finally:
        traffic.stop()
    assert traffic.errors == []

    margin = 0.05  # requests that straddle a change may go either way
    for start, end, least in ((down, up, 0.0), (frozen, thawed, STORE_TIMEOUT - 0.05)):
        closed = traffic.between(start + margin, end - STORE_TIMEOUT - margin, "closed")
        assert closed and all(o.status == 503 for o in closed), closed
        for outcome in closed:
            # Refused within the store's timeout (and a little scheduling), with Retry-After.
            assert least <= outcome.seconds < STORE_TIMEOUT + 0.5, outcome
            assert outcome.retry_after is not None and 1 <= int(outcome.retry_after) <= 60
        opened = traffic.between(start + margin, end - STORE_TIMEOUT - margin, "open")
        assert opened and all(o.status == 200 for o in opened), opened
    assert {o.status for o in traffic.outcomes} <= {200, 503}
    assert all(o.status == 200 for o in traffic.outcomes if o.api == "open")
    recovered = [o for o in traffic.between(up, frozen, "closed") if o.at + o.seconds < frozen]
    assert recovered[-1].status == 200
    assert traffic.between(thawed, time.monotonic(), "closed")[-1].status == 200

    # Counting works again without a gateway restart: 100 tokens, 28 per answer.
    key, statuses = uuid.uuid4().hex, []
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for _ in range(6):
            response = http.post(
                "/after/v1/chat/completions",
                json=chat_body(),
                headers=demo_headers(key, MAX_TOKENS, latency_ms=0),
            )
            statuses.append(response.status_code)
            time.sleep(0.02)
    assert statuses == [200] * 4 + [429] * 2


def _unexpected(response: httpx.Response) -> str | None:
    """What is wrong with an answer under the fault test, if anything."""
    if response.status_code == 200:
        return None
    try:
        assert_error(response, 503, "Limits cannot be checked")
    except AssertionError as exc:
        return f"{response.status_code} {response.text}: {exc}"
    return None


def _recent(traffic: Traffic, api: str, status: int) -> bool:
    latest = traffic.between(time.monotonic() - 0.3, time.monotonic(), api)
    return bool(latest) and latest[-1].status == status


def test_a_client_that_leaves_while_redis_is_frozen_is_charged_nothing(
    tmp_path: Path, demo_backend: DemoBackend, private_redis: PrivateRedis
) -> None:
    """The take reaches a frozen Redis, the client gives up, Redis thaws and runs it: what it
    took (the prompt, the completion held, the strict quota) is given back."""
    tpm, quota = 100_000, 1_000_000
    config = redis_config(
        demo_backend.url,
        private_redis.url,
        leave=limit_api(
            "leave",
            tpm,
            strict=True,
            **{
                "token-quota": quota,
                "token-quota-period": "Monthly",
                "remaining-quota-tokens-header-name": "x-remaining-quota",
            },
        ),
    )
    config["counters"]["timeout"] = 5.0  # Redis is frozen for less: the reply does come
    gateway = Gateway(tmp_path, config)
    key = uuid.uuid4().hex
    try:
        with httpx.Client(base_url=gateway.url) as http:
            http.post(  # the scripts are loaded and the connection is open
                "/leave/v1/chat/completions",
                json=chat_body(),
                headers=demo_headers(uuid.uuid4().hex, 1, latency_ms=0),
            )
            private_redis.freeze(True)
            try:
                with pytest.raises(httpx.TimeoutException):
                    http.post(
                        "/leave/v1/chat/completions",
                        json=chat_body(max_tokens=1000),
                        headers=demo_headers(key, 1, latency_ms=0),
                        timeout=0.5,
                    )
                time.sleep(0.3)  # the gateway sees the disconnect while Redis is frozen
            finally:
                private_redis.freeze(False)
            time.sleep(0.5)  # the take runs, then its give-back
            response = http.post(
                "/leave/v1/chat/completions",
                json=chat_body(),
                headers=demo_headers(key, MAX_TOKENS, latency_ms=0),
                timeout=10,
            )
    finally:
        gateway.stop()
    assert response.status_code == 200, response.text
    used = response.json()["usage"]["total_tokens"]
    assert response.headers["x-remaining-tokens"] == str(tpm - used)
    assert response.headers["x-remaining-quota"] == str(quota - used)
