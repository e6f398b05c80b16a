"""The gateway's own credential on a backend request, and the caller headers it displaces.

Shared by `authentication-managed-identity` (which puts a token on the request) and the
HTTP backend (which applies a backend's `credentials` and drops what must not go along);
see aigw/backends/credentials.py for the header hygiene rules.
"""

from __future__ import annotations

from aigw.context import RequestContext
from aigw.errors import GatewayError

# Caller headers that could carry a credential of their own to the backend.
CALLER_CREDENTIALS = frozenset({"authorization", "api-key"})
_MARK = "gateway-authenticated"


def mark_gateway_authenticated(ctx: RequestContext) -> None:
    ctx.policy_state[_MARK] = True


def gateway_authenticated(ctx: RequestContext) -> bool:
    return bool(ctx.policy_state.get(_MARK))


class BackendAuthenticationFailed(GatewayError):
    status_code = 500
    reason = "BackendAuthenticationFailed"
    default_message = "Backend authentication failed"
    source = "authentication"
