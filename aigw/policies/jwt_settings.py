"""Config shared by `validate-jwt` and `validate-azure-ad-token`: where the token is read,
how failures are answered, keys, issuers, audiences and required claims, and how these turn
into a `JwtValidator` with key sources shared across policies."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aigw.config.model import kebab
from aigw.jwt.claims import ClaimRequirement
from aigw.jwt.keys import UnusableKey, VerificationKey, from_jwk, from_pem, symmetric_key
from aigw.jwt.sources import FetchLimits, KeySource, OidcKeySource, StaticKeys
from aigw.policies.base import PolicyConfig
from aigw.policies.values import one_or_many

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=kebab, populate_by_name=True, frozen=True
    )


class OpenIdConfig(_Strict):
    url: str
    refresh_interval: float = Field(3600.0, ge=1, le=86400)
    unknown_key_cooldown: float = Field(300.0, ge=1, le=86400)
    timeout: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _url_only(cls, raw: Any) -> Any:
        return {"url": raw} if isinstance(raw, str) else raw


class SigningKey(_Strict):
    """Exactly one form: a base64 symmetric `value`, RSA `n`/`e`, a `pem` public key or
    certificate, or a public `jwk`."""

    id: str | None = None
    value: str | None = None
    n: str | None = None
    e: str | None = None
    pem: str | None = None
    jwk: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SigningKey:
        forms = [self.value is not None, self.n is not None or self.e is not None]
        forms += [self.pem is not None, self.jwk is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of 'value', 'n'+'e', 'pem' or 'jwk'")
        return self

    def build(self) -> VerificationKey:
        if self.value is not None:
            try:
                secret = base64.b64decode(self.value, validate=True)
            except (binascii.Error, ValueError):
                raise UnusableKey("'value' must be base64") from None
            return symmetric_key(secret, self.id)
        if self.pem is not None:
            return from_pem(self.pem, self.id)
        jwk = dict(self.jwk) if self.jwk is not None else {"kty": "RSA", "n": self.n, "e": self.e}
        if self.id is not None:
            jwk["kid"] = self.id
        return from_jwk(jwk, allow_symmetric=True)


class RequiredClaim(_Strict):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    name: str = Field(min_length=1)
    match: Literal["all", "any"] = "all"
    separator: str | None = Field(None, min_length=1)
    value: list[str] = []

    _one_or_many = field_validator("value", mode="before")(one_or_many)

    def requirement(self) -> ClaimRequirement:
        return ClaimRequirement(self.name, tuple(self.value), self.match, self.separator)


class TokenPolicyConfig(PolicyConfig):
    """Where the token comes from and how a failure is answered."""

    header_name: str | None = None
    query_parameter_name: str | None = None
    token_value: str | None = None
    failed_validation_httpcode: int = Field(401, ge=400, le=599)
    failed_validation_error_message: str | None = None
    require_scheme: str | None = None
    clock_skew: float = Field(0.0, ge=0, le=3600)
    require_expiration_time: bool = True
    output_token_variable_name: str | None = None
    # Ours: forward the caller's token to the backend (by default it is removed).
    keep_token: bool = False
    audiences: list[str] = []
    required_claims: list[RequiredClaim] = []

    _audiences = field_validator("audiences", mode="before")(one_or_many)

    @model_validator(mode="after")
    def _one_source(self) -> TokenPolicyConfig:
        given = [self.header_name, self.query_parameter_name, self.token_value]
        if sum(value is not None for value in given) > 1:
            raise ValueError(
                "give at most one of 'header-name', 'query-parameter-name' or 'token-value'"
            )
        return self


def oidc_source(build: BuildContext, config: OpenIdConfig, path: str) -> KeySource | None:
    limits = FetchLimits(
        timeout=config.timeout,
        refresh_interval=config.refresh_interval,
        unknown_key_cooldown=config.unknown_key_cooldown,
        # Before a first key set arrives, retry no more often than the cool-down allows.
        retry_interval=min(10.0, config.unknown_key_cooldown),
    )
    try:
        return build.shared(("oidc", config.url, limits), lambda: OidcKeySource(config.url, limits))
    except ValueError as exc:
        build.error(str(exc), path)
        return None


def static_source(build: BuildContext, keys: list[SigningKey], path: str) -> KeySource | None:
    built: list[VerificationKey] = []
    for index, key in enumerate(keys):
        try:
            built.append(key.build())
        except UnusableKey as exc:
            build.error(str(exc), f"{path}[{index}]")
    return StaticKeys(built) if built else None
