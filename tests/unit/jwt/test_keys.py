"""Verification keys: every algorithm with the right key, and every key/alg mismatch refused."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, x25519

from aigw.jwt.keys import (
    ALGORITHMS,
    UnusableKey,
    VerificationKey,
    fingerprint,
    from_jwk,
    from_pem,
    keys_from_jwks,
    symmetric_key,
)
from tests.unit.jwt.minting import (
    Signer,
    b64url,
    der_ecdsa,
    ec_private,
    ed448_signer,
    rsa_private,
    signer,
)

DATA = b"header.payload"
ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
ASYMMETRIC += ["EdDSA"]
SIGNERS = [signer(alg) for alg in ASYMMETRIC] + [ed448_signer()]
IDS = [*ASYMMETRIC[:-1], "EdDSA-Ed25519", "EdDSA-Ed448"]


def test_the_algorithm_table_is_exactly_the_supported_list() -> None:
    assert set(ALGORITHMS) == {*ASYMMETRIC, "HS256", "HS384", "HS512"}


@pytest.mark.parametrize("key", SIGNERS, ids=IDS)
def test_every_algorithm_verifies_with_its_jwk(key: Signer) -> None:
    verification = from_jwk(key.public_jwk())
    assert verification.verify(key.alg, DATA, key.sign(DATA))
    assert not verification.verify(key.alg, DATA + b"x", key.sign(DATA))


@pytest.mark.parametrize("key", SIGNERS, ids=IDS)
def test_every_algorithm_verifies_with_a_pem_public_key(key: Signer) -> None:
    assert from_pem(key.public_pem()).verify(key.alg, DATA, key.sign(DATA))


@pytest.mark.parametrize("key", SIGNERS, ids=IDS)
def test_every_algorithm_verifies_with_a_self_signed_certificate(key: Signer) -> None:
    verification = from_pem(key.certificate_pem(), kid="cert-1")
    assert verification.kid == "cert-1"
    assert verification.verify(key.alg, DATA, key.sign(DATA))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_verifies_only_with_a_configured_symmetric_key(alg: str) -> None:
    key = signer(alg)
    assert symmetric_key(key.private).verify(alg, DATA, key.sign(DATA))
    assert from_jwk(key.public_jwk(), allow_symmetric=True).verify(alg, DATA, key.sign(DATA))
    assert not symmetric_key(key.private).verify(alg, DATA, key.sign(DATA + b"!"))


def test_an_oct_key_from_a_jwks_is_refused() -> None:
    with pytest.raises(UnusableKey, match="symmetric"):
        from_jwk(signer("HS256").public_jwk())
    with pytest.raises(UnusableKey, match="no usable"):
        keys_from_jwks({"keys": [signer("HS256").public_jwk()]}, "jwks")


def test_hmac_secret_shorter_than_32_bytes_is_refused() -> None:
    with pytest.raises(UnusableKey, match="32 bytes"):
        symmetric_key(b"x" * 31)
    assert symmetric_key(b"x" * 32).kty == "oct"
    with pytest.raises(UnusableKey):
        from_jwk({"kty": "oct", "k": b64url(b"short")}, allow_symmetric=True)


def test_rsa_key_of_1024_bits_is_refused_in_every_form() -> None:
    small = Signer("RS256", rsa_private(1024))
    with pytest.raises(UnusableKey, match="2048"):
        from_jwk(small.public_jwk())
    with pytest.raises(UnusableKey, match="2048"):
        from_pem(small.public_pem())
    with pytest.raises(UnusableKey, match="2048"):
        from_pem(small.certificate_pem())


@pytest.mark.parametrize(
    ("token_alg", "key"),
    [
        ("ES256", signer("RS256")),
        ("RS256", signer("ES256")),
        ("PS256", signer("ES256")),
        ("ES384", signer("ES256")),
        ("ES256", signer("ES384")),
        ("ES512", signer("ES384")),
        ("EdDSA", signer("RS256")),
        ("RS256", signer("EdDSA")),
        ("ES256", signer("EdDSA")),
        ("HS256", signer("RS256")),
    ],
)
def test_key_type_and_token_alg_must_agree(token_alg: str, key: Signer) -> None:
    verification = from_jwk(key.public_jwk())
    assert not verification.accepts(token_alg)
    assert not verification.verify(token_alg, DATA, key.sign(DATA))


def test_a_jwk_naming_its_alg_verifies_only_that_alg() -> None:
    key = signer("RS256")
    pinned = from_jwk(key.public_jwk(alg="RS256"))
    assert pinned.verify("RS256", DATA, key.sign(DATA, "RS256"))
    assert not pinned.accepts("PS256")
    assert not pinned.verify("PS256", DATA, key.sign(DATA, "PS256"))
    assert not pinned.verify("RS512", DATA, key.sign(DATA, "RS512"))
    # Without `alg`, one RSA key serves the whole RSA family.
    free = from_jwk(key.public_jwk())
    assert all(free.verify(alg, DATA, key.sign(DATA, alg)) for alg in ("RS512", "PS384"))


@pytest.mark.parametrize(
    "jwk_update",
    [
        {"alg": "ES256"},  # an RSA key claiming an EC algorithm
        {"alg": "HS256"},
        {"alg": "none"},
        {"alg": "RSA-OAEP"},
        {"alg": ["RS256"]},
        {"alg": {"x": 1}},
        {"kid": 7},
        {"kid": ["a"]},
        {"kty": "DSA"},
        {"kty": ["RSA"]},
        {"n": ""},
        {"n": 123},
        {"e": "***"},
        {"e": "AQ"},  # exponent 1
    ],
)
def test_unusable_rsa_jwk_members_are_refused_cleanly(jwk_update: dict[str, Any]) -> None:
    with pytest.raises(UnusableKey):
        from_jwk({**signer("RS256").public_jwk(), **jwk_update})


@pytest.mark.parametrize(
    "jwk_update",
    [
        {"crv": "P-384"},  # coordinates not on that curve
        {"crv": "secp256k1"},
        {"crv": ["P-256"]},
        {"alg": "ES384"},
        {"x": b64url(b"\x00" * 32)},
        {"y": None},
    ],
)
def test_unusable_ec_jwk_members_are_refused_cleanly(jwk_update: dict[str, Any]) -> None:
    with pytest.raises(UnusableKey):
        from_jwk({**signer("ES256").public_jwk(), **jwk_update})


@pytest.mark.parametrize(
    "jwk", [{"kty": "OKP", "crv": "X25519", "x": b64url(b"\x01" * 32)}, {"kty": "OKP", "x": "AA"}]
)
def test_unusable_okp_jwks_are_refused(jwk: dict[str, Any]) -> None:
    with pytest.raises(UnusableKey):
        from_jwk(jwk)


def test_an_ecdsa_signature_must_be_raw_r_and_s_of_the_curve_size() -> None:
    key = signer("ES256")
    verification = from_jwk(key.public_jwk())
    raw = key.sign(DATA)
    assert len(raw) == 64 and verification.verify("ES256", DATA, raw)
    assert not verification.verify("ES256", DATA, der_ecdsa(key.private, "ES256", DATA))
    assert not verification.verify("ES256", DATA, raw[:-1])
    assert not verification.verify("ES256", DATA, raw + b"\x00")
    assert not verification.verify("ES256", DATA, b"\x00" * 64)  # r = s = 0
    assert not verification.verify("ES256", DATA, b"\xff" * 64)  # r, s beyond the order


def test_p521_signatures_are_66_plus_66_bytes() -> None:
    key = Signer("ES512", ec_private("P-521"))
    raw = key.sign(DATA)
    assert len(raw) == 132
    assert from_jwk(key.public_jwk()).verify("ES512", DATA, raw)


@pytest.mark.parametrize("signature", [b"", b"\x00", b"\x00" * 256, b"\xff" * 512])
@pytest.mark.parametrize("alg", ["RS256", "PS256", "EdDSA", "HS256"])
def test_garbage_signatures_are_false_never_an_exception(alg: str, signature: bytes) -> None:
    key = signer(alg)
    verification = symmetric_key(key.private) if alg == "HS256" else from_jwk(key.public_jwk())
    assert verification.verify(alg, DATA, signature) is False


def test_pss_salt_must_be_the_hash_length() -> None:
    private = rsa_private()
    other_salt = private.sign(
        DATA, padding.PSS(padding.MGF1(hashes.SHA256()), salt_length=20), hashes.SHA256()
    )
    assert not from_jwk(signer("PS256").public_jwk()).verify("PS256", DATA, other_salt)


def test_unknown_algorithms_are_never_accepted() -> None:
    key = from_jwk(signer("RS256").public_jwk())
    for alg in ("none", "RS1", "rs256", "RS256 ", "ES256K", "HS256"):
        assert not key.accepts(alg)
        assert not key.verify(alg, DATA, b"\x00" * 256)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    ],
)
def test_bad_pem_is_refused(text: str) -> None:
    with pytest.raises(UnusableKey):
        from_pem(text)


def test_a_private_key_pem_is_not_a_public_key() -> None:
    private = rsa_private().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(UnusableKey):
        from_pem(private.decode())


def test_unsupported_curves_in_pem_are_refused() -> None:
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    pem = k1.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(UnusableKey, match="curve"):
        from_pem(pem.decode())
    xkey = x25519.X25519PrivateKey.generate().public_key()
    pem = xkey.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(UnusableKey, match="unsupported"):
        from_pem(pem.decode())


def test_jwks_skips_unusable_and_encryption_keys_and_keeps_the_rest() -> None:
    good = signer("ES256", kid="good").public_jwk()
    document = {
        "keys": [
            signer("RS256", kid="enc").public_jwk(use="enc"),
            Signer("RS256", rsa_private(1024), "small").public_jwk(),
            {"kty": "RSA", "kid": "broken", "n": 5},
            "not an object",
            signer("HS256", kid="oct").public_jwk(),
            good,
        ]
    }
    keys = keys_from_jwks(document, "test")
    assert [key.kid for key in keys] == ["good"]


@pytest.mark.parametrize(
    "document",
    [None, [], {}, {"keys": {}}, {"keys": "x"}, {"keys": []}, {"keys": [{"kty": "RSA"}]}],
)
def test_a_jwks_without_a_usable_key_is_refused(document: Any) -> None:
    with pytest.raises(UnusableKey):
        keys_from_jwks(document, "test")


def test_fingerprints_identify_keys_without_showing_them() -> None:
    rsa_key = from_jwk(signer("RS256").public_jwk())
    assert fingerprint(rsa_key) == fingerprint(from_pem(signer("RS256").public_pem()))
    assert fingerprint(rsa_key) != fingerprint(from_jwk(signer("RS256", index=1).public_jwk()))
    secret = signer("HS256").private
    oct_print = fingerprint(symmetric_key(secret))
    assert oct_print.startswith("oct:") and secret.hex() not in oct_print
    assert repr(secret) not in repr(VerificationKey("oct", secret))
