"""What a token source is: `await provider.token(resource)` → an `AccessToken`, or
`TokenUnavailable` with a reason that is safe to log (never a token or a secret)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aigw.errors import DependencyUnavailable


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_on: float  # Unix time, seconds

    def __repr__(self) -> str:  # a token never ends up in a log line by accident
        return f"AccessToken(token=***, expires_on={self.expires_on})"


class TokenUnavailable(DependencyUnavailable):
    """No token could be obtained; the message names the identity and the cause."""


class TokenProvider(Protocol):
    # For the audit log: the kind of identity ("managed", "workload", "development",
    # "client-credentials") and the client id it authenticates as (None: the default one).
    kind: str
    client_id: str | None

    async def token(self, resource: str) -> AccessToken:
        """A fresh token for `resource` (an audience such as
        `https://cognitiveservices.azure.com`); raises TokenUnavailable."""
        ...
