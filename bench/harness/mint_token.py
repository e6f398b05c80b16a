"""A key pair and a bearer token for a `validate-jwt` target (aigw-jwt-*), before it starts.

Run as a script with the project's interpreter: it uses `cryptography` and, for the optional
timing, aigw's own validator, which the harness itself never imports. It finds the one
`validate-jwt` policy in the generated gateway config, generates a key pair for `--alg`
(RSA 2048 or EC P-256), writes the public key into that policy's one `issuer-signing-keys`
entry, and mints a token the policy admits: that entry's `id` as `kid`, the first issuer and
audience, `exp` ten years ahead. So the config alone says what the token must carry.

With `--verify N` it also times aigw's `JwtValidator.validate` on N fresh tokens (every
signature verified) and on one token N times (the cached path the gateway runs under load).
Prints one JSON line: the header to send, its value, and those figures.

    python -P bench/harness/mint_token.py --config GATEWAY.yaml --alg RS256 --verify 1000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from aigw.jwt.keys import from_pem
from aigw.jwt.sources import StaticKeys
from aigw.jwt.validator import JwtValidator, ValidationRules

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
TEN_YEARS = 10 * 365 * 86400


def find_policy(node: Any, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every `validate-jwt` statement's settings, anywhere in the config tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "validate-jwt" and isinstance(value, dict):
                found.append(value)
            else:
                find_policy(value, found)
    elif isinstance(node, list):
        for item in node:
            find_policy(item, found)
    return found


def generate(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    # JWS wants the raw r||s pair (RFC 7518 §3.4), not the DER that cryptography returns.
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def mint(key: PrivateKey, alg: str, kid: str, issuer: str, audience: str, now: int) -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": "bench-client",
        "iat": now,
        "nbf": now,
        "exp": now + TEN_YEARS,
        "jti": str(uuid.uuid4()),
        "roles": ["ProdWorkload", "Chatbot"],
        "scp": "chat.completions",
    }
    parts = [b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)]
    signing_input = ".".join(parts).encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url(sign(key, signing_input))}"


async def _median_us(validator: JwtValidator, tokens: list[str]) -> float:
    times = []
    for token in tokens:
        started = time.perf_counter()
        await validator.validate(token, time.time())
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e6, 1)


def time_validation(
    key: PrivateKey, pem: str, alg: str, kid: str, issuer: str, audience: str, count: int
) -> dict[str, float]:
    """Median µs of one `validate` call: a token never seen before, and a cached one."""
    rules = ValidationRules(audiences=frozenset({audience}), issuers=frozenset({issuer}))
    validator = JwtValidator([StaticKeys([from_pem(pem, kid)])], rules)
    now = int(time.time())
    fresh = [mint(key, alg, kid, issuer, audience, now) for _ in range(count)]
    same = [fresh[0]] * count
    uncached = asyncio.run(_median_us(validator, fresh))
    cached = asyncio.run(_median_us(validator, same))
    return {"samples": count, "uncached_p50_us": uncached, "cached_p50_us": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="generated; rewritten")
    parser.add_argument("--alg", choices=("RS256", "ES256"), required=True)
    parser.add_argument("--verify", type=int, default=0, help="time N validations (0: skip)")
    ns = parser.parse_args()
    started = time.perf_counter()
    config = yaml.safe_load(ns.config.read_text())
    policies = find_policy(config, [])
    if len(policies) != 1:
        raise SystemExit(f"expected one validate-jwt policy in the config, found {len(policies)}")
    policy = policies[0]
    entries = policy.get("issuer-signing-keys") or []
    if len(entries) != 1 or "pem" not in entries[0] or not entries[0].get("id"):
        raise SystemExit("validate-jwt needs exactly one issuer-signing-keys entry {id, pem}")
    kid, issuer, audience = str(entries[0]["id"]), policy["issuers"][0], policy["audiences"][0]
    key = generate(ns.alg)
    entries[0]["pem"] = pem = public_pem(key)
    ns.config.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    token = mint(key, ns.alg, kid, issuer, audience, int(time.time()))
    header = policy.get("header-name", "Authorization")
    scheme = policy.get("require-scheme") or ("Bearer" if header.lower() == "authorization" else "")
    out: dict[str, Any] = {
        "header": header,
        "value": f"{scheme} {token}" if scheme else token,
        "alg": ns.alg,
        "token_bytes": len(token),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if ns.verify > 0:
        out["verify"] = time_validation(key, pem, ns.alg, kid, issuer, audience, ns.verify)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
