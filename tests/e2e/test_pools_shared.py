"""Circuit breakers shared through Redis, across two real gateway processes (A and B) that
use a private `redis-server` (stopped and restarted by the outage test, never the shared one):
a member's 429 seen by A benches it on B within the poll interval, an unshared breaker does
not, and with Redis down each gateway's breakers keep working locally until it is back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.admin_helpers import TOKEN_ENV, admin_client
from tests.e2e.helpers import MODEL, log_lines, wait_until
from tests.e2e.pool_members import OK, MockMember, Mode
from tests.redis_server import PrivateRedis
from tests.support import Gateway, free_port

POLL = 0.2
MESSAGES: list[Any] = [{"role": "user", "content": "Hello"}]
THROTTLED = {
    "name": "throttled",
    "failure-condition": {"count": 1, "interval": 10, "status-code-ranges": [429, "500-599"]},
    "trip-duration": 30,
    "accept-retry-after": True,
    "max-retry-after": 60,
}
# pool → [(member, priority, shared breaker?)]
POOLS: dict[str, list[tuple[str, int, bool]]] = {
    "spill": [("ptu", 1, True), ("payg", 2, False)],
    "unshared": [("local-ptu", 1, False), ("local-payg", 2, False)],
    "outage": [("outage-1", 1, True), ("outage-2", 2, True), ("outage-3", 3, False)],
}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def members() -> Iterator[dict[str, MockMember]]:
    started = {name: MockMember(name) for pool in POOLS.values() for name, _, _ in pool}
    yield started
    for member in started.values():
        member.stop()


def gateway_config(members: dict[str, MockMember], redis_url: str) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    apis: dict[str, Any] = {}
    for pool, pool_members in POOLS.items():
        for name, _, shared in pool_members:
            breaker: dict[str, Any] = {"rules": [THROTTLED]}
            if shared:
                breaker["shared"] = True
            backends[name] = {
                "url": members[name].url,
                "timeouts": {"connect": 1, "read": 10},
                "circuit-breaker": breaker,
            }
        backends[pool] = {
            "type": "pool",
            "pool": {"members": [{"backend": n, "priority": p} for n, p, _ in pool_members]},
        }
        apis[pool] = {
            "type": "openai",
            "path": pool,
            "backend": pool,
            "subscription-required": False,
        }
    return {
        "gateway": {"host": "127.0.0.1"},
        "counters": {"url": redis_url, "timeout": 0.3, "breaker-poll-interval": POLL},
        "named-values": {"admin-token": {"env": "AIGW_TEST_ADMIN_TOKEN", "secret": True}},
        "admin": {"port": free_port(), "token": "{{admin-token}}"},
        "backends": backends,
        "apis": apis,
    }


class Replica:
    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.gateway = Gateway(workdir, config, env=TOKEN_ENV)
        self.admin = admin_client(config)

    def ask(self, pool: str) -> str:
        with openai.OpenAI(
            base_url=f"{self.gateway.url}/{pool}/v1", api_key="x", max_retries=0
        ) as client:
            answer = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        return answer.choices[0].message.content or ""

    def backend(self, backend_id: str) -> dict[str, Any]:
        reply = self.admin.get(f"/backends/{backend_id}")
        assert reply.status_code == 200
        return dict(reply.json())

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in log_lines(self.gateway.stderr()) if line.get("event") == name]

    def stop(self) -> None:
        self.admin.close()
        self.gateway.stop()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
    members: dict[str, MockMember],
    redis_server: PrivateRedis,
) -> Iterator[tuple[Replica, Replica]]:
    workdir = Path(tmp_path_factory.mktemp("shared-breakers"))
    a = Replica(workdir, gateway_config(members, redis_server.url))
    b = Replica(workdir, gateway_config(members, redis_server.url))
    yield a, b
    a.stop()
    b.stop()


def test_a_trip_seen_by_one_gateway_benches_the_member_on_the_other(
    replicas: tuple[Replica, Replica], members: dict[str, MockMember]
) -> None:
    a, b = replicas
    ptu, local_ptu = members["ptu"], members["local-ptu"]
    ptu.set(Mode("throttle", 4))
    local_ptu.set(Mode("throttle", 4))
    assert a.ask("spill") == "from payg"  # A fails over within the request and trips ptu
    assert a.ask("unshared") == "from local-payg"
    tripped = time.monotonic()
    assert (ptu.calls, local_ptu.calls) == (1, 1)
    time.sleep(POLL + 0.15)  # one poll interval (and a little) for B to read it

    assert Counter(b.ask("spill") for _ in range(10)) == {"from payg": 10}
    assert ptu.calls == 1  # B sent nothing to the member A saw throttling
    assert b.ask("unshared") == "from local-payg"
    assert local_ptu.calls == 2  # without `shared`, B had to find out for itself

    state = b.backend("ptu")
    assert (state["state"], state["reason"]) == ("open", "shared")
    trip = state["breaker"]["lastTrip"]
    assert (trip["rule"], trip["cause"], trip["retryAfter"]) == ("throttled", "status 429", 4)
    assert trip["origin"] == state["shared"]["record"]["origin"] != state["shared"]["replica"]
    assert state["shared"]["sync"] == "ok" and state["shared"]["pollInterval"] == POLL
    assert a.backend("ptu")["reason"] == "circuit-breaker"

    # After the member's Retry-After, both send to it again (B's trial closes it for A too).
    ptu.set(OK)
    time.sleep(max(0.0, 4.1 - (time.monotonic() - tripped)))
    assert b.ask("spill") == "from ptu"
    assert wait_until(lambda: a.backend("ptu")["state"] == "closed", timeout=3)
    assert a.ask("spill") == "from ptu"


def test_with_redis_down_breakers_work_locally_and_sharing_resumes_when_it_is_back(
    replicas: tuple[Replica, Replica],
    members: dict[str, MockMember],
    redis_server: PrivateRedis,
) -> None:
    a, b = replicas
    first, second = members["outage-1"], members["outage-2"]
    redis_server.stop()
    assert wait_until(
        lambda: all(r.backend("outage-1")["shared"]["sync"] == "unavailable" for r in replicas)
    )
    first.set(Mode("throttle", 30))
    began = time.monotonic()
    assert Counter(a.ask("outage") for _ in range(5)) == {"from outage-2": 5}
    assert time.monotonic() - began < 3  # requests never wait for Redis
    assert first.calls == 1  # A's own breaker tripped and holds
    assert Counter(b.ask("outage") for _ in range(5)) == {"from outage-2": 5}
    assert first.calls == 2  # B learnt nothing from A, and tripped its own
    assert b.backend("outage-1")["reason"] == "circuit-breaker"
    for replica in replicas:
        assert len(replica.events("breaker-sync-unavailable")) == 1  # logged once
        assert "127.0.0.1" in replica.events("breaker-sync-unavailable")[0]["message"]

    redis_server.start()  # empty, on the same port
    assert wait_until(
        lambda: all(r.backend("outage-1")["shared"]["sync"] == "ok" for r in replicas)
    )
    for replica in replicas:
        assert len(replica.events("breaker-sync-recovered")) == 1
    # The trip kept waiting was published on recovery; and a new one spreads again.
    assert a.backend("outage-1")["shared"]["record"]["state"] == "open"
    second.set(Mode("throttle", 30))
    assert b.ask("outage") == "from outage-3"
    calls = second.calls  # ten answers above, then this 429
    assert calls == 11
    time.sleep(POLL + 0.15)
    assert Counter(a.ask("outage") for _ in range(5)) == {"from outage-3": 5}
    assert second.calls == calls
    assert a.backend("outage-2")["reason"] == "shared"


def test_the_admin_api_shows_the_shared_state_of_every_backend(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    listing = a.admin.get("/backends")
    assert listing.status_code == 200
    backends = {backend["id"]: backend for backend in listing.json()["value"]}
    assert backends["ptu"]["shared"]["key"].startswith("aigw:breaker:ptu:")
    assert backends["payg"]["shared"] is None
    assert backends["ptu"]["healthCheck"] is None
