"""The OIDC provider that the validate-jwt tests run against (test infrastructure)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.oidc_provider import (
    APP_CHATBOT,
    APP_NONE,
    APP_PROD,
    DEFAULT_AUDIENCE,
    OidcClient,
    OidcProvider,
    OidcTokenError,
    decode_jwt,
)


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with OidcProvider(Path(tmp_path_factory.mktemp("oidc"))) as provider:
        yield provider


@pytest.fixture
def own_idp(tmp_path: Path) -> Iterator[OidcProvider]:
    """A provider for one test that rotates or restarts it."""
    with OidcProvider(tmp_path) as provider:
        yield provider


def jwks_kids(provider: OidcProvider) -> dict[str, dict[str, Any]]:
    keys = httpx.get(provider.jwks_uri).json()["keys"]
    return {key["kid"]: key for key in keys}


def test_discovery_names_the_issuer_and_its_endpoints(idp: OidcProvider) -> None:
    before = idp.discovery_fetches
    document = httpx.get(idp.discovery_url).json()
    assert document["issuer"] == idp.issuer == f"http://127.0.0.1:{idp.port}"
    assert document["jwks_uri"] == idp.jwks_uri
    assert document["token_endpoint"] == idp.token_endpoint
    assert "client_credentials" in document["grant_types_supported"]
    assert idp.discovery_fetches == before + 1


@pytest.mark.parametrize(
    ("client", "alg", "key_type"),
    [(APP_PROD, "RS256", "RSA"), (APP_CHATBOT, "ES256", "EC"), (APP_PROD, "ES256", "EC")],
)
def test_tokens_carry_the_client_claims_and_a_published_kid(
    idp: OidcProvider, client: OidcClient, alg: str, key_type: str
) -> None:
    header, claims = decode_jwt(idp.token(client.client_id, alg=alg))
    assert header["alg"] == alg
    assert header["kid"] == idp.signing_kids[key_type]
    assert jwks_kids(idp)[header["kid"]]["kty"] == key_type
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == DEFAULT_AUDIENCE
    assert claims["client_id"] == claims["sub"] == client.client_id
    assert claims["roles"] == client.claims["roles"]
    assert claims["oid"] == client.oid
    assert claims["tid"] == client.claims["tid"]
    assert claims["iat"] <= time.time() + 5 < claims["exp"]


def test_scope_audience_lifetime_and_claim_overrides(idp: OidcProvider) -> None:
    _, claims = decode_jwt(idp.token(APP_NONE.client_id, scope="chat", resource="api://other"))
    assert "roles" not in claims
    assert claims["aud"] == "api://other"
    assert claims["scope"] == "chat"

    _, claims = decode_jwt(idp.token(ttl=60, claims={"nbf": 123, "exp": 456, "tid": None}))
    assert (claims["nbf"], claims["exp"]) == (123, 456)
    assert "tid" not in claims

    _, claims = decode_jwt(idp.token(ttl=60))
    assert claims["exp"] - claims["iat"] == 60

    with pytest.raises(OidcTokenError) as refused:
        idp.token(alg="HS256")
    assert refused.value.status == 400


def test_rotation_with_and_without_the_old_keys(own_idp: OidcProvider) -> None:
    first, _ = decode_jwt(own_idp.token())

    kids = own_idp.rotate_keys(keep_old=True)
    second, _ = decode_jwt(own_idp.token())
    assert second["kid"] == kids["RSA"] != first["kid"]
    assert decode_jwt(own_idp.token(alg="ES256"))[0]["kid"] == kids["EC"]
    assert {first["kid"], second["kid"]} <= jwks_kids(own_idp).keys()

    kids = own_idp.rotate_keys(keep_old=False)
    third, _ = decode_jwt(own_idp.token())
    assert third["kid"] == kids["RSA"]
    assert set(jwks_kids(own_idp)) == {kids["RSA"], kids["EC"]}
    assert own_idp.published_kids == [kids["RSA"], kids["EC"]]


def test_fetch_counters_count_only_jwks_and_discovery(own_idp: OidcProvider) -> None:
    assert (own_idp.jwks_fetches, own_idp.discovery_fetches) == (0, 0)
    for _ in range(3):
        httpx.get(own_idp.jwks_uri)
    httpx.get(own_idp.discovery_url)
    own_idp.token()
    own_idp.rotate_keys()
    assert (own_idp.jwks_fetches, own_idp.discovery_fetches) == (3, 1)
    assert own_idp.token_requests == 1


def test_stop_and_start_on_the_same_port_keeps_keys_and_counts(own_idp: OidcProvider) -> None:
    kids = own_idp.rotate_keys(keep_old=False)
    httpx.get(own_idp.jwks_uri)
    own_idp.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(own_idp.jwks_uri)
    assert own_idp.jwks_fetches == 1

    own_idp.start()
    assert decode_jwt(own_idp.token())[0]["kid"] == kids["RSA"]
    assert set(jwks_kids(own_idp)) == {kids["RSA"], kids["EC"]}
    assert own_idp.jwks_fetches == 2
