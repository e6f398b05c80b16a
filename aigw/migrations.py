"""Schema versions, as every aigw store applies them: versions run 1..N without gaps, each
is applied in its own transaction under a lock every opener takes, and a database newer
than this code is refused rather than guessed at. Each store lists its own migrations (the
SQL dialects differ) and says in its own words what a too-new database means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    statements: tuple[str, ...]


def next_migration(
    migrations: Sequence[Migration], current: int, too_new: Callable[[int], Exception]
) -> Migration | None:
    """The migration to apply on a database at version `current`; None when it is current.
    `too_new(latest)` is raised for a database newer than `migrations` know."""
    latest = len(migrations)
    if current > latest:
        raise too_new(latest)
    if current == latest:
        return None
    migration = migrations[current]
    assert migration.version == current + 1, "migrations must be numbered 1..N in order"
    return migration
