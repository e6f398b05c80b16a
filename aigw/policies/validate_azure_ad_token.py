"""`validate-azure-ad-token`: `validate-jwt` for Microsoft Entra ID, configured by tenant.

Keys and issuer come from the tenant's v2.0 discovery document; the tenant is given by its
id (GUID). v1.0 tokens (issuer `https://sts.windows.net/{tenant}/`) are accepted too, as APIM
does. The
token's audience must be one of `audiences` or `backend-application-ids` (as the GUID or as
`api://{id}`), and when `client-application-ids` are given, the calling application (`azp`,
or `appid` in v1.0 tokens) must be one of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from aigw.context import RequestContext
from aigw.jwt.errors import TokenRejected
from aigw.jwt.validator import Jwt, JwtValidator, ValidationRules
from aigw.policies.jwt_settings import OpenIdConfig, TokenPolicyConfig, oidc_source
from aigw.policies.registry import register
from aigw.policies.validate_jwt import INVALID, TokenPolicy
from aigw.policies.values import one_or_many

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class ValidateAzureAdTokenConfig(TokenPolicyConfig):
    tenant_id: str = Field(min_length=1)
    authentication_endpoint: str = "https://login.microsoftonline.com"
    client_application_ids: list[str] = []
    backend_application_ids: list[str] = []

    _many = field_validator("client_application_ids", "backend_application_ids", mode="before")(
        one_or_many
    )


@register("validate-azure-ad-token")
class ValidateAzureAdToken(TokenPolicy):
    config_model = ValidateAzureAdTokenConfig

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, ValidateAzureAdTokenConfig)
        super().__init__(config, build)
        # Entra ID's discovery document names the tenant by its id, in lower case, even when
        # fetched by domain name: a domain could never match the issuer, so only ids are taken.
        tenant = config.tenant_id.lower()
        if not _GUID.match(tenant):
            build.error("must be the tenant's id (a GUID), not a domain name", ".tenant-id")
        endpoint = config.authentication_endpoint.rstrip("/")
        discovery = f"{endpoint}/{tenant}/v2.0/.well-known/openid-configuration"
        source = oidc_source(
            build, OpenIdConfig.model_validate({"url": discovery}), ".authentication-endpoint"
        )
        issuers = frozenset({f"{endpoint}/{tenant}/v2.0", f"https://sts.windows.net/{tenant}/"})
        audiences = frozenset(config.audiences) | {
            form for app in config.backend_application_ids for form in (app, f"api://{app}")
        }
        self.require_audiences(build, audiences)
        rules = ValidationRules(
            audiences=audiences,
            issuers=issuers,
            required_claims=tuple(claim.requirement() for claim in config.required_claims),
            require_expiration=config.require_expiration_time,
            clock_skew=config.clock_skew,
        )
        self.validator = JwtValidator([source] if source is not None else [], rules)
        self.clients = frozenset(app.lower() for app in config.client_application_ids)
        self.tenant = tenant

    def admitted(self, ctx: RequestContext, jwt: Jwt) -> None:
        if self.clients:
            caller = jwt.claims.get("azp") or jwt.claims.get("appid")
            if not isinstance(caller, str) or caller.lower() not in self.clients:
                rejected = TokenRejected(
                    "TokenClaimValueNotAllowed", f"client application {caller!r} is not allowed"
                )
                raise self._failure(rejected.reason, INVALID, rejected.detail)
        super().admitted(ctx, jwt)

    def describe(self) -> str:
        clients = f", {len(self.clients)} client apps" if self.clients else ""
        return f"{super().describe()} tenant {self.tenant}{clients} -> {self.status_code}"
