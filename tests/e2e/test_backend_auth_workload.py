"""Workload identity (a federated token file exchanged at an https authority, as on
Kubernetes) and OAuth 2.0 client credentials, through the real gateway against a local
token endpoint served over TLS with a CA generated for the test (trusted by the gateway
through SSL_CERT_FILE, as azure-core's aiohttp transport reads it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import CHAT_BODY, RecordingBackend
from tests.identity_endpoint import IdentityEndpoint, IdentityServer
from tests.support import Gateway

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "workload-client-id"
FEDERATED = "federated-service-account-token"
SECRET = "canary-client-secret-5d1b77"
COGNITIVE = "https://cognitiveservices.azure.com"
CC_SCOPE = "api://models/.default"


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def idp(tls_dir: Path) -> Iterator[tuple[IdentityEndpoint, IdentityServer]]:
    endpoint = IdentityEndpoint()
    server = IdentityServer(endpoint, tls_dir)
    yield endpoint, server
    server.stop()


@pytest.fixture(scope="module")
def echo() -> Iterator[RecordingBackend]:
    backend = RecordingBackend("echo")
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    tls_dir: Path,
    idp: tuple[IdentityEndpoint, IdentityServer],
    echo: RecordingBackend,
) -> Iterator[Gateway]:
    _, server = idp
    token_file = tls_dir / "federated-token"
    token_file.write_text(FEDERATED)
    api = {"type": "openai", "subscription-required": False}
    config = {
        "gateway": {"host": "127.0.0.1"},
        "named-values": {"cc-secret": {"env": "TEST_CC_SECRET", "secret": True}},
        "identity": {"type": "workload"},
        "backends": {
            "echo": {"url": echo.url},
            "echo-cc": {
                "url": echo.url,
                "credentials": {
                    "client-credentials": {
                        "token-url": server.url + "/idp/token",
                        "client-id": "cc-client",
                        "client-secret": "{{cc-secret}}",
                        "scope": CC_SCOPE,
                    }
                },
            },
        },
        "apis": {
            "wi": {
                **api,
                "path": "wi",
                "backend": "echo",
                "policies": {
                    "inbound": [{"authentication-managed-identity": {"resource": COGNITIVE}}]
                },
            },
            "cc": {**api, "path": "cc", "backend": "echo-cc"},
        },
    }
    assert server.ca_file is not None
    env = {
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AZURE_AUTHORITY_HOST": server.url,
        "SSL_CERT_FILE": str(server.ca_file),
        "TEST_CC_SECRET": SECRET,
    }
    gw = Gateway(Path(tmp_path_factory.mktemp("gateway")), config, env=env)
    yield gw
    gw.stop()


def call(gateway: Gateway, api: str) -> dict[str, str]:
    response = httpx.post(
        f"{gateway.url}/{api}/v1/chat/completions",
        json=CHAT_BODY,
        headers={"authorization": "Bearer caller", "api-key": "caller-key"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    headers: dict[str, str] = response.json()["headers"]
    return headers


def test_workload_identity_exchanges_the_federated_token(
    gateway: Gateway, idp: tuple[IdentityEndpoint, IdentityServer]
) -> None:
    endpoint, _ = idp
    headers = call(gateway, "wi")
    assert headers["authorization"].startswith("Bearer tok-")
    assert headers["authorization"].endswith(f"-{COGNITIVE}/.default-{CLIENT}")
    assert "api-key" not in headers
    call_ = next(c for c in endpoint.calls if c.client_id == CLIENT)
    assert call_.params["path"] == f"/{TENANT}/oauth2/v2.0/token"
    assert call_.params["client_assertion"] == FEDERATED
    assert call_.params["client_assertion_type"].endswith("jwt-bearer")
    assert call(gateway, "wi")["authorization"] == headers["authorization"]  # cached


def test_client_credentials_with_a_secret_from_a_named_value(
    gateway: Gateway, idp: tuple[IdentityEndpoint, IdentityServer]
) -> None:
    endpoint, _ = idp
    headers = call(gateway, "cc")
    assert headers["authorization"].endswith(f"-{CC_SCOPE}-cc-client")
    assert "api-key" not in headers
    sent = next(c for c in endpoint.calls if c.client_id == "cc-client")
    assert sent.params["client_secret"] == SECRET
    assert SECRET not in gateway.stdout() + gateway.stderr()
