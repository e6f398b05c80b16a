"""The gateway's error tree.

Every error a caller can see is a `GatewayError`: a status code, a stable machine-readable
reason (APIM's `LastError.Reason`), and a message safe to show to the caller. One outer layer
renders them as `{"statusCode": N, "message": "..."}`; nothing else formats errors.
"""

from __future__ import annotations

from typing import Any


class StreamAborted(Exception):
    """Raised to the server so it drops the connection mid-body: the client must see a
    truncated stream, not a clean end, when the backend's stream broke."""

    status_code: int = 500
    ctx: Any = None  # the request's context, for the access log


class DependencyUnavailable(Exception):
    """A service the gateway needs (a database, an identity endpoint) cannot be used.
    The message is safe to log: it names the service, never a secret."""


class GatewayError(Exception):
    status_code: int = 500
    reason: str = "InternalError"
    default_message: str = "Internal server error"
    source: str = "gateway"

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        reason: str | None = None,
        source: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        detail: str | None = None,
    ) -> None:
        self.message = message or self.default_message
        # For the operator's log only (may quote config text); never sent to the caller.
        self.detail = detail
        super().__init__(self.message)
        if status_code is not None:
            self.status_code = status_code
        if reason is not None:
            self.reason = reason
        if source is not None:
            self.source = source
        self.headers: list[tuple[str, str]] = headers or []
        # Set by the pipeline to the `id` of the policy that raised it (LastError.PolicyId).
        self.policy_id: str | None = None


class OperationNotFound(GatewayError):
    status_code = 404
    reason = "OperationNotFound"
    default_message = "Resource not found"
    source = "configuration"


class BadRequest(GatewayError):
    status_code = 400
    reason = "BadRequest"
    default_message = "Bad request"
    source = "request"


class PayloadTooLarge(GatewayError):
    status_code = 413
    reason = "PayloadTooLarge"
    default_message = "Request body is too large"
    source = "request"


class RequestTimeout(GatewayError):
    status_code = 408
    reason = "ClientConnectionTimeout"
    default_message = "Request body was not received in time"
    source = "request"


class ClientDisconnected(GatewayError):
    # Never rendered (nobody is listening); recorded so completion hooks know why.
    status_code = 499
    reason = "ClientConnectionFailure"
    default_message = "Client closed the connection"
    source = "request"


class BackendConnectionFailure(GatewayError):
    status_code = 502
    reason = "BackendConnectionFailure"
    default_message = "Backend service is unreachable"
    source = "forward-request"


class BackendTimeout(GatewayError):
    status_code = 504
    reason = "Timeout"
    default_message = "Backend service did not respond in time"
    source = "forward-request"


class BackendProtocolError(GatewayError):
    status_code = 502
    reason = "BackendProtocolError"
    default_message = "Backend service sent an invalid response"
    source = "forward-request"


class ExpressionEvaluationFailure(GatewayError):
    status_code = 500
    reason = "ExpressionValueEvaluationFailure"
    default_message = "Policy expression could not be evaluated"
    source = "expression"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        # Expressions carry named values, secrets included: what went wrong is for the log
        # (`detail`, redacted there); the caller only learns that an expression failed.
        super().__init__(None, detail=detail, **kwargs)
