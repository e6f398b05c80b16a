"""Parsing a compact JWS: nothing in the token may choose how it is checked, and every
malformed form is a clean `TokenRejected`, never another exception."""

from __future__ import annotations

from typing import Any

import pytest

from aigw.jwt.errors import TokenRejected
from aigw.jwt.token import MAX_TOKEN_CHARS, parse_token
from tests.unit.jwt.minting import (
    DROP,
    b64url,
    b64url_json,
    claims,
    mint,
    mint_raw,
    signer,
    unsigned,
)

KEY = signer("ES256", kid="k1")


def rejected(token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        parse_token(token)
    return info.value


def test_a_good_token_parses_into_header_claims_input_and_signature() -> None:
    token = mint(claims(), KEY)
    parsed = parse_token(token)
    assert parsed.alg == "ES256" and parsed.kid == "k1"
    assert parsed.claims == claims()
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()
    assert len(parsed.signature) == 64


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", b64url(b"x" * 32)])
def test_alg_none_in_any_casing_is_refused_with_or_without_signature(
    alg: str, signature: str
) -> None:
    error = rejected(unsigned(claims(), alg, signature))
    assert error.reason == "TokenSignatureInvalid"


@pytest.mark.parametrize(
    "header",
    [
        {"jwk": KEY.public_jwk()},
        {"jku": "https://evil.example/jwks"},
        {"x5u": "https://evil.example/cert.pem"},
        {"x5c": ["MIIB"]},
        {"crit": ["exp"]},
        {"crit": []},
        {"crit": ["b64"], "b64": False},
        {"kid": 1},
        {"kid": None},
        {"kid": ["k1"]},
        {"alg": ""},
        {"alg": None},
        {"alg": 256},
        {"alg": ["ES256"]},
    ],
)
def test_headers_that_would_steer_verification_are_refused(header: dict[str, Any]) -> None:
    assert rejected(mint(claims(), KEY, header=header)).reason == "JwtInvalid"


def test_a_header_without_alg_is_refused() -> None:
    assert rejected(mint(claims(), KEY, header={"alg": DROP})).reason == "JwtInvalid"
    assert rejected(mint_raw(b"{}", b'{"sub":"a"}', KEY)).reason == "JwtInvalid"


def test_jwe_with_five_segments_is_refused() -> None:
    jwe = ".".join([b64url_json({"alg": "RSA-OAEP", "enc": "A256GCM"}), "a", "b", "c", "d"])
    assert "JWE" in rejected(jwe).detail


@pytest.mark.parametrize("count", [1, 2, 4, 6])
def test_wrong_segment_counts_are_refused(count: int) -> None:
    good = mint(claims(), KEY).split(".")
    token = ".".join((good * 2)[:count])
    assert rejected(token).reason == "JwtInvalid"


@pytest.mark.parametrize("token", ["", ".", "..", "...", "a.b.c"])
def test_degenerate_tokens_are_refused(token: str) -> None:
    rejected(token)


@pytest.mark.parametrize("segment", [0, 1, 2])
@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s + "=",
        lambda s: s + "==",
        lambda s: s[:4] + "+" + s[5:],
        lambda s: s[:4] + "/" + s[5:],
        lambda s: s[:4] + " " + s[5:],
        lambda s: " " + s,
        lambda s: s + "\n",
        lambda s: s + "A" * ((1 - len(s)) % 4 or 4),  # 4n+1 characters: no base64 text
        lambda s: s[:4] + "%" + s[5:],
        lambda s: s[:4] + "\\" + s[5:],
        lambda s: s[:4] + "\x00" + s[5:],
    ],
    ids=[
        "pad1",
        "pad2",
        "plus",
        "slash",
        "space",
        "lead-space",
        "newline",
        "extra",
        "pct",
        "bs",
        "nul",
    ],
)
def test_bad_base64_in_any_segment_is_refused(segment: int, corrupt: Any) -> None:
    parts = mint(claims(), KEY).split(".")
    parts[segment] = corrupt(parts[segment])
    rejected(".".join(parts))


@pytest.mark.parametrize("alg", ["HS384", "ES256", "RS256"])
def test_a_newline_after_the_signature_is_not_the_same_token(alg: str) -> None:
    token = mint(claims(), signer(alg))
    for suffix in ("\n", "\r\n", "\n\n", "\t", " "):
        rejected(token + suffix)


def test_non_canonical_base64_in_the_last_character_is_refused() -> None:
    token = mint(claims(), KEY)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    # 64 bytes -> 86 characters: the last one carries 2 bits, its 4 low bits must be zero.
    for low in range(1, 16):
        variant = token[:-1] + alphabet[last ^ low]
        assert "canonical" in rejected(variant).detail


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        (b"not json", b'{"sub":"a"}'),
        (b'{"alg":"ES256"', b'{"sub":"a"}'),
        (b'{"alg":"ES256"}', b"not json"),
        (b'{"alg":"ES256"}', b""),
        (b"", b'{"sub":"a"}'),
        (b'["alg","ES256"]', b'{"sub":"a"}'),
        (b'{"alg":"ES256"}', b'["sub","a"]'),
        (b'"ES256"', b'{"sub":"a"}'),
        (b'{"alg":"ES256"}', b"123"),
        (b'{"alg":"ES256"}', b"null"),
        (b'{"alg":"ES256","alg":"none"}', b'{"sub":"a"}'),
        (b'{"alg":"none","alg":"ES256"}', b'{"sub":"a"}'),
        (b'{"alg":"ES256","kid":"k1","kid":"k2"}', b'{"sub":"a"}'),
        (b'{"alg":"ES256"}', b'{"sub":"a","sub":"admin"}'),
        (b'{"alg":"ES256"}', b'{"aud":"x","aud":"api://aigw"}'),
        (b'{"alg":"ES256"}', b'{"exp":NaN}'),
        (b'{"alg":"ES256"}', b'{"exp":Infinity}'),
        (b'{"alg":"ES256"}', b'{"exp":1e999}'),
        (b'{"alg":"ES256"}', b'{"exp":' + b"9" * 5000 + b"}"),
        (b'{"alg":"ES256"}', b"[" * 5000 + b"]" * 5000),
        (b'{"alg":"ES256"}', b'{"sub":"\xff"}'),
        (b'{"alg":"ES256"}', b'{"sub":"\\ud800"}'),
        (b'\xef\xbb\xbf{"alg":"ES256"}', b'{"sub":"a"}'),
    ],
)
def test_header_and_payload_must_be_strict_json_objects(header: bytes, payload: bytes) -> None:
    assert rejected(mint_raw(header, payload, KEY)).reason in {
        "JwtInvalid",
        "TokenSignatureInvalid",
    }


@pytest.mark.parametrize("signature", ["", "A", "AAAAA"])
def test_an_empty_or_truncated_signature_is_refused(signature: str) -> None:
    token = mint(claims(), KEY).rsplit(".", 1)[0] + "." + signature
    rejected(token)


def test_an_empty_signature_is_a_signature_failure() -> None:
    token = mint(claims(), KEY).rsplit(".", 1)[0] + "."
    assert rejected(token).reason == "TokenSignatureInvalid"


def test_oversized_tokens_are_refused_before_any_decoding() -> None:
    padding = "x" * MAX_TOKEN_CHARS
    token = mint(claims(pad=padding), KEY)
    assert len(token) > 16 * 1024
    assert "longer" in rejected(token).detail
    assert "longer" in rejected("a" * (MAX_TOKEN_CHARS + 1)).detail
    # Just under the limit is still parsed.
    fits = mint(claims(pad="x" * 11_000), KEY)
    assert len(fits) <= MAX_TOKEN_CHARS
    assert parse_token(fits).claims["pad"] == "x" * 11_000


@pytest.mark.parametrize("text", ["é", "\u200b", "\xa0", "\U0001f600", "\udc80"])
def test_non_ascii_tokens_are_refused(text: str) -> None:
    parts = mint(claims(), KEY).split(".")
    parts[1] = parts[1][:5] + text + parts[1][5:]
    assert "ASCII" in rejected(".".join(parts)).detail


def test_payload_values_are_kept_as_sent() -> None:
    payload = {"roles": ["a", "b"], "n": 1, "f": 1.5, "b": True, "o": {"x": None}, "s": "é"}
    assert parse_token(mint(payload, KEY)).claims == payload
