"""The gateway's own credential on a backend request, and the caller headers it displaces.

Shared by `authentication-managed-identity` (which puts a token on the request) and the
HTTP backend (which applies a backend's `credentials` and drops what must not go along);
see aigw/backends/credentials.py for the header hygiene rules.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from aigw.context import RequestContext
from aigw.errors import GatewayError

# Caller headers that could carry a credential of their own to the backend (Azure AI
# services take a resource key as `Ocp-Apim-Subscription-Key` too).
CALLER_CREDENTIALS = frozenset({"authorization", "api-key", "ocp-apim-subscription-key"})
# … and query parameters that do (names compared case-insensitively, as those services do).
CALLER_QUERY_CREDENTIALS = frozenset({"api-key", "subscription-key"})
_MARK = "gateway-authenticated"


def mark_gateway_authenticated(ctx: RequestContext) -> None:
    ctx.policy_state[_MARK] = True


def gateway_authenticated(ctx: RequestContext) -> bool:
    return bool(ctx.policy_state.get(_MARK))


def without_query_credentials(query: str) -> str:
    """`query` minus the caller's key parameters; the other parameters' bytes are kept."""
    if "key" not in query.lower() and "%" not in query:  # the common case: nothing to do
        return query
    kept = [
        part
        for part in query.split("&")
        if unquote_plus(part.partition("=")[0]).lower() not in CALLER_QUERY_CREDENTIALS
    ]
    return "&".join(kept)


class BackendAuthenticationFailed(GatewayError):
    status_code = 500
    reason = "BackendAuthenticationFailed"
    default_message = "Backend authentication failed"
    source = "authentication"
