"""The embedded ledger: a table in a SQLite file, written by every worker process of a host.

As with the subscription store, WAL lets reports read while a worker writes, the busy timeout
makes a second writer wait instead of failing, and every call runs in a worker thread on one
connection, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, TypeVar

from aigw.ledger.query import Dialect, ReportSpec, Summary, aggregate_of, summary_sql
from aigw.ledger.rows import COLUMNS, LedgerRow
from aigw.ledger.schema import MIGRATIONS_TABLE, TABLE, LedgerUnavailable, next_migration
from aigw.migrations import Migration
from aigw.sqlitedb import means_unavailable, transaction, use_wal

T = TypeVar("T")
BUSY_TIMEOUT_SECONDS = 5.0

# started_at is ISO-8601 text in UTC with microseconds ("2026-11-27T13:05:01.000042+00:00"):
# every value has the same shape, so text order is time order and ranges use the index.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            f"""CREATE TABLE {TABLE} (
                request_id TEXT PRIMARY KEY,
                client_request_id TEXT,
                started_at TEXT NOT NULL,
                subscription_id TEXT,
                product_id TEXT,
                user_id TEXT,
                api_id TEXT NOT NULL,
                operation_id TEXT NOT NULL,
                deployment TEXT,
                model TEXT,
                backend_id TEXT,
                prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL,
                cached_tokens INTEGER NOT NULL,
                reasoning_tokens INTEGER NOT NULL,
                total_tokens INTEGER NOT NULL,
                usage_source TEXT,
                cache_hit INTEGER NOT NULL,
                status INTEGER NOT NULL,
                reason TEXT,
                client_disconnected INTEGER NOT NULL,
                duration_ms REAL NOT NULL,
                ttfb_ms REAL,
                cost_nanos INTEGER,
                currency TEXT
            )""",
            f"CREATE INDEX {TABLE}_started_at ON {TABLE} (started_at)",
        ),
    ),
)

# Every interpolated name here and below is a constant of this package, never input.
_VERSION_QUERY = f"SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE}"  # noqa: S608
_RECORD_VERSION = (
    f"INSERT INTO {MIGRATIONS_TABLE} (version, applied_at)"  # noqa: S608
    " VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
)
DIALECT = Dialect(
    placeholder=lambda _: "?",
    day="substr(started_at, 1, 10)",
    hour="substr(started_at, 1, 13) || ':00:00Z'",
)
_STARTED_AT = COLUMNS.index("started_at")


# Many rows per INSERT statement: sqlite3 gives up the GIL for every statement it steps,
# and under load each handover can wait for the busy event loop's switch interval (5 ms),
# so `executemany` (a statement per row) fell behind the requests; one statement per 100
# rows keeps up. 100 rows of 25 columns stay far below SQLite's 32,766 variables.
ROWS_PER_STATEMENT: Final = 100
_ONE_ROW: Final = "(" + ", ".join("?" for _ in COLUMNS) + ")"


@lru_cache(maxsize=ROWS_PER_STATEMENT)
def _insert_for(rows: int) -> str:
    return (
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES "  # noqa: S608
        + ", ".join([_ONE_ROW] * rows)
        + " ON CONFLICT (request_id) DO NOTHING"
    )


def write_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class SqliteLedgerStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        # A thread lock: a cancelled caller must not free the connection its thread still uses.
        self._lock = threading.Lock()

    async def _in_thread(self, work: Callable[..., T], *args: Any) -> T:
        # A thread of its own: the default pool's several threads would each grow a malloc
        # arena under steady writing (tens of MB more resident memory).
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="aigw-ledger")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    async def open(self) -> None:
        await self._in_thread(self._open)

    async def close(self) -> None:
        await self._in_thread(self._close)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)

    async def schema_version(self) -> int:
        return await self._run(_schema_version)

    async def write(self, rows: Sequence[LedgerRow]) -> int:
        def work(conn: sqlite3.Connection) -> int:
            # Rows become SQL values here, in the writer's thread, not on the event loop.
            before = conn.total_changes
            with transaction(conn):
                for start in range(0, len(rows), ROWS_PER_STATEMENT):
                    chunk = rows[start : start + ROWS_PER_STATEMENT]
                    values = [value for row in chunk for value in _row_values(row)]
                    conn.execute(_insert_for(len(chunk)), values)
            return conn.total_changes - before

        return await self._run(work) if rows else 0

    async def summarize(self, spec: ReportSpec) -> Summary:
        grouped, grouped_params = summary_sql(spec, DIALECT, True, write_time)
        totals, totals_params = summary_sql(spec, DIALECT, False, write_time)
        width = len(spec.group_by)

        def work(conn: sqlite3.Connection) -> Summary:
            # One read transaction: rows and totals see the same committed records.
            with transaction(conn, "DEFERRED"):
                rows = conn.execute(grouped, grouped_params).fetchall()
                sums = conn.execute(totals, totals_params).fetchall()
            return Summary(
                [aggregate_of(row, width) for row in rows], [aggregate_of(row, 0) for row in sums]
            )

        return await self._run(work)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._in_thread(self._locked, work)

    def _locked(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                raise LedgerUnavailable(f"the SQLite ledger {self.path} is not open")
            try:
                return work(self._conn)
            except sqlite3.DatabaseError as exc:
                if not means_unavailable(exc):
                    raise
                raise LedgerUnavailable(f"SQLite ledger {self.path}: {exc}") from exc

    def _open(self) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = _connect(self.path)

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _row_values(row: LedgerRow) -> tuple[object, ...]:
    values = list(row.values())
    values[_STARTED_AT] = write_time(row.started_at)
    return tuple(values)


def _connect(path: Path) -> sqlite3.Connection:
    def unavailable(reason: object) -> LedgerUnavailable:
        return LedgerUnavailable(f"cannot open the SQLite ledger {path}: {reason}")

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # we issue BEGIN and COMMIT ourselves
            check_same_thread=False,
        )
    except OSError as exc:
        raise unavailable(exc.strerror or exc) from None
    except sqlite3.Error as exc:
        raise unavailable(exc) from None
    try:
        use_wal(conn, BUSY_TIMEOUT_SECONDS)
        # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a commit survives a
        # crash of the gateway, and only a crash of the machine can lose the last ones.
        conn.execute("PRAGMA synchronous = NORMAL")
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
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}"
                " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            migration = next_migration(MIGRATIONS, _schema_version(conn), where)
            if migration is None:
                return
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(_RECORD_VERSION, (migration.version,))


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(_VERSION_QUERY).fetchone()
    return int(row[0])
