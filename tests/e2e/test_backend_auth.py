"""Backend authentication through the real gateway: `authentication-managed-identity` and
backend `credentials` against a local App Service-style managed-identity endpoint
(IDENTITY_ENDPOINT / IDENTITY_HEADER in the gateway's environment), a recording backend
that shows what reached it, token reuse and refresh, single flight, the endpoint failing
with and without a cached token, `ignore-error`, and header hygiene."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import CHAT_BODY, RecordingBackend, assert_error, log_lines, wait_until
from tests.identity_endpoint import IDENTITY_HEADER, IdentityEndpoint, IdentityServer
from tests.support import Gateway

N = 100  # concurrent first requests (the unit test of the cache uses 1,000)
COGNITIVE = "https://cognitiveservices.azure.com"
ML = "https://ml.azure.com"
SHORT = "https://short-lived.example"
BURST = "https://burst.example"
STEADY = "https://steady.example"
DOWN = "https://down.example"
API_KEY = "canary-openai-key-7f3e9c2a"
CALLER = {
    "authorization": "Bearer caller-token",
    "api-key": "caller-api-key",
    "cookie": "session=caller-cookie",
    "x-custom": "kept",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[IdentityEndpoint]:
    state = IdentityEndpoint(lifetime={SHORT: 6, STEADY: 8}, delay={BURST: 0.5}, down={DOWN})
    server = IdentityServer(state)
    state.url = server.url  # type: ignore[attr-defined]
    yield state
    server.stop()


@pytest.fixture(scope="module")
def echo() -> Iterator[RecordingBackend]:
    backend = RecordingBackend("echo")
    backend.server.socket.listen(512)  # a burst of connections, not the default backlog of 5
    yield backend
    backend.stop()


def mi_api(path: str, backend: str = "echo", **attributes: Any) -> dict[str, Any]:
    policy = {"authentication-managed-identity": {"resource": COGNITIVE, **attributes}}
    return {
        "type": "openai",
        "path": path,
        "subscription-required": False,
        "backend": backend,
        "policies": {"inbound": [policy]},
    }


def plain_api(path: str, backend: str) -> dict[str, Any]:
    return {"type": "openai", "path": path, "subscription-required": False, "backend": backend}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, endpoint: IdentityEndpoint, echo: RecordingBackend
) -> Iterator[Gateway]:
    config = {
        "gateway": {"host": "127.0.0.1"},
        "named-values": {"openai-key": {"env": "TEST_OPENAI_KEY", "secret": True}},
        "identity": {"type": "managed"},
        "backends": {
            "echo": {"url": echo.url},
            "echo-mi": {
                "url": echo.url,
                "credentials": {"managed-identity": {"resource": ML, "client-id": "backend-id"}},
            },
            "echo-key": {
                "url": echo.url,
                "credentials": {"header": {"name": "api-key", "value": "{{openai-key}}"}},
            },
            "mixed": {
                "type": "pool",
                "pool": {"members": [{"backend": "echo-mi"}, {"backend": "echo-key"}]},
            },
        },
        "apis": {
            "mi": mi_api("mi", output_token_variable_name="backend-token"),
            "keyed": {
                **mi_api("keyed"),
                "subscription-key-parameter-names": {"header": "x-sub", "query": "sub"},
            },
            "user": mi_api("user", client_id="user-assigned-1"),
            "short": mi_api("short", resource=SHORT),
            "burst": mi_api("burst", resource=BURST),
            "steady": mi_api("steady", resource=STEADY),
            "down": mi_api("down", resource=DOWN),
            "ignore": mi_api("ignore", resource=DOWN, ignore_error=True),
            "cred": plain_api("cred", "echo-mi"),
            "key": plain_api("key", "echo-key"),
            "plain": plain_api("plain", "echo"),
            "pool": plain_api("pool", "mixed"),
        },
    }
    env = {
        "IDENTITY_ENDPOINT": endpoint.url + "/msi/token",  # type: ignore[attr-defined]
        "IDENTITY_HEADER": IDENTITY_HEADER,
        "TEST_OPENAI_KEY": API_KEY,
    }
    gw = Gateway(Path(tmp_path_factory.mktemp("gateway")), config, env=env)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=20) as client:
        yield client


def chat(http: httpx.Client, api: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(f"/{api}/v1/chat/completions", json=CHAT_BODY, headers=headers or CALLER)


def seen(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    headers: dict[str, str] = response.json()["headers"]
    return headers


def test_policy_sends_the_gateways_token_and_none_of_the_callers_credentials(
    http: httpx.Client, endpoint: IdentityEndpoint
) -> None:
    headers = seen(chat(http, "mi"))
    assert headers["authorization"].startswith("Bearer tok-")
    assert headers["authorization"].endswith(f"-{COGNITIVE}-system")
    assert "api-key" not in headers
    assert "cookie" not in headers
    assert headers["x-custom"] == "kept"
    call = next(c for c in endpoint.calls if c.resource == COGNITIVE)
    assert call.headers["x-identity-header"] == IDENTITY_HEADER
    assert call.params["api-version"] == "2019-08-01"


def test_the_token_is_reused(http: httpx.Client, endpoint: IdentityEndpoint) -> None:
    first = seen(chat(http, "mi"))["authorization"]
    for _ in range(5):
        assert seen(chat(http, "mi"))["authorization"] == first
    assert endpoint.hits(COGNITIVE) == 1


def test_client_id_selects_a_user_assigned_identity(
    http: httpx.Client, endpoint: IdentityEndpoint
) -> None:
    headers = seen(chat(http, "user"))
    assert headers["authorization"].endswith(f"-{COGNITIVE}-user-assigned-1")
    assert any(c.client_id == "user-assigned-1" for c in endpoint.calls)


def test_backend_credentials_with_managed_identity(http: httpx.Client) -> None:
    headers = seen(chat(http, "cred"))
    assert headers["authorization"].endswith(f"-{ML}-backend-id")
    assert "api-key" not in headers and "cookie" not in headers
    assert headers["x-custom"] == "kept"


def test_backend_api_key_from_a_secret_named_value(http: httpx.Client, gateway: Gateway) -> None:
    headers = seen(chat(http, "key", {**CALLER, "api-key": "smuggled"}))
    assert headers["api-key"] == API_KEY
    assert "authorization" not in headers and "cookie" not in headers
    assert API_KEY not in gateway.stdout() + gateway.stderr()


def test_a_pool_mixes_identity_and_key_members(http: httpx.Client) -> None:
    kinds = set()
    for _ in range(20):
        headers = seen(chat(http, "pool"))
        if "authorization" in headers:
            assert headers["authorization"].endswith(f"-{ML}-backend-id")
            assert "api-key" not in headers
            kinds.add("identity")
        else:
            assert headers["api-key"] == API_KEY
            kinds.add("key")
        assert "cookie" not in headers
    assert kinds == {"identity", "key"}


def test_without_credentials_the_callers_headers_pass_through(http: httpx.Client) -> None:
    headers = seen(chat(http, "plain"))
    for name, value in CALLER.items():
        assert headers[name] == value


def test_no_token_fails_with_a_clear_500_and_never_calls_the_backend(
    http: httpx.Client, gateway: Gateway, echo: RecordingBackend
) -> None:
    before = len(echo.recorder.requests)
    response = chat(http, "down")
    body = assert_error(response, 500, "backend authentication failed")
    assert "tok-" not in response.text and "503" not in body["message"]
    assert len(echo.recorder.requests) == before
    assert wait_until(lambda: "could not get a token for https://down.example" in gateway.stderr())


def test_ignore_error_continues_without_the_header(http: httpx.Client) -> None:
    headers = seen(chat(http, "ignore"))
    assert "authorization" not in headers
    assert "api-key" not in headers  # the caller's credentials are still removed


def test_single_flight_under_concurrency(gateway: Gateway, endpoint: IdentityEndpoint) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=gateway.url, timeout=30, limits=httpx.Limits(max_connections=200)
        ) as client:
            responses = await asyncio.gather(
                *(client.post("/burst/v1/chat/completions", json=CHAT_BODY) for _ in range(N))
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert statuses == [200] * N
    assert endpoint.hits(BURST) == 1


def test_refreshed_ahead_of_expiry_without_a_failed_request(
    http: httpx.Client, endpoint: IdentityEndpoint
) -> None:
    tokens = []
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        tokens.append(seen(chat(http, "short"))["authorization"])
        time.sleep(0.1)
    distinct = list(dict.fromkeys(tokens))
    assert len(distinct) >= 2  # the 6 s token was replaced …
    assert endpoint.hits(SHORT) <= 4  # … about every 3 s, not per request (~80 requests)


def test_endpoint_down_with_a_cached_token_then_without(
    http: httpx.Client, endpoint: IdentityEndpoint, gateway: Gateway
) -> None:
    token = seen(chat(http, "steady"))["authorization"]
    endpoint.down.add(STEADY)
    try:
        # Past the refresh point (4 s into an 8 s token) requests still succeed.
        started = time.monotonic()
        while time.monotonic() - started < 6:
            assert seen(chat(http, "steady"))["authorization"] == token
            time.sleep(0.2)
        assert endpoint.hits(STEADY) >= 2  # refreshes were tried (and failed)
        assert "still using the cached token" in gateway.stderr()
        assert wait_until(lambda: chat(http, "steady").status_code == 500, timeout=5)
    finally:
        endpoint.down.discard(STEADY)
    # Back up: the next attempt after the back-off succeeds.
    assert wait_until(lambda: chat(http, "steady").status_code == 200, timeout=10)


def test_acquisitions_are_logged_without_tokens(gateway: Gateway) -> None:
    records = [
        r for r in log_lines(gateway.stderr()) if r.get("message") == "backend token acquired"
    ]
    assert records
    assert {"identity", "client_id", "resource", "expires_on"} <= set(records[0])
    assert "tok-" not in gateway.stderr() + gateway.stdout()


def test_caller_keys_in_the_query_or_azure_key_header_never_reach_an_authenticated_backend(
    http: httpx.Client,
) -> None:
    # Azure AI services also take a key as `Ocp-Apim-Subscription-Key` or in the query
    # (`api-key`, `subscription-key`): a caller's key there must not ride along with the
    # gateway's identity (names compared case-insensitively, as the services do).
    query = "api-key=q1&Subscription-Key=q2&API%2DKEY=q3&keep=1"
    extra = {**CALLER, "Ocp-Apim-Subscription-Key": "caller-azure-key"}
    for api in ("keyed", "cred", "key"):
        response = http.post(f"/{api}/v1/chat/completions?{query}", json=CHAT_BODY, headers=extra)
        echoed = response.json()
        headers = seen(response)
        assert "ocp-apim-subscription-key" not in headers, api
        assert echoed["raw_query"] == "keep=1", api
    # Without gateway credentials nothing is guessed: the caller's query goes through.
    response = http.post(f"/plain/v1/chat/completions?{query}", json=CHAT_BODY, headers=extra)
    assert response.json()["raw_query"] == query
