"""The checks on a verified token's claims: lifetime, issuer, audience, required claims.

Issuer and audience values are compared exactly (no prefix, substring or case folding);
times are NumericDate seconds, with a configured skew in the caller's favour only. Details
quote token values shortened: they are logged for every refused request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aigw.jwt.errors import TokenRejected, invalid


@dataclass(frozen=True, slots=True)
class ClaimRequirement:
    name: str
    values: tuple[str, ...]
    match: Literal["all", "any"] = "all"
    separator: str | None = None


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"'{name}' is not a number")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any date, e.g. 10**400
        raise invalid(f"'{name}' is out of range") from None


def check_lifetime(
    claims: Mapping[str, Any], now: float, skew: float, require_expiration: bool
) -> None:
    expires = _numeric(claims, "exp")
    if expires is None:
        if require_expiration:
            raise TokenRejected("TokenExpirationMissing", "token has no 'exp'")
    elif now >= expires + skew:
        raise TokenRejected("TokenExpired", f"token expired at {expires:.0f}")
    not_before = _numeric(claims, "nbf")
    if not_before is not None and now + skew < not_before:
        raise TokenRejected("TokenNotYetValid", f"token is not valid before {not_before:.0f}")
    issued = _numeric(claims, "iat")
    if issued is not None and issued > now + skew:
        raise TokenRejected("TokenIssuedInFuture", f"token was issued in the future ({issued:.0f})")


def check_issuer(claims: Mapping[str, Any], allowed: Iterable[str]) -> None:
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in allowed:
        raise TokenRejected("TokenIssuerNotAllowed", f"issuer {issuer!r:.200} is not allowed")


def check_audience(claims: Mapping[str, Any], allowed: frozenset[str]) -> None:
    audience = claims.get("aud")
    values = [audience] if isinstance(audience, str) else audience
    if not isinstance(values, list) or not any(
        isinstance(value, str) and value in allowed for value in values
    ):
        raise TokenRejected("TokenAudienceNotAllowed", f"audience {audience!r:.200} is not allowed")


def claim_values(claims: Mapping[str, Any], name: str, separator: str | None = None) -> list[str]:
    """A claim as a list of strings: arrays as they are, a string split by `separator`,
    numbers and booleans as their JSON text. Objects and nulls give nothing."""
    value = claims.get(name)
    items = value if isinstance(value, list) else [value]
    found: list[str] = []
    for item in items:
        if isinstance(item, str):
            found.extend(part for part in (item.split(separator) if separator else [item]) if part)
        elif isinstance(item, bool):
            found.append("true" if item else "false")
        elif isinstance(item, int | float):
            found.append(str(item))
    return found


def check_required(claims: Mapping[str, Any], requirements: Sequence[ClaimRequirement]) -> None:
    missing = [req.name for req in requirements if req.name not in claims]
    if missing:
        raise TokenRejected(
            "TokenClaimNotFound", f"token is missing the claims: {', '.join(missing)}"
        )
    for req in requirements:
        if not req.values:
            continue
        present = set(claim_values(claims, req.name, req.separator))
        matched = [value for value in req.values if value in present]
        if (req.match == "all" and len(matched) < len(req.values)) or not matched:
            raise TokenRejected(
                "TokenClaimValueNotAllowed", f"claim '{req.name}' does not have the values needed"
            )
