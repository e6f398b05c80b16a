"""`validate-azure-ad-token`: Entra ID's discovery per tenant, v1 and v2 issuers, backend app
ids as audiences, allowed client applications — against a tenant served on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from aigw.clock import ManualClock
from aigw.context import RequestContext
from aigw.errors import GatewayError
from aigw.policies.base import Policy
from aigw.policies.validate_azure_ad_token import ValidateAzureAdToken
from tests.unit.jwt.minting import NOW, claims, mint, signer
from tests.unit.policies.conftest import build_one, issues_of, make_ctx

TENANT = "6f1c2a4e-3b7d-4c59-9e21-0a8d5b7f3c10"
BACKEND_APP = "0b3c5d7e-1111-2222-3333-444455556666"
CLIENT_APP = "9a8b7c6d-aaaa-bbbb-cccc-ddddeeeeffff"
KEY = signer("RS256", kid="entra-1")


class Tenant:
    """A tenant's v2.0 discovery document and keys, laid out as login.microsoftonline.com."""

    def __init__(self) -> None:
        self.port = 0
        self.runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(f"/{TENANT}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_get(f"/{TENANT}/discovery/v2.0/keys", self._keys)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": f"{self.endpoint}/{TENANT}/v2.0",
                "jwks_uri": f"{self.endpoint}/{TENANT}/discovery/v2.0/keys",
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [KEY.public_jwk(use="sig")]})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def tenant(loop: asyncio.AbstractEventLoop) -> Iterator[Tenant]:
    served = Tenant()
    loop.run_until_complete(served.start())
    yield served
    assert served.runner is not None
    loop.run_until_complete(served.runner.cleanup())


def policy(loop: asyncio.AbstractEventLoop, tenant: Tenant, **extra: Any) -> ValidateAzureAdToken:
    built = build_one(
        "validate-azure-ad-token",
        {
            "tenant-id": TENANT,
            "authentication-endpoint": tenant.endpoint,
            "backend-application-ids": [BACKEND_APP],
            **extra,
        },
    )
    assert isinstance(built, ValidateAzureAdToken)
    for source in built.validator.sources:
        loop.run_until_complete(source.start())
    return built


def request(token: str) -> RequestContext:
    ctx = make_ctx(headers=[("Authorization", f"Bearer {token}")])
    ctx.clock = ManualClock(datetime.fromtimestamp(NOW, UTC))
    return ctx


def outcome(loop: asyncio.AbstractEventLoop, validator: Policy, token: str) -> str:
    try:
        loop.run_until_complete(validator.apply(request(token)))
    except GatewayError as exc:
        return exc.reason
    return "admitted"


def close(loop: asyncio.AbstractEventLoop, validator: ValidateAzureAdToken) -> None:
    for source in validator.validator.sources:
        loop.run_until_complete(source.close())


def v2(tenant: Tenant, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "iss": f"{tenant.endpoint}/{TENANT}/v2.0",
        "aud": BACKEND_APP,
        "azp": CLIENT_APP,
        **extra,
    }
    return claims(**fields)


def test_v2_and_v1_tokens_of_the_tenant_are_admitted(
    loop: asyncio.AbstractEventLoop, tenant: Tenant
) -> None:
    validator = policy(loop, tenant)
    try:
        assert outcome(loop, validator, mint(v2(tenant), KEY)) == "admitted"
        v1 = claims(
            iss=f"https://sts.windows.net/{TENANT}/", aud=f"api://{BACKEND_APP}", appid=CLIENT_APP
        )
        assert outcome(loop, validator, mint(v1, KEY)) == "admitted"
        other_tenant = v2(
            tenant, iss="https://sts.windows.net/00000000-0000-0000-0000-000000000000/"
        )
        assert outcome(loop, validator, mint(other_tenant, KEY)) == "TokenIssuerNotAllowed"
        assert outcome(loop, validator, mint(v2(tenant, aud="api://someone-else"), KEY)) == (
            "TokenAudienceNotAllowed"
        )
    finally:
        close(loop, validator)


def test_client_application_ids_limit_the_callers(
    loop: asyncio.AbstractEventLoop, tenant: Tenant
) -> None:
    validator = policy(loop, tenant, **{"client-application-ids": [CLIENT_APP.upper()]})
    try:
        assert outcome(loop, validator, mint(v2(tenant), KEY)) == "admitted"
        stranger = v2(tenant, azp="11111111-2222-3333-4444-555555555555")
        assert outcome(loop, validator, mint(stranger, KEY)) == "TokenClaimValueNotAllowed"
        assert outcome(loop, validator, mint(v2(tenant, azp=None), KEY)) == (
            "TokenClaimValueNotAllowed"
        )
    finally:
        close(loop, validator)


def test_a_tenant_id_in_capitals_is_the_same_tenant(
    loop: asyncio.AbstractEventLoop, tenant: Tenant
) -> None:
    # Entra ID names tenants in lower case in discovery documents and tokens.
    validator = policy(loop, tenant, **{"tenant-id": TENANT.upper()})
    try:
        assert outcome(loop, validator, mint(v2(tenant), KEY)) == "admitted"
        v1 = claims(iss=f"https://sts.windows.net/{TENANT}/", aud=BACKEND_APP)
        assert outcome(loop, validator, mint(v1, KEY)) == "admitted"
    finally:
        close(loop, validator)


def test_config_errors() -> None:
    base = {"tenant-id": TENANT, "audiences": ["api://aigw"]}
    assert issues_of("validate-azure-ad-token", {**base, "tenant-id": "common"})
    # A domain's discovery document names the tenant's GUID as issuer: it could never match.
    assert issues_of("validate-azure-ad-token", {**base, "tenant-id": "contoso.onmicrosoft.com"})
    assert issues_of("validate-azure-ad-token", {"tenant-id": TENANT})  # no audience at all
    assert issues_of(
        "validate-azure-ad-token", {**base, "authentication-endpoint": "http://login.example"}
    )
    assert issues_of(
        "validate-azure-ad-token", {**base, "header-name": "x", "token-value": '@("y")'}
    )
