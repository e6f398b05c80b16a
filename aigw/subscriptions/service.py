"""Managing subscriptions: the one code path behind the admin API and the CLI.

It validates a change against the config (products and APIs that exist), writes it with its
audit entry in one store transaction, and hands the stored result to `on_change` so the
process that made the change enforces it from its next request on.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from aigw.clock import SYSTEM_CLOCK, Clock
from aigw.subscriptions.keys import hash_key, new_key
from aigw.subscriptions.model import (
    STATES,
    AuditEntry,
    KeySlot,
    Scope,
    Subscription,
    SubscriptionState,
)
from aigw.subscriptions.store import (
    ConcurrentUpdate,
    DuplicateSubscription,
    StoreUnavailable,
    SubscriptionNotFound,
    SubscriptionStore,
)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,199}$")
MAX_NAME = 200
_UPDATE_ATTEMPTS = 3
T = TypeVar("T")
# What admin API callers are told: the store's own message names the database server and
# what its driver said, which stays in the gateway's log.
STORE_UNAVAILABLE = "subscription store unavailable; try again later"

log = logging.getLogger("aigw.subscriptions")


class ServiceError(Exception):
    """A refused change: an HTTP status for the admin API and a message for the operator."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ProductEntry:
    """A product as declared in config, for validation and listing."""

    id: str
    display_name: str
    description: str | None
    state: Literal["published", "not-published"]
    subscription_required: bool
    apis: tuple[str, ...]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "description": self.description,
            "state": self.state,
            "subscriptionRequired": self.subscription_required,
            "apis": list(self.apis),
        }


@dataclass(frozen=True, slots=True)
class IssuedKeys:
    """Keys in clear text: returned once to whoever created or regenerated them."""

    primary: str | None = None
    secondary: str | None = None

    def public(self) -> dict[str, str]:
        shown = {"primaryKey": self.primary, "secondaryKey": self.secondary}
        return {name: key for name, key in shown.items() if key is not None}


_UNSET: Any = object()
# The state changes the admin API and the CLI offer as verbs.
STATE_ACTIONS: dict[str, SubscriptionState] = {
    "suspend": "suspended",
    "activate": "active",
    "cancel": "cancelled",
}


class SubscriptionService:
    def __init__(
        self,
        store: SubscriptionStore,
        products: Mapping[str, ProductEntry],
        api_ids: frozenset[str],
        clock: Clock = SYSTEM_CLOCK,
        on_change: Callable[[Subscription], None] | None = None,
    ) -> None:
        self.store = store
        self.products = products
        self.api_ids = api_ids
        self.clock = clock
        self.on_change = on_change

    # -- reads --------------------------------------------------------------------------

    async def get(self, subscription_id: str) -> Subscription:
        found = await self._call(self.store.get(subscription_id))
        if found is None:
            raise ServiceError(404, f"subscription '{subscription_id}' not found")
        return found

    async def find(
        self, product: str | None = None, state: str | None = None
    ) -> list[Subscription]:
        """Subscriptions of a product and/or in a state (as effective now), ordered by id."""
        if state is not None and state not in STATES:
            raise ServiceError(400, f"unknown state '{state}' (one of {', '.join(STATES)})")
        now = self.clock.now()
        found = await self._call(self.store.list_all())
        return [
            sub
            for sub in found
            if (product is None or (sub.scope.kind == "product" and sub.scope.target == product))
            and (state is None or sub.effective_state(now) == state)
        ]

    async def audit(self, subscription_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        if not 1 <= limit <= 1000:
            raise ServiceError(400, "limit must be between 1 and 1000")
        return await self._call(self.store.audit_log(subscription_id, limit))

    # -- writes -------------------------------------------------------------------------

    async def create(
        self,
        *,
        actor: str,
        display_name: str,
        scope: str | None = None,
        product: str | None = None,
        subscription_id: str | None = None,
        owner_id: str | None = None,
        expires_at: datetime | None = None,
        state: str = "active",
    ) -> tuple[Subscription, IssuedKeys]:
        if (scope is None) == (product is None):
            raise ServiceError(400, "give exactly one of 'scope' or 'product'")
        parsed = self._scope(scope if scope is not None else f"/products/{product}")
        if state not in ("active", "submitted"):
            raise ServiceError(400, "a new subscription is 'active' or 'submitted'")
        now = self.clock.now()
        keys = IssuedKeys(new_key(), new_key())
        assert keys.primary is not None and keys.secondary is not None
        subscription = Subscription(
            id=self._id(subscription_id)
            if subscription_id is not None
            else f"sub-{secrets.token_hex(8)}",
            display_name=self._name(display_name),
            scope=parsed,
            state=state,  # type: ignore[arg-type]
            created_at=now,
            updated_at=now,
            primary_key_hash=hash_key(keys.primary),
            secondary_key_hash=hash_key(keys.secondary),
            owner_id=self._owner(owner_id),
            expires_at=self._expiry(expires_at, now),
        )
        audit = AuditEntry(
            now,
            actor,
            "create",
            subscription.id,
            {"scope": str(parsed), "state": state, "displayName": subscription.display_name},
        )
        try:
            stored = await self._call(self.store.insert(subscription, audit))
        except DuplicateSubscription:
            raise ServiceError(409, f"subscription '{subscription.id}' already exists") from None
        self._changed(stored)
        return stored, keys

    async def update(
        self,
        subscription_id: str,
        *,
        actor: str,
        display_name: str = _UNSET,
        owner_id: str | None = _UNSET,
        expires_at: datetime | None = _UNSET,
        state: str = _UNSET,
        state_comment: str | None = _UNSET,
    ) -> Subscription:
        def change(current: Subscription, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
            fields: dict[str, Any] = {}
            if display_name is not _UNSET:
                fields["display_name"] = self._name(display_name)
            if owner_id is not _UNSET:
                fields["owner_id"] = self._owner(owner_id)
            if expires_at is not _UNSET:
                fields["expires_at"] = self._expiry(expires_at, now, allow_past=True)
            if state_comment is not _UNSET:
                fields["state_comment"] = self._comment(state_comment)
            if state is not _UNSET:
                fields["state"] = self._transition(current, state, fields, now)
            if not fields:
                raise ServiceError(400, "nothing to change")
            return fields, _describe(fields)

        return await self._modify(subscription_id, actor, "update", change)

    async def set_state(
        self, subscription_id: str, state: SubscriptionState, *, actor: str, comment: str | None
    ) -> Subscription:
        action = next((verb for verb, to in STATE_ACTIONS.items() if to == state), "set-state")

        def change(current: Subscription, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
            fields: dict[str, Any] = {"state_comment": self._comment(comment)}
            fields["state"] = self._transition(current, state, fields, now)
            return fields, _describe(fields)

        return await self._modify(subscription_id, actor, action, change)

    async def regenerate_key(
        self, subscription_id: str, slot: KeySlot, *, actor: str
    ) -> tuple[Subscription, IssuedKeys]:
        if slot not in ("primary", "secondary"):
            raise ServiceError(400, "key must be 'primary' or 'secondary'")
        key = new_key()

        def change(current: Subscription, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
            if current.state == "cancelled":
                raise ServiceError(409, "a cancelled subscription cannot get new keys")
            return {f"{slot}_key_hash": hash_key(key)}, {"key": slot}

        stored = await self._modify(subscription_id, actor, f"regenerate-{slot}-key", change)
        issued = IssuedKeys(primary=key) if slot == "primary" else IssuedKeys(secondary=key)
        return stored, issued

    # -- helpers ------------------------------------------------------------------------

    async def _modify(
        self,
        subscription_id: str,
        actor: str,
        action: str,
        change: Callable[[Subscription, datetime], tuple[dict[str, Any], dict[str, Any]]],
    ) -> Subscription:
        """Read, change, write with a revision check; retried if another writer got there."""
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self.get(subscription_id)
            now = self.clock.now()
            fields, details = change(current, now)
            updated = current.with_changes(updated_at=now, **fields)
            audit = AuditEntry(now, actor, action, subscription_id, details)
            try:
                stored = await self._call(self.store.update(updated, current.revision, audit))
            except SubscriptionNotFound:
                raise ServiceError(404, f"subscription '{subscription_id}' not found") from None
            except ConcurrentUpdate:
                continue
            self._changed(stored)
            return stored
        raise ServiceError(409, "the subscription is being changed concurrently; try again")

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except StoreUnavailable as exc:
            log.error("subscription store unavailable: %s", exc)
            raise ServiceError(503, STORE_UNAVAILABLE) from None

    def _changed(self, subscription: Subscription) -> None:
        if self.on_change is not None:
            self.on_change(subscription)

    def _scope(self, text: str) -> Scope:
        try:
            scope = Scope.parse(text)
        except ValueError as exc:
            raise ServiceError(400, str(exc)) from None
        if scope.kind == "product" and scope.target not in self.products:
            raise ServiceError(400, f"unknown product '{scope.target}'")
        if scope.kind == "api" and scope.target not in self.api_ids:
            raise ServiceError(400, f"unknown API '{scope.target}'")
        return scope

    def _transition(
        self, current: Subscription, state: str, fields: dict[str, Any], now: datetime
    ) -> str:
        if state not in STATES:
            raise ServiceError(400, f"unknown state '{state}' (one of {', '.join(STATES)})")
        if current.state == "cancelled" and state != "cancelled":
            raise ServiceError(409, "a cancelled subscription cannot be changed; create a new one")
        expires = fields.get("expires_at", current.expires_at)
        if state == "active" and expires is not None and expires <= now:
            raise ServiceError(409, "the subscription has expired; set a later expiration date")
        return state

    @staticmethod
    def _id(value: str) -> str:
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise ServiceError(
                400, "id must be 1-80 characters: letters, digits, '_', '.', '-' (not first)"
            )
        return value

    @staticmethod
    def _name(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ServiceError(400, "displayName is required")
        # isprintable: no C0/C1 controls, bidi overrides or line separators, which would
        # reach terminals (the CLI's tables) and logs as they are.
        if len(value) > MAX_NAME or not value.isprintable():
            raise ServiceError(400, f"displayName must be at most {MAX_NAME} printable characters")
        return value.strip()

    @staticmethod
    def _owner(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _OWNER.fullmatch(value):
            raise ServiceError(
                400, "ownerId must be 1-200 characters: letters, digits, '_', '.', '@', ':', '-'"
            )
        return value

    @staticmethod
    def _comment(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 1000 or not value.isprintable():
            raise ServiceError(400, "comment must be at most 1000 printable characters")
        return value

    @staticmethod
    def _expiry(value: Any, now: datetime, allow_past: bool = False) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise ServiceError(400, "expirationDate must be an ISO 8601 date-time")
        expiry = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if not allow_past and expiry <= now:
            raise ServiceError(400, "expirationDate must be in the future")
        return expiry


def parse_datetime(text: str) -> datetime:
    """ISO 8601 from the admin API or the CLI; no timezone means UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        # In range with its own offset, yet maybe not in UTC (year 0 or 10000).
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, AttributeError, OverflowError):
        raise ServiceError(
            400, f"invalid date-time {text!r}: use ISO 8601, e.g. 2027-01-31T00:00:00Z"
        ) from None


def _describe(fields: dict[str, Any]) -> dict[str, Any]:
    """Audit details: what changed, in admin API names, never a key hash."""
    names = {
        "display_name": "displayName",
        "owner_id": "ownerId",
        "expires_at": "expirationDate",
        "state": "state",
        "state_comment": "stateComment",
    }
    return {
        names[key]: value.isoformat() if isinstance(value, datetime) else value
        for key, value in fields.items()
        if key in names
    }
