"""The shared ledger: a table in PostgreSQL, written by every replica.

A batch goes in as one `INSERT … SELECT FROM unnest(arrays)` statement: one round trip
whatever its size, atomic, and idempotent by request id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from aigw.ledger.query import Dialect, ReportSpec, Summary, aggregate_of, summary_sql
from aigw.ledger.rows import COLUMNS, LedgerRow
from aigw.ledger.schema import MIGRATIONS_TABLE, TABLE, LedgerUnavailable, next_migration
from aigw.migrations import Migration
from aigw.postgresdb import (
    CONNECT_TIMEOUT_SECONDS,
    SCHEMA_NAME,
    UNAVAILABLE,
    failure_reason,
    location,
    url_problem,
)

COMMAND_TIMEOUT_SECONDS = 30.0
POOL_MIN, POOL_MAX = 1, 2  # one writer task and the occasional report
# Any fixed number; every opener of the ledger takes it while migrating.
MIGRATION_LOCK = 0x61696777_6C656467  # "aigwledg"

COLUMN_TYPES: dict[str, str] = {
    "request_id": "text",
    "client_request_id": "text",
    "started_at": "timestamptz",
    "subscription_id": "text",
    "product_id": "text",
    "user_id": "text",
    "api_id": "text",
    "operation_id": "text",
    "deployment": "text",
    "model": "text",
    "backend_id": "text",
    "prompt_tokens": "bigint",
    "completion_tokens": "bigint",
    "cached_tokens": "bigint",
    "reasoning_tokens": "bigint",
    "total_tokens": "bigint",
    "usage_source": "text",
    "cache_hit": "boolean",
    "status": "integer",
    "reason": "text",
    "client_disconnected": "boolean",
    "duration_ms": "double precision",
    "ttfb_ms": "double precision",
    "cost_nanos": "bigint",
    "currency": "text",
}
_REQUIRED = frozenset(
    {"request_id", "started_at", "api_id", "operation_id", "cache_hit", "status"}
    | {"client_disconnected", "duration_ms"}
    | {name for name, kind in COLUMN_TYPES.items() if name.endswith("_tokens")}
)
assert tuple(COLUMN_TYPES) == COLUMNS, "the PostgreSQL columns must follow LedgerRow"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            f"CREATE TABLE {TABLE} ("
            + ", ".join(
                f"{name} {kind}"
                + (" PRIMARY KEY" if name == "request_id" else "")
                + (" NOT NULL" if name in _REQUIRED and name != "request_id" else "")
                for name, kind in COLUMN_TYPES.items()
            )
            + ")",
            f"CREATE INDEX {TABLE}_started_at ON {TABLE} (started_at)",
        ),
    ),
)

# Every interpolated name here and below is a constant of this package, never input.
INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) SELECT * FROM unnest("  # noqa: S608
    + ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(COLUMN_TYPES.values(), start=1))
    + ") ON CONFLICT (request_id) DO NOTHING"
)
_VERSION_QUERY = f"SELECT coalesce(max(version), 0) FROM {MIGRATIONS_TABLE}"  # noqa: S608
_RECORD_VERSION = f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES ($1)"  # noqa: S608
DIALECT = Dialect(
    placeholder=lambda number: f"${number}",
    day="to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    hour="""to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24":00:00Z"')""",
)


def _as_is(value: Any) -> Any:
    return value  # asyncpg maps aware datetimes to timestamptz itself


class PostgresLedgerStore:
    def __init__(self, url: str, *, schema: str | None = None, migrate: bool = True) -> None:
        if schema is not None and not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"invalid PostgreSQL schema name {schema!r}")
        self._url = url
        self._schema = schema
        # False for readers (reports): they check the schema and never create or change it,
        # so a read-only role will do.
        self._migrates = migrate
        self._where, self._secrets = location(url)
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            if self._pool is None:
                self._pool = await self._create_pool()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT_SECONDS)
        except (*UNAVAILABLE, asyncpg.PostgresError):
            pool.terminate()  # the server is gone; just drop the sockets

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(_VERSION_QUERY))

    async def write(self, rows: Sequence[LedgerRow]) -> int:
        if not rows:
            return 0
        columns = [list(column) for column in zip(*(row.values() for row in rows), strict=True)]
        async with self._connection() as conn:
            status = await conn.execute(INSERT, *columns)
        return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <new rows>"

    async def summarize(self, spec: ReportSpec) -> Summary:
        grouped, grouped_params = summary_sql(spec, DIALECT, True, _as_is)
        totals, totals_params = summary_sql(spec, DIALECT, False, _as_is)
        width = len(spec.group_by)
        # One snapshot: rows and totals see the same committed records.
        async with (
            self._connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(grouped, *grouped_params)
            sums = await conn.fetch(totals, *totals_params)
        return Summary(
            [aggregate_of(row, width) for row in rows], [aggregate_of(row, 0) for row in sums]
        )

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise LedgerUnavailable(f"the PostgreSQL ledger at {self._where} is not open")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_SECONDS) as conn:
                yield conn
        except UNAVAILABLE as exc:
            raise LedgerUnavailable(f"PostgreSQL at {self._where}: {self._reason(exc)}") from None

    async def _create_pool(self) -> Any:
        # Checked when the config loads too; the driver's own words would quote the URL.
        problem = url_problem(self._url)
        if problem is not None:
            raise LedgerUnavailable(f"cannot connect to PostgreSQL at {self._where}: {problem}")
        settings = {} if self._schema is None else {"search_path": self._schema}
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=POOL_MIN,
                max_size=POOL_MAX,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                server_settings=settings,
            )
        except (*UNAVAILABLE, asyncpg.PostgresError, ValueError) as exc:
            raise LedgerUnavailable(
                f"cannot connect to PostgreSQL at {self._where}: {self._reason(exc)}"
            ) from None
        try:
            await (self._migrate(pool) if self._migrates else self._check_schema(pool))
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            pool.terminate()
            raise LedgerUnavailable(
                f"cannot prepare the usage ledger at {self._where}: {self._reason(exc)}"
            ) from None
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _check_schema(self, pool: Any) -> None:
        """A reader's check: the ledger is there, and not newer than this gateway."""
        async with pool.acquire() as conn:
            try:
                current = await conn.fetchval(_VERSION_QUERY)
            except asyncpg.UndefinedTableError:
                raise LedgerUnavailable(f"no usage ledger at {self._where} yet") from None
        if current > MIGRATIONS[-1].version:
            next_migration(MIGRATIONS, current, self._where)  # raises: newer than this code

    async def _migrate(self, pool: Any) -> None:
        async with pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                    if self._schema is not None:
                        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version integer"
                        " PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    current = await conn.fetchval(_VERSION_QUERY)
                    migration = next_migration(MIGRATIONS, current, self._where)
                    if migration is None:
                        return
                    for statement in migration.statements:
                        await conn.execute(statement)
                    await conn.execute(_RECORD_VERSION, migration.version)

    def _reason(self, exc: BaseException) -> str:
        return failure_reason(exc, self._secrets)
