"""Backend authentication through the real gateway on a VM or AKS node: `identity: managed`
with no App Service endpoint, so azure-identity asks IMDS; here a local stand-in that
`AZURE_POD_IDENTITY_AUTHORITY_HOST` in the gateway's environment points it at. The
recording backend shows what reached it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import CHAT_BODY, RecordingBackend, log_lines
from tests.identity_endpoint import IdentityEndpoint, IdentityServer, imds_env
from tests.support import Gateway, free_port

OPERATIONS_PORT = free_port()

COGNITIVE = "https://cognitiveservices.azure.com"
ML = "https://ml.azure.com"
CALLER = {
    "authorization": "Bearer caller-token-5b9e",
    "api-key": "caller-api-key-5b9e",
    "x-custom": "kept",
}


@pytest.fixture(scope="module")
def imds() -> Iterator[tuple[IdentityEndpoint, str]]:
    endpoint = IdentityEndpoint()
    server = IdentityServer(endpoint)
    yield endpoint, server.url
    server.stop()


@pytest.fixture(scope="module")
def echo() -> Iterator[RecordingBackend]:
    backend = RecordingBackend("echo")
    yield backend
    backend.stop()


def mi_api(path: str, **attributes: Any) -> dict[str, Any]:
    policy = {"authentication-managed-identity": {"resource": COGNITIVE, **attributes}}
    return {
        "type": "openai",
        "path": path,
        "subscription-required": False,
        "backend": "echo",
        "policies": {"inbound": [policy]},
    }


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    imds: tuple[IdentityEndpoint, str],
    echo: RecordingBackend,
) -> Iterator[Gateway]:
    config = {
        "gateway": {"host": "127.0.0.1"},
        "operations": {"port": OPERATIONS_PORT},
        "identity": {"type": "managed"},
        "backends": {
            "echo": {"url": echo.url},
            "echo-mi": {
                "url": echo.url,
                "credentials": {"managed-identity": {"resource": ML, "client-id": "backend-id"}},
            },
        },
        "apis": {
            "mi": mi_api("mi"),
            "user": mi_api("user", client_id="user-assigned-1"),
            "cred": {
                "type": "openai",
                "path": "cred",
                "subscription-required": False,
                "backend": "echo-mi",
            },
        },
    }
    gw = Gateway(Path(tmp_path_factory.mktemp("gateway")), config, env=imds_env(imds[1]))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=20) as client:
        yield client


def seen(http: httpx.Client, api: str) -> dict[str, str]:
    response = http.post(f"/{api}/v1/chat/completions", json=CHAT_BODY, headers=CALLER)
    assert response.status_code == 200, response.text
    headers: dict[str, str] = response.json()["headers"]
    return headers


def test_the_backend_sees_the_token_from_imds_and_not_the_callers_credentials(
    http: httpx.Client, imds: tuple[IdentityEndpoint, str]
) -> None:
    endpoint, _ = imds
    started = time.monotonic()
    headers = seen(http, "mi")
    assert time.monotonic() - started < 5  # the first request waits for IMDS: no slow probe
    (call,) = [c for c in endpoint.calls if c.resource == COGNITIVE and c.client_id is None]
    assert call.kind == "imds"
    assert call.headers["metadata"] == "true"
    assert call.params["api-version"] == "2018-02-01"
    token = f"tok-{endpoint.calls.index(call) + 1}-{COGNITIVE}-system"  # what IMDS issued
    assert headers["authorization"] == f"Bearer {token}"
    assert "caller-token" not in str(headers)  # not forwarded alongside, either
    assert "api-key" not in headers
    assert headers["x-custom"] == "kept"


def test_the_token_is_reused(http: httpx.Client, imds: tuple[IdentityEndpoint, str]) -> None:
    endpoint, _ = imds
    first = seen(http, "mi")["authorization"]
    for _ in range(3):
        assert seen(http, "mi")["authorization"] == first
    assert sum(1 for c in endpoint.calls if c.resource == COGNITIVE and not c.client_id) == 1


def test_a_user_assigned_identity_is_asked_for_by_client_id(
    http: httpx.Client, imds: tuple[IdentityEndpoint, str]
) -> None:
    endpoint, _ = imds
    headers = seen(http, "user")
    assert headers["authorization"].endswith(f"-{COGNITIVE}-user-assigned-1")
    call = next(c for c in endpoint.calls if c.client_id == "user-assigned-1")
    assert call.params["client_id"] == "user-assigned-1"
    assert call.headers["metadata"] == "true"


def test_backend_credentials_use_imds_too(
    http: httpx.Client, imds: tuple[IdentityEndpoint, str]
) -> None:
    endpoint, _ = imds
    headers = seen(http, "cred")
    assert headers["authorization"].endswith(f"-{ML}-backend-id")
    assert "caller-token" not in str(headers) and "api-key" not in headers
    call = next(c for c in endpoint.calls if c.resource == ML)
    assert call.kind == "imds" and call.params["client_id"] == "backend-id"


def test_acquisitions_are_logged_without_tokens(gateway: Gateway) -> None:
    records = [
        r for r in log_lines(gateway.stderr()) if r.get("message") == "backend token acquired"
    ]
    assert {r["resource"] for r in records} >= {COGNITIVE, ML}
    assert "tok-" not in gateway.stderr() + gateway.stdout()


def test_acquisitions_are_counted_in_metrics(http: httpx.Client) -> None:
    seen(http, "mi")
    seen(http, "cred")
    text = httpx.get(f"http://127.0.0.1:{OPERATIONS_PORT}/metrics", timeout=10).text
    counted = {
        (sample.labels["identity"], sample.labels["result"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "aigw_identity_token_acquisitions_total"
    }
    # One token per (resource, client id) so far: system-assigned and the backend's
    # user-assigned one at least, each acquired once and reused since.
    assert counted.get(("managed", "ok"), 0) >= 2
    assert ("managed", "error") not in counted
