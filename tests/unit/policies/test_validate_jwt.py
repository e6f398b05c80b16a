"""`validate-jwt`: where the token is read, what the caller sees when it fails (401, a
challenge, no detail), what the context gets when it passes, and config errors."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from aigw.clock import ManualClock
from aigw.config.errors import IssueCollector
from aigw.context import RequestContext
from aigw.errors import GatewayError
from aigw.jwt.validator import Jwt
from aigw.policies.base import Policy, run_statements
from aigw.policies.build import BuildContext
from aigw.policies.validate_jwt import INVALID, NOT_PRESENT
from tests.unit.jwt.minting import (
    AUDIENCE,
    ISSUER,
    NOW,
    claims,
    flip_bit,
    mint,
    signer,
    unsigned,
)
from tests.unit.jwt.provider import KEY_A, Provider
from tests.unit.policies.conftest import build_one, issues_of, make_ctx

P = "policies.inbound[0].validate-jwt"
RSA = signer("RS256", kid="rsa")
EC = signer("ES256", kid="ec")
HMAC = signer("HS256", kid="hs")
CHALLENGE = ("www-authenticate", "Bearer")
INVALID_CHALLENGE = ("www-authenticate", 'Bearer error="invalid_token"')


def config(**extra: Any) -> dict[str, Any]:
    return {
        "issuer-signing-keys": [
            {"jwk": RSA.public_jwk()},
            {"id": "ec", "pem": EC.public_pem()},
            {"id": "hs", "value": base64.b64encode(HMAC.private).decode()},
        ],
        "issuers": [ISSUER],
        "audiences": [AUDIENCE],
        **extra,
    }


def ctx_for(
    headers: list[tuple[str, str]] | None = None,
    query: list[tuple[str, str]] | None = None,
) -> RequestContext:
    ctx = make_ctx(headers=headers, query=query)
    ctx.clock = ManualClock(datetime.fromtimestamp(NOW, UTC))
    return ctx


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def run(policy: Policy, ctx: RequestContext) -> Any:
    return asyncio.run(policy.apply(ctx))


def admit(attributes: dict[str, Any], ctx: RequestContext) -> RequestContext:
    assert run(build_one("validate-jwt", attributes), ctx) is None
    return ctx


def rejection(attributes: dict[str, Any], ctx: RequestContext) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        run(build_one("validate-jwt", attributes), ctx)
    error = info.value
    assert error.source == "validate-jwt"
    return error


# -- reading the token ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_a_bearer_token_in_authorization_is_admitted(scheme: str) -> None:
    ctx = admit(config(), ctx_for([("Authorization", f"{scheme} {mint(claims(), RSA)}")]))
    assert isinstance(ctx.jwt, Jwt) and ctx.jwt.subject == "user-1"


@pytest.mark.parametrize("key", [RSA, EC, HMAC], ids=["jwk", "pem", "symmetric"])
def test_every_configured_key_form_admits_its_tokens(key: Any) -> None:
    assert admit(config(), ctx_for(bearer(mint(claims(), key)))).jwt is not None


def test_rsa_key_given_as_n_and_e() -> None:
    jwk = RSA.public_jwk()
    attributes = config(**{"issuer-signing-keys": [{"id": "rsa", "n": jwk["n"], "e": jwk["e"]}]})
    assert admit(attributes, ctx_for(bearer(mint(claims(), RSA)))).jwt is not None


def test_a_certificate_key_admits_its_tokens() -> None:
    attributes = config(**{"issuer-signing-keys": [{"pem": EC.certificate_pem()}]})
    assert admit(attributes, ctx_for(bearer(mint(claims(), EC)))).jwt is not None


def test_a_missing_token_is_401_jwt_not_present_with_a_bare_challenge() -> None:
    error = rejection(config(), ctx_for([("x-other", "1")]))
    assert (error.status_code, error.message, error.reason) == (401, NOT_PRESENT, "TokenNotPresent")
    assert error.headers == [CHALLENGE]


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    "])
def test_a_scheme_without_a_token_is_not_present(value: str) -> None:
    error = rejection(config(), ctx_for([("Authorization", value)]))
    assert (error.status_code, error.reason) == (401, "TokenNotPresent")


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_authorization_header_has_no_bearer_scheme(value: str) -> None:
    error = rejection(config(), ctx_for([("Authorization", value)]))
    assert (error.status_code, error.reason) == (401, "JwtInvalid")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (claims(exp=NOW - 1), "TokenExpired"),
        (claims(aud="api://other"), "TokenAudienceNotAllowed"),
        (claims(iss=ISSUER + "/"), "TokenIssuerNotAllowed"),
        (claims(nbf=NOW + 600), "TokenNotYetValid"),
        (claims(exp=None), "TokenExpirationMissing"),
    ],
)
def test_an_invalid_token_is_401_invalid_jwt_with_the_reason_kept_for_the_log(
    payload: dict[str, Any], reason: str
) -> None:
    error = rejection(config(), ctx_for(bearer(mint(payload, RSA))))
    assert (error.status_code, error.message, error.reason) == (401, INVALID, reason)
    assert error.headers == [INVALID_CHALLENGE]
    assert error.detail and error.detail not in error.message


def test_a_bad_signature_is_token_signature_invalid() -> None:
    error = rejection(config(), ctx_for(bearer(flip_bit(mint(claims(), RSA)))))
    assert (error.message, error.reason) == (INVALID, "TokenSignatureInvalid")


def test_an_unknown_kid_is_key_not_found() -> None:
    other = signer("RS256", kid="nobody", index=3)
    error = rejection(config(), ctx_for(bearer(mint(claims(), other))))
    assert error.reason == "TokenSignatureKeyNotFound"


def test_custom_status_and_message_replace_both_failures() -> None:
    attributes = config(
        **{"failed-validation-httpcode": 403, "failed-validation-error-message": "No entry."}
    )
    missing = rejection(attributes, ctx_for())
    invalid = rejection(attributes, ctx_for(bearer(mint(claims(exp=NOW - 5), RSA))))
    for error in (missing, invalid):
        assert (error.status_code, error.message) == (403, "No entry.")
    assert (missing.reason, invalid.reason) == ("TokenNotPresent", "TokenExpired")


def test_two_authorization_headers_are_invalid_even_if_both_are_good() -> None:
    token = mint(claims(), RSA)
    error = rejection(config(), ctx_for([*bearer(token), *bearer(token)]))
    assert (error.message, error.reason) == (INVALID, "JwtInvalid")


@pytest.mark.parametrize("name", ["access_token", "access%5Ftoken", "%61ccess_token"])
def test_a_header_token_plus_an_access_token_query_is_invalid(name: str) -> None:
    token = mint(claims(), RSA)
    ctx = ctx_for(bearer(token))
    ctx.request._raw_query = f"{name}={token}"
    error = rejection(config(), ctx)
    assert error.reason == "JwtInvalid"


@pytest.mark.parametrize(
    "value",
    ["Basic dXNlcjpwYXNz", "Token abc", "Bearer\tabc", "Bearerabc", "MAC abc", "DPoP abc"],
)
def test_a_wrong_scheme_is_invalid(value: str) -> None:
    error = rejection(config(), ctx_for([("Authorization", value)]))
    assert (error.message, error.reason) == (INVALID, "JwtInvalid")


def test_a_raw_token_without_scheme_is_invalid_in_authorization() -> None:
    error = rejection(config(), ctx_for([("Authorization", mint(claims(), RSA))]))
    assert error.reason == "JwtInvalid"


def test_a_custom_scheme() -> None:
    attributes = config(**{"require-scheme": "JWT"})
    assert admit(attributes, ctx_for([("Authorization", f"jwt {mint(claims(), RSA)}")])).jwt
    assert rejection(attributes, ctx_for(bearer(mint(claims(), RSA)))).reason == "JwtInvalid"


def test_a_custom_header_takes_the_raw_token() -> None:
    attributes = config(**{"header-name": "X-Token"})
    ctx = admit(attributes, ctx_for([("x-token", mint(claims(), RSA)), ("authorization", "x")]))
    assert "x-token" not in ctx.request.headers
    assert ctx.request.headers.get("authorization") == "x"


def test_the_token_is_removed_before_forwarding_by_default() -> None:
    ctx = admit(config(), ctx_for([*bearer(mint(claims(), RSA)), ("x-keep", "1")]))
    assert "authorization" not in ctx.request.headers
    assert ctx.request.headers.get("x-keep") == "1"


def test_keep_token_forwards_it() -> None:
    token = mint(claims(), RSA)
    ctx = admit(config(**{"keep-token": True}), ctx_for(bearer(token)))
    assert ctx.request.headers.get("authorization") == f"Bearer {token}"


def test_query_parameter_source_removes_the_parameter() -> None:
    token = mint(claims(), RSA)
    attributes = config(**{"query-parameter-name": "token"})
    ctx = admit(attributes, ctx_for(query=[("a", "1"), ("token", token), ("b", "2")]))
    assert ctx.request.query == [("a", "1"), ("b", "2")]
    assert "token" not in ctx.request.query_string
    kept = admit(
        {**attributes, "keep-token": True}, ctx_for(query=[("token", token)])
    ).request.query
    assert kept == [("token", token)]


def test_query_parameter_source_refuses_duplicates_and_reports_absence() -> None:
    token = mint(claims(), RSA)
    attributes = config(**{"query-parameter-name": "token"})
    twice = ctx_for(query=[("token", token), ("token", token)])
    assert rejection(attributes, twice).reason == "JwtInvalid"
    assert rejection(attributes, ctx_for(bearer(token))).reason == "TokenNotPresent"
    assert rejection(attributes, ctx_for(query=[("token", "")])).reason == "TokenNotPresent"


def test_token_value_expression_source() -> None:
    attributes = config(
        **{"token-value": '@(context.Request.Headers.GetValueOrDefault("X-Jwt", ""))'}
    )
    token = mint(claims(), EC)
    assert admit(attributes, ctx_for([("x-jwt", token)])).jwt is not None
    assert rejection(attributes, ctx_for()).reason == "TokenNotPresent"
    assert rejection(attributes, ctx_for([("x-jwt", "Bearer " + token)])).reason == "JwtInvalid"


def test_a_token_value_token_is_removed_before_forwarding_by_default() -> None:
    token = mint(claims(), EC)
    attributes = config(
        **{"token-value": '@(context.Request.Headers.GetValueOrDefault("X-Jwt", ""))'}
    )
    ctx = ctx_for([("x-jwt", token), ("x-other", "Bearer " + token), ("x-keep", "1")])
    ctx.request._raw_query = f"jwt={token}&a=1"
    admit(attributes, ctx)
    assert token not in str(ctx.request.headers) and token not in ctx.request.query_string
    assert ctx.request.headers.get("x-keep") == "1" and ctx.request.query == [("a", "1")]
    kept = admit({**attributes, "keep-token": True}, ctx_for([("x-jwt", token)]))
    assert kept.request.headers.get("x-jwt") == token


def test_a_token_value_expression_that_fails_on_a_missing_header_is_not_present() -> None:
    attributes = config(**{"token-value": '@(context.Request.Headers["X-Jwt"])'})
    error = rejection(attributes, ctx_for())
    assert (error.status_code, error.message, error.reason) == (401, NOT_PRESENT, "TokenNotPresent")
    assert admit(attributes, ctx_for([("x-jwt", mint(claims(), EC))])).jwt is not None


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([("Authorization", "Bearer {t}"), ("Authorization", "Bearer {t}")], ""),
        ([("Authorization", "Bearer {t}")], "access_token={t}&a=1"),
        ([("Authorization", "Basic {t}")], ""),
        ([("Authorization", "Bearer {x}")], ""),
    ],
)
def test_in_shadow_mode_a_refused_token_is_still_removed(
    headers: list[tuple[str, str]], query: str
) -> None:
    token, expired = mint(claims(), RSA), mint(claims(exp=NOW - 1), RSA)
    ctx = ctx_for([(k, v.format(t=token, x=expired)) for k, v in headers])
    ctx.request._raw_query = query.format(t=token)
    policy = build_one("validate-jwt", config(shadow=True))
    assert asyncio.run(run_statements([policy], ctx)) is None
    assert len(ctx.shadow_rejections) == 1 and ctx.jwt is None
    forwarded = str(ctx.request.headers) + ctx.request.query_string
    assert token not in forwarded and expired not in forwarded


def test_in_shadow_mode_refused_query_tokens_are_still_removed() -> None:
    token = mint(claims(), RSA)
    ctx = ctx_for(query=[("token", token), ("token", token), ("a", "1")])
    policy = build_one("validate-jwt", config(shadow=True, **{"query-parameter-name": "token"}))
    assert asyncio.run(run_statements([policy], ctx)) is None
    assert ctx.shadow_rejections == ["JwtInvalid"] and ctx.request.query == [("a", "1")]


def test_a_shadow_policy_never_replaces_the_identity_an_enforcing_one_admitted() -> None:
    enforcing = build_one("validate-jwt", config())
    trial = build_one("validate-jwt", config(shadow=True, **{"header-name": "X-Trial"}))
    chatbot = mint(claims(roles=["Chatbot"]), RSA)
    prod = mint(claims(roles=["ProdWorkload"]), EC)
    ctx = ctx_for([*bearer(chatbot), ("x-trial", prod)])
    assert asyncio.run(run_statements([enforcing, trial], ctx)) is None
    assert ctx.claims is not None and ctx.claims["roles"] == "Chatbot"
    alone = ctx_for([("x-trial", prod)])  # alone, a shadow policy still provides claims
    assert asyncio.run(run_statements([trial], alone)) is None
    assert alone.claims is not None and alone.claims["roles"] == "ProdWorkload"


def test_output_variable_and_context_claims() -> None:
    payload = claims(roles=["ProdWorkload", "Chatbot"], oid="o-1")
    attributes = config(**{"output-token-variable-name": "jwt"})
    ctx = admit(attributes, ctx_for(bearer(mint(payload, RSA))))
    assert ctx.variables["jwt"] is ctx.jwt
    assert ctx.claims is not None
    assert ctx.claims["oid"] == "o-1" and ctx.claims["roles"] == "ProdWorkload,Chatbot"
    assert "jwt" not in admit(config(), ctx_for(bearer(mint(payload, RSA)))).variables


def test_the_readme_idiom_for_a_claim_that_may_be_absent() -> None:
    header = build_one(
        "set-header",
        {"name": "x-oid", "value": '@(context.Claims?.GetValueOrDefault("oid") ?? "anonymous")'},
    )
    for payload, expected in ((None, "anonymous"), ({}, "anonymous"), ({"oid": "o"}, "o")):
        ctx = ctx_for()
        ctx.jwt = None if payload is None else Jwt({}, payload)
        assert run(header, ctx) is None and ctx.request.headers.get("x-oid") == expected


def test_a_rejected_token_leaves_no_identity() -> None:
    ctx = ctx_for(bearer(mint(claims(exp=NOW - 1), RSA)))
    rejection(config(**{"output-token-variable-name": "jwt"}), ctx)
    assert ctx.jwt is None and ctx.claims is None and "jwt" not in ctx.variables


def test_required_claims_from_config() -> None:
    attributes = config(
        **{
            "required-claims": [
                {"name": "roles", "match": "any", "value": ["ProdWorkload", "Chatbot"]},
                {"name": "scp", "separator": " ", "value": ["chat", "embeddings"]},
                {"name": "ver", "value": 2},
            ]
        }
    )
    good = claims(roles=["Chatbot"], scp="chat embeddings", ver="2")
    assert admit(attributes, ctx_for(bearer(mint(good, RSA)))).jwt is not None
    wrong = claims(roles=["Reader"], scp="chat embeddings", ver="2")
    assert rejection(attributes, ctx_for(bearer(mint(wrong, RSA)))).reason == (
        "TokenClaimValueNotAllowed"
    )
    missing = claims(roles=["Chatbot"], ver="2")
    error = rejection(attributes, ctx_for(bearer(mint(missing, RSA))))
    assert error.reason == "TokenClaimNotFound" and "scp" not in error.message


def test_require_expiration_false_and_clock_skew() -> None:
    attributes = config(**{"require-expiration-time": False, "clock-skew": 60})
    assert admit(attributes, ctx_for(bearer(mint(claims(exp=None), RSA)))).jwt
    assert admit(attributes, ctx_for(bearer(mint(claims(exp=NOW - 30), RSA)))).jwt
    error = rejection(attributes, ctx_for(bearer(mint(claims(exp=NOW - 90), RSA))))
    assert error.reason == "TokenExpired"


def test_shadow_mode_records_instead_of_rejecting() -> None:
    policy = build_one("validate-jwt", config(shadow=True))
    ctx = ctx_for(bearer(mint(claims(exp=NOW - 1), RSA)))
    assert asyncio.run(run_statements([policy], ctx)) is None
    assert ctx.shadow_rejections == ["TokenExpired"]
    assert ctx.jwt is None
    missing = ctx_for()
    assert asyncio.run(run_statements([policy], missing)) is None
    assert missing.shadow_rejections == ["TokenNotPresent"]


def test_describe_names_the_source_and_keys() -> None:
    text = build_one("validate-jwt", config()).describe()
    assert "validate-jwt" in text and "Authorization" in text and "3 keys" in text


# -- never a 500 ------------------------------------------------------------------------------

HOSTILE = [
    "",
    ".",
    "..",
    "a.b",
    "a.b.c.d",
    "a.b.c.d.e",
    "Zm9v.YmFy.YmF6",
    unsigned(claims()),
    unsigned(claims(), "NONE", "c2ln"),
    mint(claims(), RSA, header={"jwk": RSA.public_jwk()}),
    mint(claims(), RSA, header={"jku": "http://127.0.0.1:1/jwks"}),
    mint(claims(), RSA, header={"crit": ["exp"]}),
    mint(claims(), RSA, header={"alg": "RS1"}),
    mint(claims(), RSA, header={"alg": 5}),
    mint(claims(), RSA, header={"kid": {"x": 1}}),
    mint(claims(exp=10**400), RSA),
    mint(claims(exp="soon"), RSA),
    mint(claims(aud={"x": 1}), RSA),
    mint(claims(iss=["x"]), RSA),
    mint(claims(), RSA) + "=",
    mint(claims(), RSA) + "\x00",
    mint(claims(), RSA).replace("e", "é", 1),
    "x" * 17_000,
    mint(claims(pad="x" * 17_000), RSA),
    "\udcff" * 10,
]


@pytest.mark.parametrize("token", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_tokens_get_401_never_anything_else(token: str) -> None:
    with pytest.raises(GatewayError) as info:
        run(build_one("validate-jwt", config()), ctx_for(bearer(token)))
    assert info.value.status_code == 401
    assert info.value.message in {INVALID, NOT_PRESENT}


# -- config errors ------------------------------------------------------------------------------


def test_audiences_are_required() -> None:
    issues = issues_of("validate-jwt", {k: v for k, v in config().items() if k != "audiences"})
    assert "audience" in issues[f"{P}.audiences"]


def test_keys_are_required() -> None:
    issues = issues_of("validate-jwt", {"issuers": [ISSUER], "audiences": [AUDIENCE]})
    assert any("keys" in message for message in issues.values())


def test_unsigned_tokens_cannot_be_allowed() -> None:
    issues = issues_of("validate-jwt", config(**{"require-signed-tokens": False}))
    assert any("unsigned" in message for message in issues.values())


@pytest.mark.parametrize(
    "sources",
    [
        {"header-name": "Authorization", "query-parameter-name": "t"},
        {"header-name": "X", "token-value": "@(context.RequestId)"},
        {"query-parameter-name": "t", "token-value": "x"},
    ],
)
def test_only_one_token_source(sources: dict[str, Any]) -> None:
    issues = issues_of("validate-jwt", config(**sources))
    assert any("at most one" in message for message in issues.values())


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ({"value": "c2hvcnQ="}, "32 bytes"),
        ({"value": "not base64!"}, "base64"),
        ({"pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}, "PEM"),
        ({"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}, "invalid RSA key"),
        ({"jwk": signer("RS256").public_jwk() | {"n": "AQAB" * 32}}, "2048"),
        ({"jwk": {**RSA.public_jwk(), "alg": ["RS256"]}}, "algorithm"),
        ({"jwk": {**RSA.public_jwk(), "alg": "ES256"}}, "does not fit"),
        ({"n": "AQAB"}, "'e'"),
    ],
)
def test_a_bad_key_is_a_config_error_at_its_path(key: dict[str, Any], expected: str) -> None:
    issues = issues_of(
        "validate-jwt", config(**{"issuer-signing-keys": [{"jwk": EC.public_jwk()}, key]})
    )
    assert expected in issues[f"{P}.issuer-signing-keys[1]"]


def test_a_key_needs_exactly_one_form() -> None:
    both = {"value": base64.b64encode(HMAC.private).decode(), "pem": RSA.public_pem()}
    issues = issues_of("validate-jwt", config(**{"issuer-signing-keys": [both]}))
    assert any("exactly one" in message for message in issues.values())
    issues = issues_of("validate-jwt", config(**{"issuer-signing-keys": [{"id": "x"}]}))
    assert any("exactly one" in message for message in issues.values())


def test_issuers_are_required_with_only_static_keys() -> None:
    issues = issues_of("validate-jwt", {k: v for k, v in config().items() if k != "issuers"})
    assert any("issuers" in message for message in issues.values())


def test_openid_config_must_be_https() -> None:
    attributes = {
        "openid-config": [{"url": "http://login.example/.well-known/openid-configuration"}],
        "audiences": [AUDIENCE],
    }
    issues = issues_of("validate-jwt", attributes)
    assert "https" in issues[f"{P}.openid-config[0].url"]


def test_unknown_attributes_are_errors() -> None:
    issues = issues_of("validate-jwt", config(**{"decryption-keys": []}))
    assert any("decryption-keys" in path for path in issues)


# -- with an OpenID Connect provider --------------------------------------------------------


def build_with_resources(attributes: dict[str, Any]) -> tuple[Policy, BuildContext]:
    collector = IssueCollector()
    build = BuildContext(issues=collector, backend_ids=frozenset())
    built = build.statements([{"validate-jwt": attributes}], "policies.inbound")
    assert collector.issues == []
    policy = built[0]
    assert isinstance(policy, Policy)
    return policy, build


async def test_openid_config_keys_and_issuer_come_from_discovery() -> None:
    provider = Provider()
    await provider.start()
    try:
        attributes = {"openid-config": provider.url, "audiences": AUDIENCE}
        policy, build = build_with_resources(attributes)
        # Before the source is started no key exists: fail closed, no fetch, no 500.
        early = ctx_for(bearer(mint(claims(iss=provider.issuer), KEY_A)))
        with pytest.raises(GatewayError) as info:
            await policy.apply(early)
        assert info.value.reason == "TokenSignatureKeyNotFound"
        assert provider.discovery_hits == 0
        for resource in build.resources.values():
            await resource.start()
        try:
            ctx = ctx_for(bearer(mint(claims(iss=provider.issuer), KEY_A)))
            assert await policy.apply(ctx) is None
            assert ctx.jwt is not None and ctx.jwt.issuer == provider.issuer
            # The discovery issuer is the only one accepted when `issuers` is not given.
            wrong = ctx_for(bearer(mint(claims(), KEY_A)))
            with pytest.raises(GatewayError) as info:
                await policy.apply(wrong)
            assert info.value.reason == "TokenIssuerNotAllowed"
        finally:
            for resource in build.resources.values():
                await resource.close()
    finally:
        await provider.stop()


def test_policies_naming_the_same_discovery_url_share_one_source() -> None:
    url = "https://login.example/t/.well-known/openid-configuration"
    collector = IssueCollector()
    build = BuildContext(issues=collector, backend_ids=frozenset())
    statement = {"validate-jwt": {"openid-config": url, "audiences": AUDIENCE}}
    build.statements([statement, statement], "policies.inbound")
    assert collector.issues == []
    assert len(build.resources) == 1


def test_a_second_validate_jwt_on_the_same_header_sees_the_token_the_first_removed() -> None:
    token = mint(claims(), RSA)
    first = build_one("validate-jwt", config())
    second = build_one("validate-jwt", config(**{"required-claims": [{"name": "sub"}]}))
    ctx = ctx_for(headers=bearer(token))
    assert asyncio.run(run_statements([first, second], ctx)) is None
    assert "authorization" not in ctx.request.headers
    assert ctx.jwt is not None
