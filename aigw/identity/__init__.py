"""The gateway's own identity towards backends: token providers and the token cache.

`managed_identity_cache` and `client_credentials_cache` hand out one `TokenCache` per
(identity, client id, resource) through the runtime's shared resources, so a policy and a
backend asking for the same token share one cache and one refresh.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from aigw.clock import SYSTEM_CLOCK, Clock
from aigw.identity.cache import TokenCache
from aigw.identity.tokens import AccessToken, TokenProvider, TokenUnavailable

if TYPE_CHECKING:
    from aigw.config.model import ClientCredentials, IdentityConfig

# BuildContext.shared: one instance per key for the runtime, started and closed with it.
Shared = Callable[[Hashable, Callable[[], Any]], Any]

__all__ = [
    "AccessToken",
    "TokenCache",
    "TokenProvider",
    "TokenUnavailable",
    "client_credentials_cache",
    "managed_identity_cache",
]


def managed_identity_cache(
    shared: Shared,
    settings: IdentityConfig | None,
    resource: str,
    client_id: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> TokenCache:
    from aigw.config.model import IdentityConfig
    from aigw.identity.azure import AzureIdentityProvider

    settings = settings or IdentityConfig()
    client_id = client_id or settings.client_id
    key = ("identity", settings.type, client_id, resource)

    def create() -> TokenCache:
        return TokenCache(AzureIdentityProvider(settings, client_id), resource, clock)

    cache: TokenCache = shared(key, create)
    return cache


def client_credentials_cache(
    shared: Shared, config: ClientCredentials, clock: Clock = SYSTEM_CLOCK
) -> TokenCache:
    from aigw.identity.client_credentials import ClientCredentialsProvider

    key = ("client-credentials", config.token_url, config.client_id, config.scope)

    def create() -> TokenCache:
        provider = ClientCredentialsProvider(
            config.token_url,
            config.client_id,
            client_secret=config.client_secret,
            client_assertion_file=config.client_assertion_file,
        )
        return TokenCache(provider, config.scope, clock)

    cache: TokenCache = shared(key, create)
    return cache
