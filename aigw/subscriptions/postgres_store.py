"""The shared subscription store: PostgreSQL, for gateways running as several replicas.

Writers serialise on the single `store_revision` row, so revisions are handed out in commit
order and a replica that asks for `changes_since(r)` can never skip a row committed late.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from aigw.migrations import Migration
from aigw.postgresdb import (
    CONNECT_TIMEOUT_SECONDS,
    SCHEMA_NAME,
    UNAVAILABLE,
    failure_reason,
    location,
    url_problem,
)
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

COMMAND_TIMEOUT_SECONDS = 30.0  # generous: a bulk import of many rows is one command
POOL_MIN, POOL_MAX = 1, 4
# Any fixed number works; every opener of any aigw store takes the same one while migrating.
MIGRATION_LOCK = 0x61696777_73756273  # "aigwsubs"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            """CREATE TABLE subscriptions (
                id text PRIMARY KEY,
                display_name text NOT NULL,
                scope text NOT NULL,
                state text NOT NULL,
                owner_id text,
                expires_at timestamptz,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                state_comment text,
                primary_key_hash text NOT NULL,
                secondary_key_hash text NOT NULL,
                revision bigint NOT NULL
            )""",
            "CREATE INDEX subscriptions_revision ON subscriptions (revision)",
            """CREATE TABLE subscription_audit (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at timestamptz NOT NULL,
                actor text NOT NULL,
                action text NOT NULL,
                subscription_id text NOT NULL,
                details jsonb NOT NULL
            )""",
            "CREATE INDEX subscription_audit_subscription"
            " ON subscription_audit (subscription_id, id)",
            """CREATE TABLE store_revision (
                one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
                revision bigint NOT NULL
            )""",
            "INSERT INTO store_revision (revision) VALUES (0)",
        ),
    ),
)

SELECT_SUBSCRIPTION = """SELECT id, display_name, scope, state, owner_id, expires_at, created_at,
    updated_at, state_comment, primary_key_hash, secondary_key_hash, revision
    FROM subscriptions"""
INSERT_SUBSCRIPTION = """INSERT INTO subscriptions (id, display_name, scope, state, owner_id,
    expires_at, created_at, updated_at, state_comment, primary_key_hash, secondary_key_hash,
    revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""
UPDATE_SUBSCRIPTION = """UPDATE subscriptions SET display_name = $2, scope = $3, state = $4,
    owner_id = $5, expires_at = $6, created_at = $7, updated_at = $8, state_comment = $9,
    primary_key_hash = $10, secondary_key_hash = $11, revision = $12
    WHERE id = $1 AND revision = $13"""
INSERT_AUDIT = """INSERT INTO subscription_audit (at, actor, action, subscription_id, details)
    VALUES ($1, $2, $3, $4, $5::jsonb)"""
SELECT_AUDIT = "SELECT at, actor, action, subscription_id, details::text FROM subscription_audit"


def _as_is(value: datetime) -> datetime:
    return value  # asyncpg maps aware datetimes to timestamptz itself


class PostgresStore:
    def __init__(self, url: str, *, schema: str | None = None) -> None:
        """`schema` keeps the tables in that schema (created if missing) instead of the
        server's default search path: for tests, or several gateways on one database."""
        if schema is not None and not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"invalid PostgreSQL schema name {schema!r}")
        self._url = url
        self._schema = schema
        self._where, self._secrets = location(url)
        self._pool: Any = None
        self._opening = asyncio.Lock()  # two callers opening at once must not make two pools

    async def open(self) -> None:
        async with self._opening:
            if self._pool is None:
                self._pool = await self._create_pool()

    async def _create_pool(self) -> Any:
        # Checked when the config loads too; the driver's own words would quote the URL.
        problem = url_problem(self._url)
        if problem is not None:
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self._where}: {problem}")
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
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {self._where}: {self._reason(exc)}"
            ) from None
        try:
            await self._migrate(pool)
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            pool.terminate()
            raise StoreUnavailable(
                f"cannot prepare the subscription store at {self._where}: {self._reason(exc)}"
            ) from None
        except BaseException:
            pool.terminate()
            raise
        return pool

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
            return int(
                await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
            )

    async def insert(self, subscription: Subscription, audit: AuditEntry) -> Subscription:
        details = audit_details(audit, subscription)
        async with self._transaction() as conn:
            revision = await _next_revision(conn)
            row = row_values(subscription, revision, _as_is)
            status = await conn.execute(f"{INSERT_SUBSCRIPTION} ON CONFLICT (id) DO NOTHING", *row)
            if status == "INSERT 0 0":
                raise already_exists(subscription.id)
            await _write_audit(conn, audit, details)
        return subscription.with_changes(revision=revision)

    async def insert_many(self, subscriptions: Sequence[Subscription], actor: str) -> int:
        if not subscriptions:
            return 0
        reject_repeated_ids(subscriptions)
        audits = import_audits(subscriptions, actor)
        async with self._transaction() as conn:
            # Taken first: with the revision row locked no other writer can add one of
            # these ids between the check and the insert.
            revision = await _next_revision(conn)
            existing = await conn.fetchval(
                "SELECT id FROM subscriptions WHERE id = ANY($1::text[]) LIMIT 1",
                [sub.id for sub in subscriptions],
            )
            if existing is not None:
                raise already_exists(existing)
            rows = [row_values(sub, revision, _as_is) for sub in subscriptions]
            await conn.executemany(INSERT_SUBSCRIPTION, rows)
            await conn.executemany(
                INSERT_AUDIT,
                [(utc(a.at), a.actor, a.action, a.subscription_id, text) for a, text in audits],
            )
        return len(subscriptions)

    async def update(
        self, subscription: Subscription, expected_revision: int, audit: AuditEntry
    ) -> Subscription:
        details = audit_details(audit, subscription)
        async with self._transaction() as conn:
            revision = await _next_revision(conn)
            row = row_values(subscription, revision, _as_is)
            status = await conn.execute(UPDATE_SUBSCRIPTION, *row, expected_revision)
            if status == "UPDATE 0":
                sub_id = subscription.id
                if await conn.fetchval("SELECT 1 FROM subscriptions WHERE id = $1", sub_id):
                    raise ConcurrentUpdate(
                        f"subscription {sub_id!r} changed after revision {expected_revision}:"
                        " reload and retry"
                    )
                raise SubscriptionNotFound(f"subscription {sub_id!r} not found")
            await _write_audit(conn, audit, details)
        return subscription.with_changes(revision=revision)

    async def get(self, subscription_id: str) -> Subscription | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(f"{SELECT_SUBSCRIPTION} WHERE id = $1", subscription_id)
        return None if row is None else subscription_from_row(row, utc)

    async def list_all(self) -> list[Subscription]:
        async with self._connection() as conn:
            rows = await conn.fetch(f"{SELECT_SUBSCRIPTION} ORDER BY id")
        return [subscription_from_row(row, utc) for row in rows]

    async def changes_since(self, revision: int) -> tuple[list[Subscription], int]:
        # One snapshot for the rows and the counter, so the counter never runs ahead of them.
        async with self._transaction(isolation="repeatable_read", readonly=True) as conn:
            rows = await conn.fetch(
                f"{SELECT_SUBSCRIPTION} WHERE revision > $1 ORDER BY revision, id", revision
            )
            current = await conn.fetchval("SELECT revision FROM store_revision")
        return [subscription_from_row(row, utc) for row in rows], int(current)

    async def audit_log(
        self, subscription_id: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        async with self._connection() as conn:
            if subscription_id is None:
                query = f"{SELECT_AUDIT} ORDER BY id DESC LIMIT $1"
                rows = await conn.fetch(query, limit)
            else:
                query = f"{SELECT_AUDIT} WHERE subscription_id = $1 ORDER BY id DESC LIMIT $2"
                rows = await conn.fetch(query, subscription_id, limit)
        return [audit_from_row(row, utc) for row in rows]

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL subscription store is not open")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_SECONDS) as conn:
                yield conn
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL at {self._where}: {self._reason(exc)}") from None

    @asynccontextmanager
    async def _transaction(self, **options: Any) -> AsyncIterator[Any]:
        async with self._connection() as conn, conn.transaction(**options):
            yield conn

    async def _migrate(self, pool: Any) -> None:
        async with pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                    if self._schema is not None:
                        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY"
                        " KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    current = await conn.fetchval(
                        "SELECT coalesce(max(version), 0) FROM schema_migrations"
                    )
                    migration = next_migration(MIGRATIONS, current, self._where)
                    if migration is None:
                        return
                    for statement in migration.statements:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", migration.version
                    )

    def _reason(self, exc: BaseException) -> str:
        return failure_reason(exc, self._secrets)


async def _next_revision(conn: Any) -> int:
    return int(
        await conn.fetchval("UPDATE store_revision SET revision = revision + 1 RETURNING revision")
    )


async def _write_audit(conn: Any, audit: AuditEntry, details: str) -> None:
    await conn.execute(
        INSERT_AUDIT, utc(audit.at), audit.actor, audit.action, audit.subscription_id, details
    )
