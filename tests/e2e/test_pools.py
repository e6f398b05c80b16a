"""Pools through the real gateway process, against controllable members on 127.0.0.1:
PTU → PAYG spill-over and return, failover re-sending the exact body, no retry once a
stream has started, first-byte and read timeouts, 503 with an honest Retry-After when every
member is tripped, a member taken out by its health probe and back, and the admin API's view
of it all. (Breakers shared through Redis: `test_pools_shared.py`.)

Each scenario has its own pool, members and API path, so their breakers do not meet.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.admin_helpers import TOKEN_ENV, admin_client
from tests.e2e.helpers import CHAT_BODY, MODEL, assert_error, wait_until
from tests.e2e.pool_members import OK, MockMember, Mode, refusing_url
from tests.support import Gateway, free_port

MESSAGES: list[Any] = [{"role": "user", "content": "Hello"}]
ALL_FAILURES = {
    "count": 1,
    "interval": 10,
    "status-code-ranges": [429, "500-599"],
    "error-reasons": ["connection-failure", "timeout", "stalled"],
}


def breaker(trip: float = 30, max_retry_after: float = 30, **condition: Any) -> dict[str, Any]:
    return {
        "rules": [
            {
                "name": "throttled-or-failing",
                "failure-condition": {**ALL_FAILURES, **condition},
                "trip-duration": trip,
                "accept-retry-after": True,
                "max-retry-after": max_retry_after,
            }
        ]
    }


# name → (members as (name, priority), pool settings)
POOLS: dict[str, tuple[list[tuple[str, int]], dict[str, Any]]] = {
    "spill": ([("ptu", 1), ("payg-1", 2), ("payg-2", 2)], {}),
    "resend": ([("resend-1", 1), ("resend-2", 2)], {}),
    "stream": ([("stream-1", 1), ("stream-2", 2)], {"first-byte-timeout": 2}),
    "stall": ([("stall-1", 1), ("stall-2", 2)], {"first-byte-timeout": 0.5}),
    "slow": ([("slow-1", 1), ("slow-2", 2)], {}),
    "dead": ([("dead-1", 1), ("dead-2", 2)], {}),
    "probed": ([("probed-1", 1), ("probed-2", 2)], {}),
}
HEALTH_CHECK = {
    "path": "/healthz",
    "interval": 0.2,
    "timeout": 1,
    "unhealthy-threshold": 2,
    "healthy-threshold": 2,
}


@pytest.fixture(scope="module")
def members() -> Iterator[dict[str, MockMember]]:
    started = {
        name: MockMember(name)
        for pool_members, _ in POOLS.values()
        for name, _ in pool_members
        if name != "dead-1"
    }
    yield started
    for member in started.values():
        member.stop()


def member_config(name: str, url: str) -> dict[str, Any]:
    config: dict[str, Any] = {"url": url, "timeouts": {"connect": 1, "read": 10}}
    if name in ("ptu", "payg-1", "payg-2"):
        config["circuit-breaker"] = breaker()
    elif name == "slow-1":
        config["timeouts"]["read"] = 1
    elif name == "dead-1":  # refuses connections
        config["circuit-breaker"] = breaker(trip=4)
    elif name == "dead-2":  # asks for 20 s, capped at 6
        config["circuit-breaker"] = breaker(trip=30, max_retry_after=6)
    elif name == "probed-1":
        config["health-check"] = HEALTH_CHECK
    return config


@pytest.fixture(scope="module")
def gateway_config(members: dict[str, MockMember]) -> dict[str, Any]:
    urls = {name: member.url for name, member in members.items()}
    urls["dead-1"] = refusing_url()
    backends: dict[str, Any] = {name: member_config(name, url) for name, url in urls.items()}
    apis: dict[str, Any] = {}
    for pool, (pool_members, settings) in POOLS.items():
        backends[pool] = {
            "type": "pool",
            "pool": {
                "members": [{"backend": name, "priority": p} for name, p in pool_members],
                **settings,
            },
        }
        apis[pool] = {
            "type": "openai",
            "path": pool,
            "backend": pool,
            "subscription-required": False,
        }
    return {
        "gateway": {"host": "127.0.0.1"},
        "named-values": {"admin-token": {"env": "AIGW_TEST_ADMIN_TOKEN", "secret": True}},
        "admin": {"port": free_port(), "token": "{{admin-token}}"},
        "backends": backends,
        "apis": apis,
    }


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, gateway_config: dict[str, Any]
) -> Iterator[Gateway]:
    gw = Gateway(Path(tmp_path_factory.mktemp("pools")), gateway_config, env=TOKEN_ENV)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def admin(gateway: Gateway, gateway_config: dict[str, Any]) -> Iterator[httpx.Client]:
    with admin_client(gateway_config) as client:
        yield client


def sdk(gateway: Gateway, pool: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/{pool}/v1", api_key="x", max_retries=0)


def ask(client: openai.OpenAI) -> str:
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    return answer.choices[0].message.content or ""


def test_ptu_spills_over_to_payg_and_gets_the_traffic_back_after_its_retry_after(
    gateway: Gateway, members: dict[str, MockMember]
) -> None:
    ptu = members["ptu"]
    ptu.set(Mode("throttle", 3))
    with sdk(gateway, "spill") as client:
        # Every client request succeeds: the first one fails over within itself.
        answers = Counter(ask(client) for _ in range(10))
        assert answers == {"from payg-1": 5, "from payg-2": 5}
        assert ptu.calls == 1  # its breaker tripped on the 429: not asked again
        ptu.set(OK)
        time.sleep(3.2)  # the PTU's own Retry-After (the trip duration is 30 s)
        assert Counter(ask(client) for _ in range(5)) == {"from ptu": 5}
    assert members["payg-1"].calls + members["payg-2"].calls == 10


def test_failover_re_sends_the_exact_body(gateway: Gateway, members: dict[str, MockMember]) -> None:
    first, second = members["resend-1"], members["resend-2"]
    first.set(Mode("error"))
    raw = (
        b'{"model":"demo-model",  "messages":[{"role":"user","content":"caf\\u00e9 '
        b'\xe2\x98\x95"}]\n , "temperature" : 0.50}'
    )
    reply = httpx.post(
        f"{gateway.url}/resend/v1/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "from resend-2"
    assert first.bodies == [raw] and second.bodies == [raw]


def test_no_retry_once_the_first_byte_of_a_stream_went_out(
    gateway: Gateway, members: dict[str, MockMember]
) -> None:
    broken, other = members["stream-1"], members["stream-2"]
    broken.set(Mode("break"))
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            f"{gateway.url}/stream/v1/chat/completions",
            json={**CHAT_BODY, "stream": True},
            timeout=10,
        ) as reply,
    ):
        assert reply.status_code == 200
        for chunk in reply.iter_bytes():
            received += chunk
    assert b"stream-10" in received  # the first event, peeked and passed on
    assert b"[DONE]" not in received  # then the stream broke: the client sees it truncated
    assert other.calls == 0


def test_a_stream_without_its_first_byte_in_time_fails_over(
    gateway: Gateway, members: dict[str, MockMember]
) -> None:
    stalled = members["stall-1"]
    stalled.set(Mode("stall", 3))
    began = time.monotonic()
    with sdk(gateway, "stall") as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == " stall-20 stall-21 stall-22"
    assert time.monotonic() - began < 2.5  # first-byte-timeout 0.5 s, not the 3 s stall
    assert stalled.calls == 1


def test_a_member_that_does_not_answer_within_its_read_timeout_is_passed_over(
    gateway: Gateway, members: dict[str, MockMember]
) -> None:
    members["slow-1"].set(Mode("hang", 5))
    began = time.monotonic()
    with sdk(gateway, "slow") as client:
        assert ask(client) == "from slow-2"
    assert 0.9 < time.monotonic() - began < 4


def test_everything_tripped_is_a_503_with_an_honest_retry_after(
    gateway: Gateway, members: dict[str, MockMember], admin: httpx.Client
) -> None:
    members["dead-2"].set(Mode("throttle", 20))
    url = f"{gateway.url}/dead/v1/chat/completions"
    # dead-1 refuses the connection, dead-2 throttles: the client gets dead-2's 429 as it
    # came, Retry-After included.
    first = httpx.post(url, json=CHAT_BODY, timeout=10)
    tripped = time.monotonic()
    assert first.status_code == 429
    assert first.headers["retry-after"] == "20"
    second = httpx.post(url, json=CHAT_BODY, timeout=10)
    assert_error(second, 503, "no backend is available right now")
    for secret in ("127.0.0.1", "dead-1", "dead-2", members["dead-2"].url):
        assert secret not in second.text and secret not in str(second.headers)
    # dead-1 opens for its 4 s trip duration, dead-2 for 6 (its 20 s capped): the soonest.
    retry_after = int(second.headers["retry-after"])
    assert math.floor(4 - (time.monotonic() - tripped)) <= retry_after <= 4

    state = admin.get("/backends/dead-2").json()
    assert state["state"] == "open"
    trip = state["breaker"]["lastTrip"]
    assert (trip["cause"], trip["retryAfter"], trip["openSeconds"]) == ("status 429", 20, 6)
    dead_1 = admin.get("/backends/dead-1").json()
    assert dead_1["breaker"]["lastTrip"]["cause"] == "connection-failure"
    pool = admin.get("/backends/dead").json()
    assert pool["available"] is False
    assert [m["state"] for m in pool["members"]] == ["open", "open"]

    # Honest: after waiting as told, a member is tried again (dead-1, still refusing).
    time.sleep(retry_after + 0.1)
    third = httpx.post(url, json=CHAT_BODY, timeout=10)
    assert_error(third, 502, "unreachable")
    assert "127.0.0.1" not in third.text


def test_a_member_failing_its_health_probe_is_out_of_rotation_until_it_passes_again(
    gateway: Gateway, members: dict[str, MockMember], admin: httpx.Client
) -> None:
    probed = members["probed-1"]

    def state() -> dict[str, Any]:
        return dict(admin.get("/backends/probed-1").json())

    with sdk(gateway, "probed") as client:
        assert ask(client) == "from probed-1"
        probed.set_health(503)
        assert wait_until(lambda: state()["state"] == "open", timeout=5)
        out = state()
        assert out["reason"] == "health-check"
        assert out["breaker"] is None  # no rules: held by the probes alone
        assert out["healthCheck"]["healthy"] is False
        assert out["healthCheck"]["lastProbe"]["result"] == "status 503"
        pool = admin.get("/backends/probed").json()
        assert pool["members"][0]["reason"] == "health-check"
        calls = probed.calls
        assert Counter(ask(client) for _ in range(5)) == {"from probed-2": 5}
        assert probed.calls == calls  # nothing sent to it while out
        probed.set_health(200)
        assert wait_until(lambda: state()["state"] == "closed", timeout=5)
        assert state()["healthCheck"]["consecutiveSuccesses"] >= 2
        assert ask(client) == "from probed-1"
    # Probes carry nothing of any request (the SDK sent an API key and a JSON body).
    assert len(probed.probes) >= 4
    for headers in probed.probes:
        assert headers == {
            "host": probed.url.removeprefix("http://"),
            "user-agent": "aigw-health-check",
        }


def test_the_admin_api_lists_every_backend_with_its_state(
    gateway: Gateway, admin: httpx.Client, members: dict[str, MockMember]
) -> None:
    listing = admin.get("/backends")
    assert listing.status_code == 200
    backends = {backend["id"]: backend for backend in listing.json()["value"]}
    assert set(backends) == set(POOLS) | {name for m, _ in POOLS.values() for name, _ in m}
    ptu = backends["ptu"]
    assert ptu["type"] == "http" and ptu["url"] == members["ptu"].url
    assert {"state", "inFlight", "requests", "failures", "lastFailure", "breaker"} <= set(ptu)
    assert ptu["breaker"]["rules"][0]["name"] == "throttled-or-failing"
    assert backends["resend-1"]["breaker"] is None  # no rules: counted, never tripped
    spill = backends["spill"]
    assert spill["type"] == "pool"
    assert [(m["backend"], m["priority"]) for m in spill["members"]] == [
        ("ptu", 1),
        ("payg-1", 2),
        ("payg-2", 2),
    ]
    one = admin.get("/backends/spill").json()
    assert one["id"] == "spill" and one["members"][0]["backend"] == "ptu"
    missing = admin.get("/backends/nope")
    assert_error(missing, 404, "not found")
