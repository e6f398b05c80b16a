"""What the two subscription stores share: the rules for schema versions, and how a row's
values are checked on the way in and rebuilt on the way out.

Each backend lists its own migrations (the SQL dialects differ) but follows the same rules:
versions run 1..N without gaps, each is applied in its own transaction under a lock every
opener takes, and a database newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from aigw.migrations import Migration
from aigw.migrations import next_migration as next_step
from aigw.subscriptions.model import AuditEntry, Scope, Subscription, SubscriptionState
from aigw.subscriptions.store import DuplicateSubscription, StoreUnavailable

T = TypeVar("T")


def next_migration(migrations: Sequence[Migration], current: int, where: str) -> Migration | None:
    """The migration to apply on a database at version `current`; None when it is current."""

    def too_new(latest: int) -> StoreUnavailable:
        return StoreUnavailable(
            f"the subscription store at {where} has schema version {current}, newer than the "
            f"{latest} this aigw knows: upgrade aigw, or point it at another database"
        )

    return next_step(migrations, current, too_new)


def utc(value: datetime) -> datetime:
    """`value` in UTC. A naive datetime is a caller's bug: guessing its zone would shift
    expiry dates silently."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store keeps aware UTC times")
    return value.astimezone(UTC)


def row_values(
    sub: Subscription, revision: int, write_time: Callable[[datetime], T]
) -> tuple[Any, ...]:
    """The row in column order: id, display_name, scope, state, owner_id, expires_at,
    created_at, updated_at, state_comment, primary_key_hash, secondary_key_hash, revision."""
    return (
        sub.id,
        sub.display_name,
        str(sub.scope),
        sub.state,
        sub.owner_id,
        None if sub.expires_at is None else write_time(utc(sub.expires_at)),
        write_time(utc(sub.created_at)),
        write_time(utc(sub.updated_at)),
        sub.state_comment,
        sub.primary_key_hash,
        sub.secondary_key_hash,
        revision,
    )


def subscription_from_row(row: Sequence[Any], read_time: Callable[[Any], datetime]) -> Subscription:
    """The inverse of `row_values`."""
    return Subscription(
        id=row[0],
        display_name=row[1],
        scope=Scope.parse(row[2]),
        state=cast(SubscriptionState, row[3]),
        owner_id=row[4],
        expires_at=None if row[5] is None else read_time(row[5]),
        created_at=read_time(row[6]),
        updated_at=read_time(row[7]),
        state_comment=row[8],
        primary_key_hash=row[9],
        secondary_key_hash=row[10],
        revision=row[11],
    )


def audit_details(audit: AuditEntry, sub: Subscription) -> str:
    """The entry's details as JSON. Refuses any that quote the subscription's key hashes: the
    audit log is shown to operators and kept for good, so it must hold no credential."""
    text = json.dumps(audit.details, separators=(",", ":"), sort_keys=True)
    for key_hash in (sub.primary_key_hash, sub.secondary_key_hash):
        if key_hash and key_hash in text:
            raise ValueError(f"audit details for subscription {sub.id!r} contain a key hash")
    return text


def audit_from_row(row: Sequence[Any], read_time: Callable[[Any], datetime]) -> AuditEntry:
    """Rebuilds an entry from (at, actor, action, subscription_id, details JSON)."""
    return AuditEntry(
        at=read_time(row[0]),
        actor=row[1],
        action=row[2],
        subscription_id=row[3],
        details=json.loads(row[4]),
    )


def import_audits(subs: Iterable[Subscription], actor: str) -> list[tuple[AuditEntry, str]]:
    """An "import" entry per subscription, with its details as JSON."""
    entries = []
    for sub in subs:
        # The store has no clock of its own; the importer stamped updated_at from its clock.
        details = {"displayName": sub.display_name, "scope": str(sub.scope), "state": sub.state}
        audit = AuditEntry(sub.updated_at, actor, "import", sub.id, details)
        entries.append((audit, audit_details(audit, sub)))
    return entries


def reject_repeated_ids(subs: Iterable[Subscription]) -> None:
    seen: set[str] = set()
    for sub in subs:
        if sub.id in seen:
            raise DuplicateSubscription(f"subscription {sub.id!r} appears twice in the import")
        seen.add(sub.id)


def already_exists(subscription_id: str) -> DuplicateSubscription:
    return DuplicateSubscription(f"subscription {subscription_id!r} already exists")
