"""Parsing a compact JWS (header.payload.signature) without trusting anything in it.

Everything a token could use to choose how it is checked is refused: unsigned tokens
(`alg: none` in any casing), keys or key URLs embedded in the header (`jwk`, `jku`, `x5u`,
`x5c`), and critical extensions we do not implement (`crit`). Encrypted tokens (JWE, five
segments) are not accepted. Both JSON parts are parsed strictly (no duplicate keys).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from aigw.errors import BadRequest
from aigw.jsonbody import parse_strict_json
from aigw.jwt.errors import TokenRejected, invalid
from aigw.jwt.keys import ALGORITHMS

# Far above what any provider issues (Entra tokens are a few KiB), far below header limits.
MAX_TOKEN_CHARS = 16 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "x5c")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def _decode(segment: str, what: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise invalid(f"{what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise invalid(f"{what} is not base64url") from None
    # Unused low bits in the last character would let one signature be written several
    # ways: accept only the canonical form, so one token has exactly one spelling.
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise invalid(f"{what} is not canonical base64url")
    return data


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = parse_strict_json(_decode(segment, what))
    except BadRequest as exc:
        raise invalid(f"{what} is not valid JSON: {exc.message}") from None
    if not isinstance(value, dict):
        raise invalid(f"{what} is not a JSON object")
    return value


def parse_token(token: str) -> ParsedToken:
    if len(token) > MAX_TOKEN_CHARS:
        raise invalid(f"token is longer than {MAX_TOKEN_CHARS} characters")
    if not token.isascii():
        raise invalid("token holds non-ASCII characters")
    parts = token.split(".")
    if len(parts) == 5:
        raise invalid("encrypted tokens (JWE) are not accepted")
    if len(parts) != 3:
        raise invalid(f"token has {len(parts)} segments, not 3")
    header = _json_object(parts[0], "token header")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise invalid("token header has no 'alg'")
    if alg.lower() == "none":
        raise TokenRejected("TokenSignatureInvalid", "unsigned token (alg 'none')")
    if alg not in ALGORITHMS:
        raise invalid(f"unsupported algorithm {alg[:20]!r}")
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise invalid(f"token header carries '{name}': keys are never taken from a token")
    if "crit" in header:
        raise invalid("token header lists critical extensions ('crit'), none are supported")
    if "kid" in header and not isinstance(header["kid"], str):
        raise invalid("token header 'kid' is not a string")
    claims = _json_object(parts[1], "token payload")
    signature = _decode(parts[2], "token signature")
    if not signature:
        raise TokenRejected("TokenSignatureInvalid", "token has an empty signature")
    return ParsedToken(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)
