"""The embedded subscription store: one SQLite file, shareable by several gateway workers and
the CLI at once.

WAL mode lets readers go on while one process writes, and the busy timeout makes a second
writer wait for the first instead of failing. Every call runs in a worker thread on one
connection, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from aigw.migrations import Migration
from aigw.sqlitedb import means_unavailable, transaction, use_wal
from aigw.subscriptions.model import AuditEntry, Subscription
from aigw.subscriptions.schema import (
    already_exists,
    audit_details,
    audit_from_row,
    import_audits,
    next_migration,
    reject_repeated_ids,
    row_values,
    subscription_from_row,
    utc,
)
from aigw.subscriptions.store import ConcurrentUpdate, StoreUnavailable, SubscriptionNotFound

T = TypeVar("T")
BUSY_TIMEOUT_SECONDS = 5.0

# Times are ISO-8601 text in UTC with microseconds: exact, sortable, and readable with the
# sqlite3 shell.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            """CREATE TABLE subscriptions (
                id TEXT PRIMARY KEY,
                display_name TEXT NOT NULL,
                scope TEXT NOT NULL,
                state TEXT NOT NULL,
                owner_id TEXT,
                expires_at TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                state_comment TEXT,
                primary_key_hash TEXT NOT NULL,
                secondary_key_hash TEXT NOT NULL,
                revision INTEGER NOT NULL
            )""",
            "CREATE INDEX subscriptions_revision ON subscriptions (revision)",
            """CREATE TABLE subscription_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                subscription_id TEXT NOT NULL,
                details TEXT NOT NULL
            )""",
            "CREATE INDEX subscription_audit_subscription"
            " ON subscription_audit (subscription_id, id)",
            """CREATE TABLE store_revision (
                one_row INTEGER PRIMARY KEY CHECK (one_row = 1),
                revision INTEGER NOT NULL
            )""",
            "INSERT INTO store_revision (one_row, revision) VALUES (1, 0)",
        ),
    ),
)

SELECT_SUBSCRIPTION = """SELECT id, display_name, scope, state, owner_id, expires_at, created_at,
    updated_at, state_comment, primary_key_hash, secondary_key_hash, revision
    FROM subscriptions"""
INSERT_SUBSCRIPTION = """INSERT INTO subscriptions (id, display_name, scope, state, owner_id,
    expires_at, created_at, updated_at, state_comment, primary_key_hash, secondary_key_hash,
    revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"""
UPDATE_SUBSCRIPTION = """UPDATE subscriptions SET display_name = ?, scope = ?, state = ?,
    owner_id = ?, expires_at = ?, created_at = ?, updated_at = ?, state_comment = ?,
    primary_key_hash = ?, secondary_key_hash = ?, revision = ?
    WHERE id = ? AND revision = ?"""
INSERT_AUDIT = """INSERT INTO subscription_audit (at, actor, action, subscription_id, details)
    VALUES (?, ?, ?, ?, ?)"""
SELECT_AUDIT = "SELECT at, actor, action, subscription_id, details FROM subscription_audit"


def _write_time(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _read_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        # A thread lock, not an asyncio one: a cancelled caller must not release the
        # connection while its worker thread is still using it.
        self._lock = threading.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    async def schema_version(self) -> int:
        return await self._run(_schema_version)

    async def insert(self, subscription: Subscription, audit: AuditEntry) -> Subscription:
        details = audit_details(audit, subscription)

        def work(conn: sqlite3.Connection) -> Subscription:
            with transaction(conn):
                revision = _next_revision(conn)
                row = row_values(subscription, revision, _write_time)
                if conn.execute(INSERT_SUBSCRIPTION, row).rowcount == 0:
                    raise already_exists(subscription.id)
                _write_audit(conn, audit, details)
            return subscription.with_changes(revision=revision)

        return await self._run(work)

    async def insert_many(self, subscriptions: Sequence[Subscription], actor: str) -> int:
        reject_repeated_ids(subscriptions)

        def work(conn: sqlite3.Connection) -> int:
            audits = import_audits(subscriptions, actor)
            with transaction(conn):
                revision = _next_revision(conn)
                for sub in subscriptions:
                    row = row_values(sub, revision, _write_time)
                    if conn.execute(INSERT_SUBSCRIPTION, row).rowcount == 0:
                        raise already_exists(sub.id)
                for audit, details in audits:
                    _write_audit(conn, audit, details)
            return len(subscriptions)

        return await self._run(work) if subscriptions else 0

    async def update(
        self, subscription: Subscription, expected_revision: int, audit: AuditEntry
    ) -> Subscription:
        details = audit_details(audit, subscription)

        def work(conn: sqlite3.Connection) -> Subscription:
            with transaction(conn):
                revision = _next_revision(conn)
                row = row_values(subscription, revision, _write_time)
                changed = conn.execute(
                    UPDATE_SUBSCRIPTION, (*row[1:], subscription.id, expected_revision)
                ).rowcount
                if changed == 0:
                    _raise_missing_or_stale(conn, subscription.id, expected_revision)
                _write_audit(conn, audit, details)
            return subscription.with_changes(revision=revision)

        return await self._run(work)

    async def get(self, subscription_id: str) -> Subscription | None:
        def work(conn: sqlite3.Connection) -> Subscription | None:
            row = conn.execute(f"{SELECT_SUBSCRIPTION} WHERE id = ?", (subscription_id,))
            found = row.fetchone()
            return None if found is None else subscription_from_row(found, _read_time)

        return await self._run(work)

    async def list_all(self) -> list[Subscription]:
        def work(conn: sqlite3.Connection) -> list[Subscription]:
            rows = conn.execute(f"{SELECT_SUBSCRIPTION} ORDER BY id").fetchall()
            return [subscription_from_row(row, _read_time) for row in rows]

        return await self._run(work)

    async def changes_since(self, revision: int) -> tuple[list[Subscription], int]:
        def work(conn: sqlite3.Connection) -> tuple[list[Subscription], int]:
            # One read transaction, so the rows and the counter come from the same snapshot.
            with transaction(conn, "DEFERRED"):
                rows = conn.execute(
                    f"{SELECT_SUBSCRIPTION} WHERE revision > ? ORDER BY revision, id", (revision,)
                ).fetchall()
                current = conn.execute("SELECT revision FROM store_revision").fetchone()[0]
            return [subscription_from_row(row, _read_time) for row in rows], int(current)

        return await self._run(work)

    async def audit_log(
        self, subscription_id: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        def work(conn: sqlite3.Connection) -> list[AuditEntry]:
            if subscription_id is None:
                query = f"{SELECT_AUDIT} ORDER BY id DESC LIMIT ?"
                rows = conn.execute(query, (limit,)).fetchall()
            else:
                query = f"{SELECT_AUDIT} WHERE subscription_id = ? ORDER BY id DESC LIMIT ?"
                rows = conn.execute(query, (subscription_id, limit)).fetchall()
            return [audit_from_row(row, _read_time) for row in rows]

        return await self._run(work)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._locked, work)

    def _locked(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the SQLite subscription store is not open")
            try:
                return work(self._conn)
            except sqlite3.DatabaseError as exc:
                if not means_unavailable(exc):
                    raise
                raise StoreUnavailable(f"SQLite store {self._path}: {exc}") from exc

    def _open(self) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = _connect(self._path)

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _connect(path: Path) -> sqlite3.Connection:
    def unavailable(reason: object) -> StoreUnavailable:
        return StoreUnavailable(f"cannot open the SQLite store {path}: {reason}")

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unavailable(exc.strerror or exc) from None
    try:
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # we issue BEGIN and COMMIT ourselves
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise unavailable(exc) from None
    try:
        use_wal(conn, BUSY_TIMEOUT_SECONDS)
        _migrate(conn, str(path))
    except sqlite3.DatabaseError as exc:
        conn.close()
        if not means_unavailable(exc):
            raise
        raise unavailable(exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, where: str) -> None:
    while True:
        with transaction(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            migration = next_migration(MIGRATIONS, _schema_version(conn), where)
            if migration is None:
                return
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at)"
                " VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (migration.version,),
            )


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])


def _next_revision(conn: sqlite3.Connection) -> int:
    rows = conn.execute("UPDATE store_revision SET revision = revision + 1 RETURNING revision")
    return int(rows.fetchall()[0][0])


def _write_audit(conn: sqlite3.Connection, audit: AuditEntry, details: str) -> None:
    at = _write_time(utc(audit.at))
    conn.execute(INSERT_AUDIT, (at, audit.actor, audit.action, audit.subscription_id, details))


def _raise_missing_or_stale(conn: sqlite3.Connection, subscription_id: str, expected: int) -> None:
    if conn.execute("SELECT 1 FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone():
        raise ConcurrentUpdate(
            f"subscription {subscription_id!r} changed after revision {expected}: reload and retry"
        )
    raise SubscriptionNotFound(f"subscription {subscription_id!r} not found")
