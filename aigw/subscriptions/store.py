"""The subscription store interface, and the choice of implementation from a URL.

Two siblings implement it: SQLite (embedded default, one file) and PostgreSQL (shared by
replicas). Every write stores the subscription and its audit entry in one transaction and
gives the row the next store-wide revision, so `changes_since` lets each replica follow
changes made by any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aigw.errors import DependencyUnavailable
from aigw.subscriptions.model import AuditEntry, Subscription


class StoreError(Exception):
    """A store problem the caller can act on; the message is safe to show."""


class DuplicateSubscription(StoreError):
    pass


class SubscriptionNotFound(StoreError):
    pass


class ConcurrentUpdate(StoreError):
    """The row changed between read and write (another admin, another replica)."""


class StoreUnavailable(StoreError, DependencyUnavailable):
    """The database cannot be reached or used; the message names no secret."""


class SubscriptionStore(Protocol):
    async def open(self) -> None:
        """Connect, then create or migrate the schema to the latest version."""

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def insert(self, subscription: Subscription, audit: AuditEntry) -> Subscription:
        """Store a new subscription; returns it with its revision. DuplicateSubscription if
        the id exists."""

    async def insert_many(self, subscriptions: Sequence[Subscription], actor: str) -> int:
        """Bulk import in one transaction (benchmarks, migrations); audited per row."""

    async def update(
        self, subscription: Subscription, expected_revision: int, audit: AuditEntry
    ) -> Subscription:
        """Replace a subscription if its stored revision is still `expected_revision`
        (ConcurrentUpdate otherwise, SubscriptionNotFound if it is gone)."""

    async def get(self, subscription_id: str) -> Subscription | None: ...

    async def list_all(self) -> list[Subscription]:
        """All subscriptions, ordered by id."""

    async def changes_since(self, revision: int) -> tuple[list[Subscription], int]:
        """Subscriptions written after `revision`, and the store's current revision."""

    async def audit_log(
        self, subscription_id: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Newest first."""


def open_store(url: str, base_dir: Path) -> SubscriptionStore:
    """`sqlite:PATH` (relative to `base_dir`, the config file's folder) or `postgresql://…`."""
    if url.startswith(("postgresql://", "postgres://")):
        from aigw.subscriptions.postgres_store import PostgresStore

        # `?schema=name` keeps aigw's tables in their own schema (created if missing).
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = [value for key, value in query if key == "schema"]
        rest = urlencode([(key, value) for key, value in query if key != "schema"])
        return PostgresStore(
            urlunsplit(parts._replace(query=rest)), schema=schema[-1] if schema else None
        )
    if url.startswith("sqlite:"):
        from aigw.subscriptions.sqlite_store import SqliteStore

        path = Path(url.removeprefix("sqlite:").removeprefix("//"))
        return SqliteStore(path if path.is_absolute() else base_dir / path)
    raise ValueError("store url must start with 'sqlite:' or 'postgresql://'")
