"""How the gateway authenticates itself to a backend, and which caller headers that removes.

A backend's `credentials` are applied by `HttpBackend.send` after every policy has run, so
neither a caller nor a policy can replace them. Header hygiene, precisely:

- Always (any backend): hop-by-hop headers, Host, Content-Length and Expect are not
  forwarded; the subscription key is removed by the subscription gate; validate-jwt removes
  the caller's bearer token unless `keep-token`.
- Backend with `credentials`: the caller's `Authorization`, `api-key`,
  `Ocp-Apim-Subscription-Key` and `Cookie`, any header of the credential's own name, and
  `api-key` / `subscription-key` query parameters are dropped before the gateway's
  credential is added.
- `authentication-managed-identity` ran: it replaced `Authorization` and removed the other
  credential headers when it ran (later policies may still edit them: that is the operator's
  config); `Cookie` and the query keys are dropped when the request is forwarded (not
  earlier: pools read their affinity cookie).
- Otherwise the caller's headers pass through as before, unless a policy removes them.
"""

from __future__ import annotations

from typing import Protocol

from aigw.config.model import BackendCredentialsConfig, IdentityConfig
from aigw.identity import (
    Shared,
    TokenCache,
    TokenUnavailable,
    client_credentials_cache,
    managed_identity_cache,
)
from aigw.identity.headers import BackendAuthenticationFailed


class BackendCredential(Protocol):
    header: str  # lower-cased name of the header it sets

    async def value(self) -> str:
        """The header's value; raises TokenUnavailable."""
        ...


class StaticHeader:
    def __init__(self, name: str, value: str) -> None:
        self.header = name.lower()
        self._value = value

    async def value(self) -> str:
        return self._value


class BearerToken:
    header = "authorization"

    def __init__(self, cache: TokenCache) -> None:
        self.cache = cache

    async def value(self) -> str:
        return "Bearer " + (await self.cache.get()).token


def build_credential(
    config: BackendCredentialsConfig, identity: IdentityConfig, shared: Shared
) -> BackendCredential:
    if config.managed_identity is not None:
        mi = config.managed_identity
        return BearerToken(managed_identity_cache(shared, identity, mi.resource, mi.client_id))
    if config.client_credentials is not None:
        return BearerToken(client_credentials_cache(shared, config.client_credentials))
    assert config.header is not None
    return StaticHeader(config.header.name, config.header.value)


async def credential_header(backend_id: str, credential: BackendCredential) -> tuple[str, str]:
    try:
        return credential.header, await credential.value()
    except TokenUnavailable as exc:
        raise BackendAuthenticationFailed(
            "Backend authentication failed: no token for the backend's identity",
            detail=f"backend {backend_id!r}: {exc}",
        ) from None
