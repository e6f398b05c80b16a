"""Verification keys: from JWKS documents, configured JWKs, PEM public keys or certificates,
and symmetric secrets. Each key knows which algorithms it may verify, so a token's `alg`
can never pick a verification method the key was not made for (no algorithm confusion).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

log = logging.getLogger("aigw.jwt")

KeyType = Literal["RSA", "EC", "OKP", "oct"]
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class Algorithm:
    kty: KeyType
    hash: type[hashes.HashAlgorithm] | None
    curve: str | None = None  # EC: P-256/P-384/P-521; OKP (EdDSA): any of Ed25519/Ed448
    pss: bool = False

    @property
    def digest_size(self) -> int:
        return self.hash().digest_size if self.hash else 0


ALGORITHMS: Mapping[str, Algorithm] = {
    "RS256": Algorithm("RSA", hashes.SHA256),
    "RS384": Algorithm("RSA", hashes.SHA384),
    "RS512": Algorithm("RSA", hashes.SHA512),
    "PS256": Algorithm("RSA", hashes.SHA256, pss=True),
    "PS384": Algorithm("RSA", hashes.SHA384, pss=True),
    "PS512": Algorithm("RSA", hashes.SHA512, pss=True),
    "ES256": Algorithm("EC", hashes.SHA256, "P-256"),
    "ES384": Algorithm("EC", hashes.SHA384, "P-384"),
    "ES512": Algorithm("EC", hashes.SHA512, "P-521"),
    "EdDSA": Algorithm("OKP", None),
    "HS256": Algorithm("oct", hashes.SHA256),
    "HS384": Algorithm("oct", hashes.SHA384),
    "HS512": Algorithm("oct", hashes.SHA512),
}
_CURVES: Mapping[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_COORDINATE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66}


class UnusableKey(ValueError):
    """A key that cannot be used; the message says why (never the key material)."""


@dataclass(frozen=True, slots=True, eq=False)
class VerificationKey:
    kty: KeyType
    material: Any = field(repr=False)  # a cryptography public key, or bytes for HMAC
    kid: str | None = None
    alg: str | None = None  # the JWK's own `alg`, if it names one: then only that one
    curve: str | None = None

    def accepts(self, alg: str) -> bool:
        spec = ALGORITHMS.get(alg)
        if spec is None or spec.kty != self.kty:
            return False
        if self.alg is not None and self.alg != alg:
            return False
        return spec.curve is None or spec.curve == self.curve

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """True only for a valid signature by this key with this algorithm."""
        if not self.accepts(alg):
            return False
        spec = ALGORITHMS[alg]
        try:
            if self.kty == "oct":
                assert spec.hash is not None
                digest = hmac.new(self.material, signing_input, spec.hash().name).digest()
                return hmac.compare_digest(digest, signature)
            if self.kty == "RSA":
                assert spec.hash is not None
                pad: padding.AsymmetricPadding = (
                    padding.PSS(padding.MGF1(spec.hash()), salt_length=spec.digest_size)
                    if spec.pss
                    else padding.PKCS1v15()
                )
                self.material.verify(signature, signing_input, pad, spec.hash())
                return True
            if self.kty == "EC":
                assert spec.hash is not None and self.curve is not None
                size = _COORDINATE_BYTES[self.curve]
                if len(signature) != 2 * size:  # JWS uses raw r||s, never DER
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                der = encode_dss_signature(r, s)
                self.material.verify(der, signing_input, ec.ECDSA(spec.hash()))
                return True
            self.material.verify(signature, signing_input)  # EdDSA
            return True
        except (InvalidSignature, ValueError):
            return False


def _b64url(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise UnusableKey(f"'{name}' must be a non-empty base64url string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise UnusableKey(f"'{name}' is not valid base64url") from None


def _uint(value: Any, name: str) -> int:
    return int.from_bytes(_b64url(value, name), "big")


def from_jwk(jwk: Mapping[str, Any], *, allow_symmetric: bool = False) -> VerificationKey:
    """One public JWK (RFC 7517/7518/8037). Private parts are ignored, never required."""
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise UnusableKey("'kid' must be a string")
    alg = jwk.get("alg")
    if alg is not None and (not isinstance(alg, str) or alg not in ALGORITHMS):
        raise UnusableKey(f"unsupported algorithm {alg!r}")
    try:
        if kty == "RSA":
            public = rsa.RSAPublicNumbers(_uint(jwk.get("e"), "e"), _uint(jwk.get("n"), "n"))
            key = public.public_key()
            if key.key_size < MIN_RSA_BITS:
                raise UnusableKey(f"RSA keys need at least {MIN_RSA_BITS} bits")
            made = VerificationKey("RSA", key, kid, alg)
        elif kty == "EC":
            curve = jwk.get("crv")
            if not isinstance(curve, str) or curve not in _CURVES:
                raise UnusableKey(f"unsupported EC curve {curve!r}")
            numbers = ec.EllipticCurvePublicNumbers(
                _uint(jwk.get("x"), "x"), _uint(jwk.get("y"), "y"), _CURVES[curve]
            )
            made = VerificationKey("EC", numbers.public_key(), kid, alg, curve)
        elif kty == "OKP":
            curve = jwk.get("crv")
            raw = _b64url(jwk.get("x"), "x")
            if curve == "Ed25519":
                okp: Any = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            elif curve == "Ed448":
                okp = ed448.Ed448PublicKey.from_public_bytes(raw)
            else:
                raise UnusableKey(f"unsupported OKP curve {curve!r}")
            made = VerificationKey("OKP", okp, kid, alg, curve)
        elif kty == "oct":
            if not allow_symmetric:
                raise UnusableKey("symmetric keys are accepted only from the gateway's own config")
            made = symmetric_key(_b64url(jwk.get("k"), "k"), kid, alg)
        else:
            raise UnusableKey(f"unsupported key type {kty!r}")
    except (ValueError, UnsupportedAlgorithm) as exc:
        if isinstance(exc, UnusableKey):
            raise
        raise UnusableKey(f"invalid {kty} key: {exc}") from None
    if made.alg is not None and not made.accepts(made.alg):
        raise UnusableKey(f"algorithm {made.alg} does not fit a {kty} key")
    return made


def symmetric_key(secret: bytes, kid: str | None = None, alg: str | None = None) -> VerificationKey:
    if len(secret) < 32:  # RFC 7518 §3.2: at least the hash size; 256 bits for HS256
        raise UnusableKey("symmetric keys need at least 32 bytes (256 bits)")
    return VerificationKey("oct", secret, kid, alg)


def from_pem(text: str, kid: str | None = None) -> VerificationKey:
    """A PEM public key or X.509 certificate (its public key is used; its dates are not)."""
    data = text.strip().encode()
    try:
        if b"CERTIFICATE" in data:
            public: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            public = serialization.load_pem_public_key(data)
    except ValueError:
        raise UnusableKey("not a PEM public key or certificate") from None
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise UnusableKey(f"RSA keys need at least {MIN_RSA_BITS} bits")
        return VerificationKey("RSA", public, kid)
    if isinstance(public, ec.EllipticCurvePublicKey):
        curve = _CURVE_NAMES.get(public.curve.name)
        if curve is None:
            raise UnusableKey(f"unsupported EC curve {public.curve.name}")
        return VerificationKey("EC", public, kid, None, curve)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return VerificationKey("OKP", public, kid, None, "Ed25519")
    if isinstance(public, ed448.Ed448PublicKey):
        return VerificationKey("OKP", public, kid, None, "Ed448")
    raise UnusableKey("unsupported public key type")


def keys_from_jwks(document: Any, source: str) -> list[VerificationKey]:
    """The signature keys of a JWKS document; unusable entries are skipped and logged.
    Raises UnusableKey if the document is malformed or holds no usable key."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise UnusableKey("not a JWKS document (no 'keys' list)")
    usable: list[VerificationKey] = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        try:
            usable.append(from_jwk(jwk))
        except UnusableKey as exc:
            log.info("skipping key %d (kid %r) of %s: %s", index, jwk.get("kid"), source, exc)
    if not usable:
        raise UnusableKey("the key set holds no usable signature key")
    return usable


def fingerprint(key: VerificationKey) -> str:
    """A short, stable id for log lines about a key without a `kid` (never the material)."""
    if key.kty == "oct":
        return "oct:" + hashlib.sha256(b"aigw-key-id" + key.material).hexdigest()[:12]
    raw = key.material.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"{key.kty}:{hashlib.sha256(raw).hexdigest()[:12]}"
