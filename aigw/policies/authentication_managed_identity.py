"""`authentication-managed-identity`: put a token of the gateway's own identity on the
backend request (`Authorization: Bearer …`), as APIM does.

The identity (managed, workload or development) is the gateway's `identity` setting;
`client-id` picks a user-assigned identity / another app registration. Tokens come from a
shared `TokenCache` (one per identity and resource, refreshed ahead of expiry). The caller's
`Authorization`, `api-key` and `Ocp-Apim-Subscription-Key` are removed whether or not a
token was obtained, so a caller's credential never reaches a backend meant to trust only the
gateway; its cookies and query keys are dropped when the request is forwarded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import Field

from aigw.context import RequestContext, Response
from aigw.identity import TokenUnavailable, managed_identity_cache
from aigw.identity.headers import (
    CALLER_CREDENTIALS,
    BackendAuthenticationFailed,
    mark_gateway_authenticated,
)
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

log = logging.getLogger("aigw.identity")


class AuthenticationManagedIdentityConfig(PolicyConfig):
    resource: str = Field(min_length=1)
    client_id: str | None = None
    output_token_variable_name: str | None = None
    ignore_error: bool = False


@register("authentication-managed-identity")
class AuthenticationManagedIdentity(Policy):
    config_model = AuthenticationManagedIdentityConfig
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, AuthenticationManagedIdentityConfig)
        super().__init__(config, build)
        if "@(" in config.resource or config.resource.startswith("@"):
            # One cache per resource is built with the config; a per-request audience is not.
            build.error("must be a literal audience, not an expression", ".resource")
        settings = getattr(build.settings, "identity", None)
        self.cache = managed_identity_cache(
            build.shared, settings, config.resource, config.client_id
        )
        self.resource = config.resource
        self.variable = config.output_token_variable_name
        self.ignore_error = config.ignore_error

    async def apply(self, ctx: RequestContext) -> Response | None:
        headers = ctx.request.headers
        for name in CALLER_CREDENTIALS:
            headers.delete(name)
        mark_gateway_authenticated(ctx)
        try:
            token = await self.cache.get()
        except TokenUnavailable as exc:
            if self.ignore_error:
                log.warning(
                    "request %s continues without a backend token (ignore-error): %s",
                    ctx.request_id,
                    exc,
                )
                return None
            raise BackendAuthenticationFailed(
                "Backend authentication failed: no token for the gateway's identity",
                source=self.name,
                detail=str(exc),
            ) from None
        headers.set("authorization", "Bearer " + token.token)
        if self.variable:
            ctx.variables[self.variable] = token.token
        return None

    def describe(self) -> str:
        client = self.cache.provider.client_id
        extra = f" client-id={client}" if client else ""
        ignore = " ignore-error" if self.ignore_error else ""
        return f"{super().describe()} {self.cache.provider.kind} {self.resource}{extra}{ignore}"
