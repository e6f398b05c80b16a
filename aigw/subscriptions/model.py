"""Subscriptions as the gateway sees them: who may call, in which scope, until when.

A subscription never holds its keys, only their SHA-256 hashes: the keys themselves are shown
once, when they are created or regenerated, and exist nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, get_args

SubscriptionState = Literal["active", "suspended", "submitted", "rejected", "cancelled", "expired"]
STATES: tuple[str, ...] = get_args(SubscriptionState)
KeySlot = Literal["primary", "secondary"]
ScopeKind = Literal["product", "api", "all"]


@dataclass(frozen=True, slots=True)
class Scope:
    """`/products/{id}`, `/apis/{id}` or `/apis` (every API), as APIM writes them."""

    kind: ScopeKind
    target: str | None = None

    @classmethod
    def parse(cls, text: str) -> Scope:
        parts = text.strip().strip("/").split("/")
        if parts == ["apis"]:
            return cls("all")
        if len(parts) == 2 and parts[1] and parts[0] in ("products", "apis"):
            return cls("product" if parts[0] == "products" else "api", parts[1])
        raise ValueError(
            f"invalid scope {text!r}: expected '/products/{{id}}', '/apis/{{id}}' or '/apis'"
        )

    def __str__(self) -> str:
        if self.kind == "all":
            return "/apis"
        return f"/{'products' if self.kind == 'product' else 'apis'}/{self.target}"


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    display_name: str
    scope: Scope
    state: SubscriptionState
    created_at: datetime
    updated_at: datetime
    primary_key_hash: str = field(repr=False)
    secondary_key_hash: str = field(repr=False)
    owner_id: str | None = None
    expires_at: datetime | None = None  # timezone-aware (UTC)
    state_comment: str | None = None
    # Store-assigned and increasing with every write: replicas fetch what changed since
    # the last revision they saw.
    revision: int = 0

    def effective_state(self, now: datetime) -> SubscriptionState:
        """The state, with an active subscription past its expiration date shown as expired."""
        if self.state == "active" and self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return self.state

    def key_hash(self, slot: KeySlot) -> str:
        return self.primary_key_hash if slot == "primary" else self.secondary_key_hash

    def with_changes(self, **changes: Any) -> Subscription:
        return replace(self, **changes)

    def public(self, now: datetime) -> dict[str, Any]:
        """What the admin API and the CLI show: everything but the key hashes."""
        return {
            "id": self.id,
            "displayName": self.display_name,
            "scope": str(self.scope),
            "state": self.effective_state(now),
            "storedState": self.state,
            "ownerId": self.owner_id,
            "expirationDate": _iso(self.expires_at),
            "createdDate": _iso(self.created_at),
            "updatedDate": _iso(self.updated_at),
            "stateComment": self.state_comment,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change to a subscription: who, what, when. Never a key or a key hash."""

    at: datetime
    actor: str
    action: str
    subscription_id: str
    details: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        record = asdict(self)
        record["at"] = _iso(self.at)
        record["subscriptionId"] = record.pop("subscription_id")
        return record


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
