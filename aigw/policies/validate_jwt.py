"""`validate-jwt`: admit only requests that carry a valid JWT, as APIM does, and stricter.

The token is read from a header (default `Authorization`, scheme `Bearer`), a query
parameter or an expression; it must be presented exactly once. Keys come from OpenID
Connect discovery (`openid-config`) or the config (`issuer-signing-keys`). Failures answer
401 (or `failed-validation-httpcode`) with "JWT not present." / "Invalid JWT." and a
`WWW-Authenticate: Bearer` challenge; why a token failed goes to the log and
`context.LastError.Reason`, never to the caller. On success the claims are available as
`context.Claims` (and the variable named by `output-token-variable-name`), and the token is
removed from the request (even when refused, for shadow mode) unless `keep-token` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import field_validator, model_validator

from aigw.context import RequestContext, Response
from aigw.errors import ExpressionEvaluationFailure, GatewayError
from aigw.jwt.errors import TokenRejected
from aigw.jwt.sources import KeySource
from aigw.jwt.validator import Jwt, JwtValidator, ValidationRules
from aigw.policies.base import Policy
from aigw.policies.jwt_settings import (
    OpenIdConfig,
    SigningKey,
    TokenPolicyConfig,
    oidc_source,
    static_source,
)
from aigw.policies.registry import register
from aigw.policies.values import one_or_many, text_of

if TYPE_CHECKING:
    from aigw.expressions import Value
    from aigw.policies.build import BuildContext

NOT_PRESENT = "JWT not present."
INVALID = "Invalid JWT."
# RFC 6750 §2: a token sent in more than one way is refused.
_QUERY_TOKEN = "access_token"  # noqa: S105 - a parameter name, not a secret


class ValidateJwtConfig(TokenPolicyConfig):
    require_signed_tokens: bool = True
    openid_config: list[OpenIdConfig] = []
    issuer_signing_keys: list[SigningKey] = []
    issuers: list[str] = []

    _many = field_validator("openid_config", "issuers", mode="before")(one_or_many)

    @model_validator(mode="after")
    def _signed_only(self) -> ValidateJwtConfig:
        if not self.require_signed_tokens:
            raise ValueError(
                "unsigned tokens are never accepted: 'require-signed-tokens' must be true"
            )
        return self


class TokenPolicy(Policy):
    """What both JWT policies share: reading the token, answering failures, the result."""

    enforcing = True
    sections = frozenset({"inbound"})

    def __init__(self, config: TokenPolicyConfig, build: BuildContext) -> None:
        super().__init__(config, build)
        self.header = config.header_name
        self.query = config.query_parameter_name
        self.token_value: Value | None = None
        if config.token_value is not None:
            self.token_value = build.value(config.token_value, ".token-value")
        elif self.query is None and self.header is None:
            self.header = "Authorization"
        self.scheme = config.require_scheme
        if (
            self.scheme is None
            and self.header is not None
            and self.header.lower() == "authorization"
        ):
            self.scheme = "Bearer"
        self.status_code = config.failed_validation_httpcode
        self.message = config.failed_validation_error_message
        self.keep_token = config.keep_token
        self.variable = config.output_token_variable_name
        self.validator = JwtValidator([], ValidationRules(frozenset(), frozenset()))

    async def apply(self, ctx: RequestContext) -> Response | None:
        token = self._take_token(ctx)
        if token is None:
            raise self._failure("TokenNotPresent", NOT_PRESENT, None)
        try:
            jwt = await self.validator.validate(token, ctx.clock.now().timestamp())
        except TokenRejected as exc:
            raise self._failure(exc.reason, INVALID, exc.detail) from None
        self.admitted(ctx, jwt)
        return None

    @staticmethod
    def require_audiences(build: BuildContext, audiences: frozenset[str]) -> None:
        if not audiences:
            build.error(
                "at least one audience is required: a token for another API must not pass",
                ".audiences",
            )

    def admitted(self, ctx: RequestContext, jwt: Jwt) -> None:
        if self.variable:
            ctx.variables[self.variable] = jwt
        if self.shadow and ctx.jwt is not None:
            return  # a policy on trial never replaces the identity an enforcing one admitted
        ctx.jwt = jwt

    def _take_token(self, ctx: RequestContext) -> str | None:
        # The token is removed before any check: in shadow mode a refused one goes on too.
        request = ctx.request
        if self.token_value is not None:
            return self._evaluated_token(ctx)
        if self.header is not None:
            removed_key = ("validate-jwt removed", self.header.lower())
            values = request.headers.get_all(self.header)
            if not values:
                # An earlier token policy (another scope) took it out of the request: a
                # layered global + API validation still sees the caller's token.
                values = ctx.policy_state.get(removed_key, [])
                if not values:
                    return None
            in_query = bool(request.query_string and request.query_value(_QUERY_TOKEN))
            if not self.keep_token and request.headers.get_all(self.header):
                ctx.policy_state[removed_key] = values
                request.headers.delete(self.header)
                if in_query:
                    request.query = [(k, v) for k, v in request.query if k != _QUERY_TOKEN]
            if len(values) > 1:
                raise self._failure("JwtInvalid", INVALID, "token header sent more than once")
            if in_query:
                raise self._failure("JwtInvalid", INVALID, "token sent in header and query")
            value = values[0].strip()
            if self.scheme is not None:
                scheme, _, value = value.partition(" ")
                if scheme.lower() != self.scheme.lower():
                    raise self._failure("JwtInvalid", INVALID, f"scheme is not {self.scheme}")
            return value.strip() or None
        assert self.query is not None
        found = [value for key, value in request.query if key == self.query]
        if found and not self.keep_token:
            request.query = [(key, value) for key, value in request.query if key != self.query]
        if len(found) > 1:
            raise self._failure("JwtInvalid", INVALID, "token parameter sent more than once")
        return found[0].strip() or None if found else None

    def _evaluated_token(self, ctx: RequestContext) -> str | None:
        assert self.token_value is not None
        try:
            token = text_of(self.token_value, ctx)
        except ExpressionEvaluationFailure as exc:  # e.g. a header the caller did not send
            raise self._failure("TokenNotPresent", NOT_PRESENT, exc.detail) from None
        # The expression may read the token from anywhere: whatever carries it as its whole
        # value (or after a scheme) is removed. Only JWT-shaped values, so that a garbage
        # value let through in shadow mode cannot strip unrelated headers equal to it.
        if token and not self.keep_token and token.count(".") >= 2:
            request = ctx.request
            for name, value in request.headers.items():
                if token in (value.strip(), value.strip().partition(" ")[2].strip()):
                    request.headers.delete(name)
            if request.query_string and any(value == token for _, value in request.query):
                request.query = [(k, v) for k, v in request.query if v != token]
        return token or None

    def _failure(self, reason: str, message: str, detail: str | None) -> GatewayError:
        challenge = 'Bearer error="invalid_token"' if reason != "TokenNotPresent" else "Bearer"
        return GatewayError(
            self.message or message,
            status_code=self.status_code,
            reason=reason,
            source=self.name,
            detail=detail,
            headers=[("www-authenticate", challenge)],
        )


@register("validate-jwt")
class ValidateJwt(TokenPolicy):
    config_model = ValidateJwtConfig

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, ValidateJwtConfig)
        super().__init__(config, build)
        sources: list[KeySource] = []
        for index, openid in enumerate(config.openid_config):
            source = oidc_source(build, openid, f".openid-config[{index}].url")
            if source is not None:
                sources.append(source)
        if config.issuer_signing_keys:
            static = static_source(build, config.issuer_signing_keys, ".issuer-signing-keys")
            if static is not None:
                sources.append(static)
        if not config.openid_config and not config.issuer_signing_keys:
            build.error("give 'openid-config' or 'issuer-signing-keys': tokens need keys")
        if not config.openid_config and not config.issuers:
            build.error("'issuers' is required when keys do not come from 'openid-config'")
        self.require_audiences(build, frozenset(config.audiences))
        rules = ValidationRules(
            audiences=frozenset(config.audiences),
            issuers=frozenset(config.issuers),
            required_claims=tuple(claim.requirement() for claim in config.required_claims),
            require_expiration=config.require_expiration_time,
            clock_skew=config.clock_skew,
        )
        self.validator = JwtValidator(sources, rules)
        self.summary = (
            f"{len(config.openid_config)} openid-config, {len(config.issuer_signing_keys)} keys"
        )

    def describe(self) -> str:
        where = self.header or self.query or "token-value"
        return f"{super().describe()} from {where}, {self.summary} -> {self.status_code}"
