"""The ledger's schema versions, shared by the SQLite and PostgreSQL stores.

Each store lists its own migrations (the dialects differ) under the same rules as the
subscription store: versions 1..N without gaps, each in its own transaction, and a database
newer than this code refused. The ledger keeps its own version table, because by default it
shares the subscription store's database.
"""

from __future__ import annotations

from collections.abc import Sequence

from aigw.errors import DependencyUnavailable
from aigw.migrations import Migration
from aigw.migrations import next_migration as next_step

MIGRATIONS_TABLE = "ledger_schema_migrations"
TABLE = "usage_records"


class LedgerUnavailable(DependencyUnavailable):
    """The ledger database cannot be reached or used; the message names no secret."""


def next_migration(migrations: Sequence[Migration], current: int, where: str) -> Migration | None:
    """The migration to apply on a database at version `current`; None when it is current."""

    def too_new(latest: int) -> LedgerUnavailable:
        return LedgerUnavailable(
            f"the usage ledger at {where} has schema version {current}, newer than the "
            f"{latest} this aigw knows: upgrade aigw, or point usage.ledger.url elsewhere"
        )

    return next_step(migrations, current, too_new)
