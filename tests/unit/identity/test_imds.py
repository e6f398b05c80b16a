"""`AzureIdentityProvider` with `type: managed` through IMDS, the path a VM or an AKS node
takes: no `IDENTITY_ENDPOINT`, so azure-identity asks the Instance Metadata Service, here a
local stand-in that `AZURE_POD_IDENTITY_AUTHORITY_HOST` points it at (that variable also
turns off azure-identity's availability probe, as on a real AKS node with pod identity)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from aigw.config.model import IdentityConfig
from aigw.identity import TokenUnavailable
from aigw.identity.azure import AzureIdentityProvider
from aigw.identity.tokens import AccessToken
from tests.identity_endpoint import IdentityEndpoint, IdentityServer, imds_env
from tests.support import free_port

COGNITIVE = "https://cognitiveservices.azure.com"
DOWN = "https://down.example"
# Each case makes one or two requests to a loopback server: anything near this means
# azure-identity's IMDS retries (five, backing off up to 12.8 s) were not capped.
QUICK = 5.0


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityEndpoint]:
    endpoint = IdentityEndpoint(lifetime={COGNITIVE: 3600}, down={DOWN})
    server = IdentityServer(endpoint)
    for name, value in imds_env(server.url).items():
        monkeypatch.setenv(name, value)
    yield endpoint
    server.stop()


async def token(resource: str, client_id: str | None = None) -> tuple[AccessToken, float]:
    provider = AzureIdentityProvider(IdentityConfig(type="managed"), client_id)
    started = time.monotonic()
    found = await provider.token(resource)
    return found, time.monotonic() - started


async def test_a_system_assigned_identity_gets_its_token_from_imds(
    imds: IdentityEndpoint,
) -> None:
    found, took = await token(COGNITIVE)
    assert found.token == f"tok-1-{COGNITIVE}-system"
    assert abs(found.expires_on - (time.time() + 3600)) < 60
    assert took < QUICK
    (call,) = imds.calls
    assert call.kind == "imds"
    assert call.resource == COGNITIVE  # the scope's `/.default` is IMDS's `resource`
    assert call.params["api-version"] == "2018-02-01"
    assert call.headers["metadata"] == "true"
    assert "client_id" not in call.params


async def test_a_user_assigned_identity_is_asked_for_by_client_id(
    imds: IdentityEndpoint,
) -> None:
    found, _ = await token(COGNITIVE, "user-assigned-1")
    assert found.token.endswith(f"-{COGNITIVE}-user-assigned-1")
    (call,) = imds.calls
    assert call.params["client_id"] == "user-assigned-1"
    assert call.headers["metadata"] == "true"


async def test_the_identity_sections_client_id_is_used_unless_overridden(
    imds: IdentityEndpoint,
) -> None:
    settings = IdentityConfig(type="managed", client_id="gateway-identity")
    await AzureIdentityProvider(settings).token(COGNITIVE)
    await AzureIdentityProvider(settings, "policy-identity").token(COGNITIVE)
    assert [call.client_id for call in imds.calls] == ["gateway-identity", "policy-identity"]


async def test_imds_failing_is_reported_quickly_after_one_retry(imds: IdentityEndpoint) -> None:
    started = time.monotonic()
    with pytest.raises(TokenUnavailable):
        await token(DOWN)
    assert time.monotonic() - started < QUICK
    assert imds.hits(DOWN) == 2  # one immediate retry; `TokenCache` backs off after that


async def test_imds_unreachable_is_reported_quickly(
    imds: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(TokenUnavailable, match="IMDS"):
        await token(COGNITIVE)
    assert time.monotonic() - started < QUICK
