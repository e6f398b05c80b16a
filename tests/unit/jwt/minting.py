"""Minting JSON Web Tokens with `cryptography` alone, for tests that attack the validator.

No JWT library is involved: every token (good, forged or malformed) is assembled here byte
by byte, so a test controls exactly what the gateway receives.

    key = signer("ES256", kid="k1")
    token = mint(claims(), key)                       # a good token
    jwk = key.public_jwk()                            # what a JWKS would publish
    forged = mint(claims(), key, header={"jwk": jwk}) # an embedded-key attack
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
ISSUER = "https://login.example.test/tenant-a/v2.0"
AUDIENCE = "api://aigw"

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
ES_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
DROP = object()  # a header override that removes the field


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _uint(value: int, size: int | None = None) -> str:
    size = size or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(size, "big"))


# Key generation (RSA especially) is slow: one key per kind for the whole run.
@cache
def rsa_private(bits: int = 2048, index: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_private(curve: str, index: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVES[curve][0])


@cache
def ed25519_private(index: int = 0) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@cache
def ed448_private(index: int = 0) -> ed448.Ed448PrivateKey:
    return ed448.Ed448PrivateKey.generate()


@cache
def hmac_secret(size: int = 32, index: int = 0) -> bytes:
    return secrets.token_bytes(size)


@dataclass(frozen=True)
class Signer:
    """A private key (or HMAC secret) with the algorithm it signs with by default."""

    alg: str
    private: Any = field(repr=False)
    kid: str | None = None

    @property
    def public(self) -> Any:
        return self.private if isinstance(self.private, bytes) else self.private.public_key()

    def public_jwk(self, **extra: Any) -> dict[str, Any]:
        """The public half as a JWK; `extra` adds or overrides members (`alg`, `use` …)."""
        public = self.public
        jwk: dict[str, Any]
        if isinstance(public, bytes):
            jwk = {"kty": "oct", "k": b64url(public)}
        elif isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            jwk = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
        elif isinstance(public, ec.EllipticCurvePublicKey):
            point = public.public_numbers()
            name = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
            crv = name[public.curve.name]
            size = CURVES[crv][1]
            jwk = {"kty": "EC", "crv": crv, "x": _uint(point.x, size), "y": _uint(point.y, size)}
        else:
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            crv = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
            jwk = {"kty": "OKP", "crv": crv, "x": b64url(raw)}
        if self.kid is not None:
            jwk["kid"] = self.kid
        jwk.update(extra)
        return jwk

    def public_pem(self) -> str:
        return self.public_der(serialization.Encoding.PEM).decode()

    def public_der(self, encoding: serialization.Encoding = serialization.Encoding.DER) -> bytes:
        return self.public.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)

    def certificate_pem(self) -> str:
        """A self-signed X.509 certificate for the public key (Ed keys sign it themselves)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aigw test signer")])
        start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=3650))
        )
        edwards = isinstance(self.private, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        certificate = builder.sign(self.private, None if edwards else hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, data: bytes, alg: str | None = None) -> bytes:
        return sign(self.private, alg or self.alg, data)

    def with_kid(self, kid: str | None) -> Signer:
        return Signer(self.alg, self.private, kid)


def sign(private: Any, alg: str, data: bytes) -> bytes:
    """A JWS signature: raw r||s for ECDSA, as RFC 7518 §3.4 requires."""
    family, bits = alg[:2], alg[2:]
    if family == "HS":
        secret = private if isinstance(private, bytes) else bytes(private)
        return hmac.new(secret, data, getattr(hashlib, f"sha{bits}")).digest()
    if alg == "EdDSA":
        return bytes(private.sign(data))
    digest = HASHES[bits]
    if family == "RS":
        return bytes(private.sign(data, padding.PKCS1v15(), digest()))
    if family == "PS":
        pss = padding.PSS(padding.MGF1(digest()), salt_length=digest().digest_size)
        return bytes(private.sign(data, pss, digest()))
    if family == "ES":
        return raw_ecdsa(private, der_ecdsa(private, alg, data))
    raise ValueError(f"cannot sign with {alg}")


def der_ecdsa(private: ec.EllipticCurvePrivateKey, alg: str, data: bytes) -> bytes:
    """An ECDSA signature in DER form (what JWS must never carry)."""
    return bytes(private.sign(data, ec.ECDSA(HASHES[alg[2:]]())))


def raw_ecdsa(private: ec.EllipticCurvePrivateKey, der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    size = (private.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def signer(alg: str, kid: str | None = None, *, index: int = 0) -> Signer:
    """A signer for `alg` (EdDSA signs with Ed25519; use `ed448_signer` for Ed448).
    Different `index` values give different keys of the same kind."""
    if alg.startswith(("RS", "PS")):
        return Signer(alg, rsa_private(2048, index), kid)
    if alg.startswith("ES"):
        return Signer(alg, ec_private(ES_CURVES[alg], index), kid)
    if alg.startswith("HS"):
        return Signer(alg, hmac_secret(64, index), kid)
    if alg == "EdDSA":
        return Signer(alg, ed25519_private(index), kid)
    raise ValueError(alg)


def ed448_signer(kid: str | None = None) -> Signer:
    return Signer("EdDSA", ed448_private(), kid)


def claims(**extra: Any) -> dict[str, Any]:
    """Claims that pass the default rules at NOW; `extra` adds, overrides, or (None) drops."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "exp": NOW + 3600,
    }
    base.update(extra)
    return {name: value for name, value in base.items() if value is not None}


def header_for(key: Signer, alg: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if key.kid is not None:
        header["kid"] = key.kid
    for name, value in (overrides or {}).items():
        if value is DROP:
            header.pop(name, None)
        else:
            header[name] = value
    return header


def mint(
    payload: dict[str, Any] | None = None,
    key: Signer | None = None,
    alg: str | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    """A compact JWS: `header` overrides (or DROPs) fields of the default header."""
    key = key or signer("RS256")
    alg = alg or key.alg
    first = b64url_json(header_for(key, alg, header))
    second = b64url_json(claims() if payload is None else payload)
    signing_input = f"{first}.{second}".encode()
    return f"{first}.{second}.{b64url(key.sign(signing_input, alg))}"


def mint_raw(header_text: bytes, payload_text: bytes, key: Signer, alg: str | None = None) -> str:
    """A token whose header and payload are exactly these bytes (malformed JSON, duplicate
    keys …), validly signed so only the parsing can refuse it."""
    first, second = b64url(header_text), b64url(payload_text)
    signing_input = f"{first}.{second}".encode()
    return f"{first}.{second}.{b64url(key.sign(signing_input, alg))}"


def signature_of(token: str) -> bytes:
    last = token.rsplit(".", 1)[1]
    return base64.urlsafe_b64decode(last + "=" * (-len(last) % 4))


def with_signature(token: str, signature: bytes | str) -> str:
    text = signature if isinstance(signature, str) else b64url(signature)
    return token.rsplit(".", 1)[0] + "." + text


def flip_bit(token: str, byte: int = 0, bit: int = 0) -> str:
    signature = bytearray(signature_of(token))
    signature[byte] ^= 1 << bit
    return with_signature(token, bytes(signature))


def with_payload(token: str, payload: dict[str, Any]) -> str:
    """The payload replaced, the original signature kept."""
    first, _, last = token.split(".")
    return f"{first}.{b64url_json(payload)}.{last}"


def unsigned(payload: dict[str, Any], alg: str = "none", signature: str = "") -> str:
    return f"{b64url_json({'alg': alg, 'typ': 'JWT'})}.{b64url_json(payload)}.{signature}"
