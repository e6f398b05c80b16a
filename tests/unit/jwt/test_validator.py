"""The validator end to end: key selection, every attack on the signature, the
verified-token cache, and the issuer bound to the source that verified the token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from aigw.jwt import validator as validator_module
from aigw.jwt.claims import ClaimRequirement
from aigw.jwt.errors import TokenRejected
from aigw.jwt.keys import VerificationKey, from_jwk, from_pem, symmetric_key
from aigw.jwt.sources import KeySource, StaticKeys
from aigw.jwt.validator import CACHE_SECONDS, Jwt, JwtValidator, ValidationRules
from tests.unit.jwt.minting import (
    AUDIENCE,
    ISSUER,
    NOW,
    Signer,
    b64url,
    claims,
    der_ecdsa,
    ed448_signer,
    flip_bit,
    mint,
    signer,
    with_payload,
    with_signature,
)

ISSUER_B = "https://login.example.test/tenant-b/v2.0"
RULES = ValidationRules(audiences=frozenset({AUDIENCE}), issuers=frozenset({ISSUER}))


class IssuerKeys(StaticKeys):
    """Keys vouched for by an issuer, as an OIDC source's are."""

    def __init__(self, keys: Sequence[VerificationKey], issuer: str | None) -> None:
        super().__init__(keys)
        self._issuer = issuer

    @property
    def issuer(self) -> str | None:
        return self._issuer


class CountingSource:
    """Wraps a source and counts key look-ups (one per signature verification) and refetches;
    `on_refetch` keys replace the inner keys at the first refetch (a rotation)."""

    def __init__(self, inner: StaticKeys, on_refetch: Sequence[VerificationKey] = ()) -> None:
        self.inner = inner
        self.on_refetch = tuple(on_refetch)
        self.lookups = 0
        self.refetches = 0

    @property
    def issuer(self) -> str | None:
        return self.inner.issuer

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        self.lookups += 1
        return self.inner.candidates(kid, alg)

    def vouches_for(self, issuer: object) -> bool:
        return self.inner.vouches_for(issuer)

    async def refetch_for(self, kid: str | None) -> bool:
        self.refetches += 1
        if self.on_refetch and self.inner.keys != self.on_refetch:
            self.inner.keys = self.on_refetch
            return True
        return False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def jwk_key(key: Signer, **extra: Any) -> VerificationKey:
    return from_jwk(key.public_jwk(**extra))


def make(
    *keys: VerificationKey,
    rules: ValidationRules = RULES,
    sources: Sequence[KeySource] | None = None,
) -> JwtValidator:
    return JwtValidator(sources if sources is not None else [StaticKeys(keys)], rules)


async def reason(validator: JwtValidator, token: str, now: float = NOW) -> str:
    with pytest.raises(TokenRejected) as info:
        await validator.validate(token, now)
    return info.value.reason


ALL = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
ALL_SIGNERS = [signer(alg, kid=alg) for alg in [*ALL, "EdDSA"]] + [ed448_signer("Ed448")]


@pytest.mark.parametrize("key", ALL_SIGNERS, ids=lambda key: key.kid)
async def test_every_asymmetric_algorithm_validates_end_to_end(key: Signer) -> None:
    validator = make(*(jwk_key(other) for other in ALL_SIGNERS))
    jwt = await validator.validate(mint(claims(), key), NOW)
    assert jwt.algorithm == key.alg and jwt.subject == "user-1" and jwt.issuer == ISSUER


@pytest.mark.parametrize("key", ALL_SIGNERS, ids=lambda key: key.kid)
async def test_every_asymmetric_algorithm_validates_with_a_certificate(key: Signer) -> None:
    validator = make(from_pem(key.certificate_pem()))
    assert await validator.validate(mint(claims(), key.with_kid(None)), NOW)


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_tokens_validate_with_a_configured_secret(alg: str) -> None:
    key = signer(alg)
    assert await make(symmetric_key(key.private)).validate(mint(claims(), key), NOW)
    other = symmetric_key(signer(alg, index=1).private)
    assert await reason(make(other), mint(claims(), key)) == "TokenSignatureInvalid"


@pytest.mark.parametrize("encoding", ["pem", "der", "jwk-n"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_algorithm_confusion_hmac_signed_with_the_public_key_is_refused(
    alg: str, encoding: str
) -> None:
    rsa = signer("RS256")
    secret = {
        "pem": rsa.public_pem().encode(),
        "der": rsa.public_der(),
        "jwk-n": rsa.public_jwk()["n"].encode(),
    }[encoding]
    forged = mint(claims(), Signer(alg, secret), alg)
    for key in (from_pem(rsa.public_pem()), jwk_key(rsa), jwk_key(rsa, alg="RS256")):
        assert await reason(make(key), forged) == "TokenSignatureKeyNotFound"


async def test_algorithm_confusion_with_a_symmetric_key_configured_too() -> None:
    rsa = signer("RS256")
    forged = mint(claims(), Signer("HS256", rsa.public_pem().encode()), "HS256")
    validator = make(from_pem(rsa.public_pem()), symmetric_key(signer("HS256").private))
    assert await reason(validator, forged) == "TokenSignatureInvalid"


@pytest.mark.parametrize(
    ("token_alg", "key_alg"),
    [("ES256", "RS256"), ("RS256", "ES256"), ("ES384", "ES256"), ("PS256", "EdDSA")],
)
async def test_a_token_alg_the_keys_do_not_serve_finds_no_key(token_alg: str, key_alg: str) -> None:
    key = signer(key_alg)
    wrong = signer(token_alg)
    token = mint(claims(), wrong)
    assert await reason(make(jwk_key(key)), token) == "TokenSignatureKeyNotFound"


async def test_a_jwk_pinned_to_rs256_does_not_verify_ps256() -> None:
    key = signer("RS256", kid="k")
    validator = make(jwk_key(key, alg="RS256"))
    assert await validator.validate(mint(claims(), key), NOW)
    token = mint(claims(), key, "PS256")
    assert await reason(validator, token) == "TokenSignatureKeyNotFound"


async def test_an_es384_token_claiming_a_p256_key_is_refused() -> None:
    p256 = signer("ES256", kid="k")
    # Signed with the P-256 key but labelled ES384 (SHA-384): the key serves ES256 only.
    data_key = Signer("ES384", p256.private, "k")
    token = mint(claims(), data_key)
    assert await reason(make(jwk_key(p256)), token) == "TokenSignatureKeyNotFound"


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA", "HS256"])
async def test_tampering_is_refused(alg: str) -> None:
    key = signer(alg, kid="k")
    verifier = symmetric_key(key.private, "k") if alg == "HS256" else jwk_key(key)
    validator = make(verifier)
    token = mint(claims(), key)
    assert await validator.validate(token, NOW)
    for byte in (0, 7, -1):
        for bit in (0, 7):
            flipped = flip_bit(token, byte, bit)
            assert await reason(validator, flipped) == "TokenSignatureInvalid"
    edited = with_payload(token, claims(sub="admin"))
    assert await reason(validator, edited) == "TokenSignatureInvalid"
    longer = with_payload(token, claims(exp=NOW + 10**6))
    assert await reason(validator, longer) == "TokenSignatureInvalid"
    assert await reason(validator, with_signature(token, b"")) == "TokenSignatureInvalid"
    assert await reason(validator, with_signature(token, b"\x00")) == "TokenSignatureInvalid"


async def test_ecdsa_in_der_form_or_wrong_length_is_refused() -> None:
    key = signer("ES256", kid="k")
    validator = make(jwk_key(key))
    token = mint(claims(), key)
    signing_input = token.rsplit(".", 1)[0].encode()
    der = der_ecdsa(key.private, "ES256", signing_input)
    assert await reason(validator, with_signature(token, der)) == "TokenSignatureInvalid"
    raw = key.sign(signing_input)
    for bad in (raw[:-1], raw + b"\x00", b"\x00" + raw, raw[:32]):
        assert await reason(validator, with_signature(token, bad)) == "TokenSignatureInvalid"


async def test_alg_none_is_refused_even_with_keys_of_every_kind() -> None:
    validator = make(jwk_key(signer("RS256")), symmetric_key(signer("HS256").private))
    header = b64url(b'{"alg":"none"}')
    payload = mint(claims(), signer("RS256")).split(".")[1]
    assert await reason(validator, f"{header}.{payload}.") == "TokenSignatureInvalid"


@pytest.mark.parametrize("header", [{"jwk": "embedded"}, {"jku": "j"}, {"x5u": "u"}, {"x5c": []}])
async def test_embedded_keys_are_refused_even_when_the_signature_is_good(
    header: dict[str, Any],
) -> None:
    key = signer("RS256", kid="k")
    if header.get("jwk") == "embedded":
        header = {"jwk": key.public_jwk()}
    token = mint(claims(), key, header=header)
    assert await reason(make(jwk_key(key)), token) == "JwtInvalid"


# -- key selection -------------------------------------------------------------------------


async def test_kid_selects_the_key() -> None:
    a, b = signer("RS256", kid="a"), signer("RS256", kid="b", index=1)
    source = CountingSource(StaticKeys([jwk_key(a), jwk_key(b)]))
    validator = make(sources=[source])
    assert (await validator.validate(mint(claims(), b), NOW)).subject == "user-1"
    # The key named "a" does not verify a token signed by b's key.
    assert await reason(validator, mint(claims(sub="x"), b.with_kid("a"))) == (
        "TokenSignatureInvalid"
    )
    assert source.refetches == 0


async def test_a_token_without_kid_is_tried_against_every_key_for_its_alg() -> None:
    a, b = signer("RS256", kid="a"), signer("RS256", kid="b", index=1)
    ec = signer("ES256", kid="e")
    validator = make(jwk_key(ec), jwk_key(a), jwk_key(b))
    assert await validator.validate(mint(claims(), b.with_kid(None)), NOW)
    assert await validator.validate(mint(claims(), ec.with_kid(None)), NOW)


async def test_unknown_kid_is_key_not_found_after_asking_the_sources_once() -> None:
    key = signer("RS256", kid="a")
    source = CountingSource(StaticKeys([jwk_key(key)]))
    validator = make(sources=[source])
    token = mint(claims(), key.with_kid("unknown"))
    assert await reason(validator, token) == "TokenSignatureKeyNotFound"
    assert source.refetches == 1


async def test_a_keyless_configured_key_still_serves_a_token_with_a_kid() -> None:
    key = signer("ES256")
    validator = make(jwk_key(key))  # configured without an id
    assert await validator.validate(mint(claims(), key.with_kid("whatever")), NOW)


async def test_a_rotated_key_is_found_after_a_refetch() -> None:
    old, new = signer("ES256", kid="old"), signer("ES256", kid="new", index=1)
    source = CountingSource(StaticKeys([jwk_key(old)]), on_refetch=[jwk_key(old), jwk_key(new)])
    validator = make(sources=[source])
    assert await validator.validate(mint(claims(), new), NOW)
    assert source.refetches == 1
    assert await validator.validate(mint(claims(sub="2"), new), NOW)
    assert source.refetches == 1


async def test_no_sources_or_no_keys_fail_closed() -> None:
    token = mint(claims(), signer("RS256"))
    assert await reason(make(), token) == "TokenSignatureKeyNotFound"
    assert await reason(make(sources=[]), token) == "TokenSignatureKeyNotFound"


# -- the verified-token cache --------------------------------------------------------------


async def test_the_same_token_is_verified_once() -> None:
    key = signer("RS256", kid="a")
    source = CountingSource(StaticKeys([jwk_key(key)]))
    validator = make(sources=[source])
    token = mint(claims(), key)
    for _ in range(5):
        assert await validator.validate(token, NOW)
    assert source.lookups == 1
    await validator.validate(mint(claims(sub="other"), key), NOW)
    assert source.lookups == 2


async def test_a_cached_token_is_still_checked_for_expiry_and_claims() -> None:
    key = signer("RS256", kid="a")
    source = CountingSource(StaticKeys([jwk_key(key)]))
    validator = make(sources=[source])
    token = mint(claims(exp=NOW + 10), key)
    assert await validator.validate(token, NOW)
    assert await reason(validator, token, NOW + 10) == "TokenExpired"
    assert await reason(validator, token, NOW + 11) == "TokenExpired"
    strict = JwtValidator(
        [source],
        ValidationRules(frozenset({"api://other"}), frozenset({ISSUER})),
    )
    assert await reason(strict, token) == "TokenAudienceNotAllowed"


async def test_the_cache_is_keyed_by_the_whole_token() -> None:
    key = signer("RS256", kid="a")
    source = CountingSource(StaticKeys([jwk_key(key)]))
    validator = make(sources=[source])
    token = mint(claims(), key)
    assert await validator.validate(token, NOW)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for char in alphabet.replace(token[-1], ""):
        assert await reason(validator, token[:-1] + char) in {"JwtInvalid", "TokenSignatureInvalid"}
    assert await reason(validator, flip_bit(token, -1, 7)) == "TokenSignatureInvalid"
    assert await reason(validator, token[:-1]) in {"JwtInvalid", "TokenSignatureInvalid"}
    assert await reason(validator, token + "A") in {"JwtInvalid", "TokenSignatureInvalid"}


async def test_a_cache_entry_expires_and_the_token_is_verified_again() -> None:
    key = signer("RS256", kid="a")
    source = CountingSource(StaticKeys([jwk_key(key)]))
    validator = make(sources=[source])
    token = mint(claims(exp=NOW + 10 * CACHE_SECONDS), key)
    await validator.validate(token, NOW)
    await validator.validate(token, NOW + CACHE_SECONDS - 1)
    assert source.lookups == 1
    await validator.validate(token, NOW + CACHE_SECONDS)
    assert source.lookups == 2


async def test_a_rejected_token_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    key = signer("RS256", kid="a")
    source = CountingSource(StaticKeys([jwk_key(key)]))
    validator = make(sources=[source])
    bad = flip_bit(mint(claims(), key))
    for _ in range(3):
        assert await reason(validator, bad) == "TokenSignatureInvalid"
    assert source.lookups == 3


async def test_only_admitted_tokens_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    # Entra ID signs every tenant's tokens with the same keys: tokens for other audiences
    # (or other tenants) verify, but must neither fill the cache nor evict admitted ones.
    monkeypatch.setattr(validator_module, "CACHE_ENTRIES", 2)
    key = signer("RS256", kid="a")
    source = CountingSource(StaticKeys([jwk_key(key)]))
    validator = make(sources=[source])
    good = mint(claims(), key)
    assert await validator.validate(good, NOW)
    for n in range(5):
        foreign = mint(claims(aud=f"api://other-{n}"), key)
        assert await reason(validator, foreign) == "TokenAudienceNotAllowed"
    assert source.lookups == 6
    assert await validator.validate(good, NOW)
    assert source.lookups == 6  # still cached
    assert len(validator._verified) == 1


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validator_module, "CACHE_ENTRIES", 3)
    key = signer("ES256", kid="a")
    source = CountingSource(StaticKeys([jwk_key(key)]))
    validator = make(sources=[source])
    tokens = [mint(claims(sub=str(n)), key) for n in range(4)]
    for token in tokens:
        await validator.validate(token, NOW)
    assert source.lookups == 4
    await validator.validate(tokens[3], NOW)
    assert source.lookups == 4
    await validator.validate(tokens[0], NOW)  # evicted, oldest first
    assert source.lookups == 5


# -- the issuer is bound to the verifying source -------------------------------------------

SOURCE_RULES = ValidationRules(audiences=frozenset({AUDIENCE}), issuers=frozenset())


async def test_the_issuer_comes_from_the_source_that_verified_the_token() -> None:
    a, b = signer("RS256", kid="a"), signer("RS256", kid="b", index=1)
    sources = [IssuerKeys([jwk_key(a)], ISSUER), IssuerKeys([jwk_key(b)], ISSUER_B)]
    validator = make(sources=sources, rules=SOURCE_RULES)
    assert (await validator.validate(mint(claims(iss=ISSUER), a), NOW)).issuer == ISSUER
    assert (await validator.validate(mint(claims(iss=ISSUER_B), b), NOW)).issuer == ISSUER_B
    # Signed by A's key, claiming B's issuer: A cannot speak for B (only B's keys are tried).
    forged = mint(claims(iss=ISSUER_B), a)
    assert await reason(validator, forged) == "TokenSignatureKeyNotFound"
    forged = mint(claims(iss=ISSUER_B), a.with_kid(None))
    assert await reason(validator, forged) == "TokenSignatureInvalid"
    forged = mint(claims(iss=ISSUER_B), a.with_kid("b"))
    assert await reason(validator, forged) == "TokenSignatureInvalid"


async def test_configured_issuers_never_let_one_provider_speak_for_another() -> None:
    # Both issuers listed: a token naming A must still be signed by A's keys, not B's (a
    # partner IdP), nor by a configured secret meant for an internal issuer.
    a, b = signer("RS256", kid="a"), signer("RS256", kid="b", index=1)
    secret = signer("HS256", kid="internal")
    rules = ValidationRules(frozenset({AUDIENCE}), frozenset({ISSUER, ISSUER_B, "internal"}))
    sources = [
        IssuerKeys([jwk_key(a)], ISSUER),
        IssuerKeys([jwk_key(b)], ISSUER_B),
        StaticKeys([symmetric_key(secret.private, "internal")]),
    ]
    validator = make(sources=sources, rules=rules)
    assert await validator.validate(mint(claims(iss=ISSUER), a), NOW)
    assert await validator.validate(mint(claims(iss=ISSUER_B), b), NOW)
    assert await validator.validate(mint(claims(iss="internal"), secret), NOW)
    for forger in (b, b.with_kid(None), b.with_kid("a"), secret, secret.with_kid(None)):
        assert await reason(validator, mint(claims(iss=ISSUER), forger)) in {
            "TokenSignatureKeyNotFound",
            "TokenSignatureInvalid",
        }


async def test_an_issuer_that_can_never_pass_is_refused_before_any_signature_check() -> None:
    key = signer("RS256", kid="a")
    source = CountingSource(IssuerKeys([jwk_key(key)], ISSUER))
    validator = make(sources=[source], rules=SOURCE_RULES)
    other = "https://login.example.test/someone-else/v2.0"
    assert await reason(validator, mint(claims(iss=other), key)) == "TokenIssuerNotAllowed"
    configured = make(sources=[source])
    for hostile in (other, [ISSUER], {"iss": ISSUER}, None, 1):
        assert await reason(configured, mint(claims(iss=hostile), key)) == "TokenIssuerNotAllowed"
    assert source.lookups == 0 and source.refetches == 0


async def test_providers_sharing_keys_each_vouch_for_their_own_issuer() -> None:
    # Entra ID tenants publish the same signing keys under different issuers.
    shared = signer("RS256", kid="shared")
    sources = [IssuerKeys([jwk_key(shared)], ISSUER), IssuerKeys([jwk_key(shared)], ISSUER_B)]
    validator = make(sources=sources, rules=SOURCE_RULES)
    assert (await validator.validate(mint(claims(iss=ISSUER_B), shared), NOW)).issuer == ISSUER_B
    assert (await validator.validate(mint(claims(iss=ISSUER), shared), NOW)).issuer == ISSUER
    other = "https://login.example.test/tenant-c/v2.0"
    assert await reason(validator, mint(claims(iss=other), shared)) == "TokenIssuerNotAllowed"


async def test_keys_without_an_issuer_need_configured_issuers() -> None:
    key = signer("RS256")
    token = mint(claims(), key)
    assert await reason(make(jwk_key(key), rules=SOURCE_RULES), token) == "TokenIssuerNotAllowed"
    assert await make(jwk_key(key)).validate(token, NOW)


async def test_configured_issuers_replace_the_sources_issuer() -> None:
    key = signer("RS256")
    rules = ValidationRules(frozenset({AUDIENCE}), frozenset({ISSUER, ISSUER_B}))
    validator = make(sources=[IssuerKeys([jwk_key(key)], ISSUER)], rules=rules)
    assert await validator.validate(mint(claims(iss=ISSUER_B), key), NOW)
    assert await reason(validator, mint(claims(iss="x"), key)) == "TokenIssuerNotAllowed"


# -- claims through the validator ----------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (claims(exp=NOW - 1), "TokenExpired"),
        (claims(exp=None), "TokenExpirationMissing"),
        (claims(nbf=NOW + 120), "TokenNotYetValid"),
        (claims(iat=NOW + 120), "TokenIssuedInFuture"),
        (claims(exp="tomorrow"), "JwtInvalid"),
        (claims(exp=True), "JwtInvalid"),
        (claims(exp=10**400), "JwtInvalid"),
        (claims(iss=ISSUER + "/"), "TokenIssuerNotAllowed"),
        (claims(aud=AUDIENCE.upper()), "TokenAudienceNotAllowed"),
        (claims(aud=[]), "TokenAudienceNotAllowed"),
        (claims(aud=None), "TokenAudienceNotAllowed"),
        (claims(), "TokenClaimNotFound"),
        (claims(roles=["Reader"]), "TokenClaimValueNotAllowed"),
    ],
)
async def test_claims_failures_carry_their_reason(payload: dict[str, Any], expected: str) -> None:
    key = signer("ES256")
    rules = ValidationRules(
        frozenset({AUDIENCE}),
        frozenset({ISSUER}),
        required_claims=(ClaimRequirement("roles", ("Writer",), "any"),),
    )
    assert await reason(make(jwk_key(key), rules=rules), mint(payload, key)) == expected


async def test_expiration_optional_and_clock_skew_through_the_rules() -> None:
    key = signer("ES256")
    rules = ValidationRules(
        frozenset({AUDIENCE}), frozenset({ISSUER}), require_expiration=False, clock_skew=30
    )
    validator = make(jwk_key(key), rules=rules)
    assert await validator.validate(mint(claims(exp=None), key), NOW)
    assert await validator.validate(mint(claims(exp=NOW - 20), key), NOW)
    assert await reason(validator, mint(claims(exp=NOW - 40), key)) == "TokenExpired"


async def test_the_jwt_object() -> None:
    key = signer("ES256")
    payload = claims(roles=["a", "b"], scp="chat embeddings", tier=3, oid="o-1")
    jwt = await make(jwk_key(key)).validate(mint(payload, key), NOW)
    assert isinstance(jwt, Jwt)
    assert (jwt.subject, jwt.issuer, jwt.algorithm) == ("user-1", ISSUER, "ES256")
    assert jwt.values("roles") == ["a", "b"]
    assert jwt.values("scp", " ") == ["chat", "embeddings"]
    assert jwt.joined("roles") == "a,b" and jwt.joined("tier") == "3"
    assert jwt.joined("missing") is None
    assert "roles" not in repr(jwt)
