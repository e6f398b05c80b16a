"""Why a token was refused: a stable reason (APIM's `LastError.Reason`) and a detail for the log."""

from __future__ import annotations


class TokenRejected(Exception):
    """Raised by every JWT check; `detail` is for the operator's log, never for the caller."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def invalid(detail: str) -> TokenRejected:
    return TokenRejected("JwtInvalid", detail)
