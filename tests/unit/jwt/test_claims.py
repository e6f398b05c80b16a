"""Claims checks: lifetime with skew, exact issuer and audience, required claims."""

from __future__ import annotations

from typing import Any

import pytest

from aigw.jwt.claims import (
    ClaimRequirement,
    check_audience,
    check_issuer,
    check_lifetime,
    check_required,
    claim_values,
)
from aigw.jwt.errors import TokenRejected
from tests.unit.jwt.minting import AUDIENCE, ISSUER, NOW


def reason(check: Any, *args: Any) -> str:
    with pytest.raises(TokenRejected) as info:
        check(*args)
    return info.value.reason


def lifetime(claims: dict[str, Any], skew: float = 0, require: bool = True) -> None:
    check_lifetime(claims, NOW, skew, require)


# -- exp, nbf, iat -------------------------------------------------------------------------


def test_exp_is_required_by_default() -> None:
    assert reason(lifetime, {"iat": NOW}) == "TokenExpirationMissing"


def test_a_token_without_exp_passes_when_expiration_is_not_required() -> None:
    lifetime({"iat": NOW}, require=False)
    lifetime({}, require=False)


def test_expired_and_exactly_at_exp_are_refused() -> None:
    assert reason(lifetime, {"exp": NOW - 1}) == "TokenExpired"
    assert reason(lifetime, {"exp": NOW}) == "TokenExpired"  # valid strictly before exp
    lifetime({"exp": NOW + 1})
    lifetime({"exp": NOW + 0.5})


def test_expired_is_refused_even_when_exp_is_not_required() -> None:
    assert reason(lifetime, {"exp": NOW - 1}, 0, False) == "TokenExpired"


def test_skew_tolerates_a_recently_expired_token_and_no_more() -> None:
    lifetime({"exp": NOW - 29}, 30)
    assert reason(lifetime, {"exp": NOW - 30}, 30) == "TokenExpired"
    assert reason(lifetime, {"exp": NOW - 31}, 30) == "TokenExpired"


def test_nbf_in_the_future_is_refused_unless_within_skew() -> None:
    assert reason(lifetime, {"exp": NOW + 60, "nbf": NOW + 1}) == "TokenNotYetValid"
    lifetime({"exp": NOW + 60, "nbf": NOW})
    lifetime({"exp": NOW + 60, "nbf": NOW + 30}, 30)
    assert reason(lifetime, {"exp": NOW + 60, "nbf": NOW + 31}, 30) == "TokenNotYetValid"


def test_iat_in_the_future_is_refused_unless_within_skew() -> None:
    assert reason(lifetime, {"exp": NOW + 60, "iat": NOW + 1}) == "TokenIssuedInFuture"
    lifetime({"exp": NOW + 60, "iat": NOW})
    lifetime({"exp": NOW + 60, "iat": NOW + 10}, 10)
    assert reason(lifetime, {"exp": NOW + 60, "iat": NOW + 11}, 10) == "TokenIssuedInFuture"


def test_skew_never_works_against_the_caller_nor_widens_old_tokens() -> None:
    lifetime({"exp": NOW + 1, "nbf": NOW - 10_000, "iat": NOW - 10_000}, 60)


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value", [True, False, "1767229200", "", [NOW + 60], {"t": 1}, 10**400, -(10**400)]
)
def test_non_numeric_times_are_invalid_never_a_crash(name: str, value: Any) -> None:
    claims = {"exp": NOW + 60, name: value}
    assert reason(lifetime, claims, 0, True) == "JwtInvalid"


def test_a_null_time_counts_as_absent() -> None:
    assert reason(lifetime, {"exp": None}) == "TokenExpirationMissing"
    lifetime({"exp": NOW + 60, "nbf": None, "iat": None})


# -- iss ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "issuer",
    [
        ISSUER + "/",
        ISSUER[:-1],
        ISSUER + "x",
        "x" + ISSUER,
        ISSUER.upper(),
        ISSUER.replace("https", "HTTPS"),
        ISSUER.replace("https://", "http://"),
        " " + ISSUER,
        ISSUER + " ",
        ISSUER + "\x00",
        "",
        None,
        [ISSUER],
        {"iss": ISSUER},
        1,
    ],
)
def test_issuer_matches_exactly_only(issuer: Any) -> None:
    allowed = frozenset({ISSUER})
    assert reason(check_issuer, {"iss": issuer}, allowed) == "TokenIssuerNotAllowed"


def test_issuer_allowed_and_missing() -> None:
    check_issuer({"iss": ISSUER}, frozenset({"other", ISSUER}))
    assert reason(check_issuer, {}, frozenset({ISSUER})) == "TokenIssuerNotAllowed"
    assert reason(check_issuer, {"iss": ISSUER}, frozenset()) == "TokenIssuerNotAllowed"


# -- aud ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("audience", [AUDIENCE, [AUDIENCE], ["other", AUDIENCE], [1, AUDIENCE]])
def test_audience_as_string_or_array(audience: Any) -> None:
    check_audience({"aud": audience}, frozenset({AUDIENCE}))


@pytest.mark.parametrize(
    "audience",
    [
        AUDIENCE.upper(),
        "API://aigw",
        AUDIENCE + "/",
        AUDIENCE + "x",
        AUDIENCE[:-1],
        "api://aigw.evil",
        " " + AUDIENCE,
        f"{AUDIENCE} other",
        f"{AUDIENCE},other",
        [],
        ["other"],
        [[AUDIENCE]],
        [None],
        {"aud": AUDIENCE},
        1,
        True,
        None,
        "",
    ],
)
def test_audience_variants_and_non_strings_are_refused(audience: Any) -> None:
    assert (
        reason(check_audience, {"aud": audience}, frozenset({AUDIENCE}))
        == "TokenAudienceNotAllowed"
    )


def test_missing_audience_is_refused() -> None:
    assert reason(check_audience, {}, frozenset({AUDIENCE})) == "TokenAudienceNotAllowed"


def test_token_values_are_shortened_in_the_detail() -> None:
    # The detail is logged for every refused request: a 16 KiB claim is not copied there.
    checks = ((check_issuer, "iss", frozenset({ISSUER})), (check_audience, "aud", frozenset()))
    for check, name, allowed in checks:
        for value in ("x" * 10_000, ["x" * 10_000]):
            with pytest.raises(TokenRejected) as info:
                check({name: value}, allowed)
            assert len(info.value.detail) < 300


# -- required claims ---------------------------------------------------------------------------


def required(claims: dict[str, Any], *requirements: ClaimRequirement) -> None:
    check_required(claims, requirements)


def test_missing_claims_are_named_in_the_detail() -> None:
    with pytest.raises(TokenRejected) as info:
        required({"a": "1"}, ClaimRequirement("roles", ()), ClaimRequirement("scp", ()))
    assert info.value.reason == "TokenClaimNotFound"
    assert "roles" in info.value.detail and "scp" in info.value.detail


def test_presence_only_requirement() -> None:
    required({"roles": []}, ClaimRequirement("roles", ()))


def test_match_all_needs_every_value() -> None:
    need = ClaimRequirement("roles", ("a", "b"), "all")
    required({"roles": ["b", "c", "a"]}, need)
    assert reason(required, {"roles": ["a", "c"]}, need) == "TokenClaimValueNotAllowed"
    assert reason(required, {"roles": "a"}, need) == "TokenClaimValueNotAllowed"


def test_match_any_needs_one_value() -> None:
    need = ClaimRequirement("roles", ("a", "b"), "any")
    required({"roles": ["x", "b"]}, need)
    required({"roles": "a"}, need)
    assert reason(required, {"roles": ["x"]}, need) == "TokenClaimValueNotAllowed"
    assert reason(required, {"roles": []}, need) == "TokenClaimValueNotAllowed"


def test_separator_splits_a_string_claim() -> None:
    need = ClaimRequirement("scp", ("chat", "embeddings"), "all", " ")
    required({"scp": "chat embeddings files"}, need)
    assert reason(required, {"scp": "chat files"}, need) == "TokenClaimValueNotAllowed"
    # Without a separator the whole string is one value.
    whole = ClaimRequirement("scp", ("chat",), "all")
    assert reason(required, {"scp": "chat embeddings"}, whole) == "TokenClaimValueNotAllowed"
    required({"scp": "chat"}, whole)


def test_values_match_exactly_not_as_substrings_or_case_folded() -> None:
    need = ClaimRequirement("roles", ("Admin",), "any")
    for roles in (["admin"], ["Admins"], ["dmin"], ["Admin "], "SuperAdmin", [["Admin"]]):
        assert reason(required, {"roles": roles}, need) == "TokenClaimValueNotAllowed"


def test_numbers_and_booleans_compare_as_their_json_text() -> None:
    required({"tier": 3}, ClaimRequirement("tier", ("3",)))
    required({"admin": True}, ClaimRequirement("admin", ("true",)))
    assert (
        reason(required, {"admin": True}, ClaimRequirement("admin", ("True",)))
        == "TokenClaimValueNotAllowed"
    )
    assert (
        reason(required, {"tier": "3"}, ClaimRequirement("tier", ("3.0",)))
        == "TokenClaimValueNotAllowed"
    )


def test_objects_and_nulls_never_satisfy_a_value() -> None:
    need = ClaimRequirement("x", ("a",), "any")
    for value in (None, {"a": 1}, [{"a": 1}], [None]):
        assert reason(required, {"x": value}, need) == "TokenClaimValueNotAllowed"


def test_every_requirement_must_hold() -> None:
    roles = ClaimRequirement("roles", ("a",))
    scp = ClaimRequirement("scp", ("chat",), "any", " ")
    required({"roles": ["a"], "scp": "chat x"}, roles, scp)
    assert reason(required, {"roles": ["a"], "scp": "x"}, roles, scp) == (
        "TokenClaimValueNotAllowed"
    )


def test_claim_values_shapes() -> None:
    assert claim_values({"r": ["a", "", "b"]}, "r") == ["a", "b"]
    assert claim_values({"r": "a,b,,c"}, "r", ",") == ["a", "b", "c"]
    assert claim_values({"r": ["a b", "c"]}, "r", " ") == ["a", "b", "c"]
    assert claim_values({"r": [1, 2.5, False]}, "r") == ["1", "2.5", "false"]
    assert claim_values({"r": None}, "r") == []
    assert claim_values({}, "r") == []
