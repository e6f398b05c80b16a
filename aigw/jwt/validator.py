"""Validating a token end to end: parse, find the key, verify, then check the claims.

Signature checks are the expensive part (~50 µs for RS256), so an admitted token is
remembered by the SHA-256 of the whole token for a short while; its lifetime and claims are
still checked on every use. A token whose issuer could never pass is refused before that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aigw.jwt.claims import (
    ClaimRequirement,
    check_audience,
    check_issuer,
    check_lifetime,
    check_required,
    claim_values,
)
from aigw.jwt.errors import TokenRejected
from aigw.jwt.sources import KeySource
from aigw.jwt.token import ParsedToken, parse_token

CACHE_ENTRIES = 10_000
CACHE_SECONDS = 300.0  # a key withdrawn from a JWKS stops working for cached tokens by then


@dataclass(frozen=True, slots=True)
class Jwt:
    """A validated token, as policies and expressions see it (never the raw token)."""

    header: Mapping[str, Any] = field(repr=False)
    claims: Mapping[str, Any] = field(repr=False)

    @property
    def subject(self) -> str | None:
        value = self.claims.get("sub")
        return value if isinstance(value, str) else None

    @property
    def issuer(self) -> str | None:
        value = self.claims.get("iss")
        return value if isinstance(value, str) else None

    @property
    def algorithm(self) -> str:
        return str(self.header.get("alg"))

    def values(self, name: str, separator: str | None = None) -> list[str]:
        return claim_values(self.claims, name, separator)

    def joined(self, name: str) -> str | None:
        """A claim as one string, several values joined with ',' (APIM's Claims lookup)."""
        if name not in self.claims:
            return None
        return ",".join(self.values(name))


@dataclass(frozen=True, slots=True)
class ValidationRules:
    audiences: frozenset[str]
    issuers: frozenset[str]  # empty: the issuer of the discovery document that vouched
    required_claims: tuple[ClaimRequirement, ...] = ()
    require_expiration: bool = True
    clock_skew: float = 0.0


@dataclass(frozen=True, slots=True)
class _Verified:
    token: ParsedToken
    issuer: str | None  # the verifying source's issuer
    until: float


class JwtValidator:
    def __init__(self, sources: Sequence[KeySource], rules: ValidationRules) -> None:
        self.sources = tuple(sources)
        self.rules = rules
        self._verified: dict[bytes, _Verified] = {}

    async def validate(self, token: str, now: float) -> Jwt:
        """The validated token, or TokenRejected with the reason."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        verified = self._verified.get(digest)
        fresh = verified is None or verified.until <= now
        if verified is None or fresh:
            parsed = parse_token(token)
            issuer = await self._verify(parsed, self._sources_for(parsed.claims.get("iss")))
            verified = _Verified(parsed, issuer, now + CACHE_SECONDS)
        claims = verified.token.claims
        rules = self.rules
        check_lifetime(claims, now, rules.clock_skew, rules.require_expiration)
        allowed = rules.issuers or (
            frozenset({verified.issuer}) if verified.issuer else frozenset()
        )
        check_issuer(claims, allowed)
        check_audience(claims, rules.audiences)
        check_required(claims, rules.required_claims)
        if fresh:  # only admitted tokens: others must neither fill the cache nor evict
            self._remember(digest, verified)
        # Read-only views: the same token's cached claims serve later requests too.
        return Jwt(MappingProxyType(verified.token.header), MappingProxyType(claims))

    def _sources_for(self, claimed: object) -> Sequence[KeySource]:
        """The sources whose keys may verify a token naming `claimed` as its issuer.

        A provider's issuer is verified by that provider's keys only, even when `issuers`
        lists several (providers may share keys, as Entra ID tenants do, but one provider's
        key never speaks for another's issuer). An issuer that could never pass is refused
        here, before any signature check."""
        vouching = [source for source in self.sources if source.vouches_for(claimed)]
        if vouching:
            return vouching
        if isinstance(claimed, str) and claimed in self.rules.issuers:
            return self.sources
        raise TokenRejected("TokenIssuerNotAllowed", f"issuer {claimed!r:.200} is not allowed")

    async def _verify(self, token: ParsedToken, sources: Sequence[KeySource]) -> str | None:
        """Find a key of `sources` that verifies the signature; returns its source's issuer."""
        alg, kid = token.alg, token.kid
        for attempt in range(2):
            tried = False
            for source in sources:
                for key in source.candidates(kid, alg):
                    tried = True
                    if key.verify(alg, token.signing_input, token.signature):
                        return source.issuer
            if tried:
                raise TokenRejected("TokenSignatureInvalid", f"signature does not verify ({alg})")
            if attempt == 0 and not await self._refetch(sources, kid):
                break
        raise TokenRejected(
            "TokenSignatureKeyNotFound", f"no key for kid {kid!r:.80} and algorithm {alg}"
        )

    @staticmethod
    async def _refetch(sources: Sequence[KeySource], kid: str | None) -> bool:
        changed = False
        for source in sources:
            changed = await source.refetch_for(kid) or changed
        return changed

    def _remember(self, digest: bytes, verified: _Verified) -> None:
        if len(self._verified) >= CACHE_ENTRIES:
            # Oldest first: dicts keep insertion order.
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = verified
