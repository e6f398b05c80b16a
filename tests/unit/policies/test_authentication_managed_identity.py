from __future__ import annotations

import pytest

from aigw.identity import AccessToken, TokenUnavailable
from aigw.identity.headers import BackendAuthenticationFailed, gateway_authenticated
from aigw.policies.authentication_managed_identity import AuthenticationManagedIdentity
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

NAME = "authentication-managed-identity"
RESOURCE = "https://cognitiveservices.azure.com"
CALLER = [("authorization", "Bearer caller"), ("api-key", "k"), ("x-other", "1")]


class FakeCache:
    def __init__(self, token: str | None) -> None:
        self.token = token

    async def get(self) -> AccessToken:
        if self.token is None:
            raise TokenUnavailable("managed identity could not get a token: endpoint down")
        return AccessToken(self.token, 2e9)


def policy(token: str | None, **attributes: object) -> AuthenticationManagedIdentity:
    built = build_one(NAME, {"resource": RESOURCE, **attributes})
    assert isinstance(built, AuthenticationManagedIdentity)
    built.cache = FakeCache(token)  # type: ignore[assignment]
    return built


def test_sets_the_bearer_token_and_removes_the_callers_credentials() -> None:
    ctx = make_ctx(headers=CALLER)
    assert run(policy("t0k", output_token_variable_name="tok"), ctx) is None
    assert ctx.request.headers.get_all("authorization") == ["Bearer t0k"]
    assert "api-key" not in ctx.request.headers
    assert ctx.request.headers.get("x-other") == "1"
    assert ctx.variables["tok"] == "t0k"
    assert gateway_authenticated(ctx)


def test_no_token_is_a_500_with_a_reason() -> None:
    ctx = make_ctx(headers=CALLER)
    with pytest.raises(BackendAuthenticationFailed) as caught:
        run(policy(None), ctx)
    assert caught.value.status_code == 500
    assert caught.value.reason == "BackendAuthenticationFailed"
    assert "endpoint down" not in caught.value.message  # the cause is in the log only
    assert caught.value.detail and "endpoint down" in caught.value.detail


def test_ignore_error_continues_without_the_header() -> None:
    ctx = make_ctx(headers=CALLER)
    assert run(policy(None, ignore_error=True), ctx) is None
    assert "authorization" not in ctx.request.headers
    assert "api-key" not in ctx.request.headers


def test_equal_identities_share_one_cache() -> None:
    policies, issues = build(
        [
            {NAME: {"resource": RESOURCE}},
            {NAME: {"resource": RESOURCE}},
            {NAME: {"resource": RESOURCE, "client-id": "user-1"}},
        ]
    )
    assert issues == {}
    caches = [p.cache for p in policies if isinstance(p, AuthenticationManagedIdentity)]
    assert caches[0] is caches[1] and caches[0] is not caches[2]
    assert caches[2].provider.client_id == "user-1"


def test_config_errors() -> None:
    assert "policies.inbound[0].authentication-managed-identity.resource" in issues_of(NAME, {})
    assert issues_of(NAME, {"resource": "@(context.Variables['r'])"})
    assert issues_of(NAME, {"resource": RESOURCE, "unknown": 1})
    assert issues_of(NAME, {"resource": RESOURCE}, section="outbound")
