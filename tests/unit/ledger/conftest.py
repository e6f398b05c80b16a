"""Both ledger stores for the same tests: SQLite in a temporary folder and the real
PostgreSQL server (a fresh schema per test, dropped afterwards)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from aigw.ledger.postgres_store import PostgresLedgerStore
from aigw.ledger.sqlite_store import SqliteLedgerStore
from aigw.ledger.store import LedgerStore

PG_URL = os.environ.get("AIGW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class Database:
    """One ledger database; opens store objects on it as separate workers would."""

    def __init__(self, kind: str, path: Path | None = None, schema: str | None = None) -> None:
        self.kind, self.path, self.schema = kind, path, schema
        self.opened: list[LedgerStore] = []

    def make(self) -> LedgerStore:
        if self.path is not None:
            return SqliteLedgerStore(self.path)
        return PostgresLedgerStore(PG_URL, schema=self.schema)

    async def open(self) -> LedgerStore:
        store = self.make()
        self.opened.append(store)
        await store.open()
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()

    async def fetch(self, query: str) -> list[tuple[Any, ...]]:
        """Runs a query on the database behind the store's back."""
        if self.path is not None:
            with closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
                return conn.execute(query).fetchall()
        conn = await asyncpg.connect(PG_URL, server_settings={"search_path": str(self.schema)})
        try:
            return [tuple(row) for row in await conn.fetch(query)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = Database("sqlite", path=tmp_path / "data" / "ledger.db")
        yield db
        await db.close_all()
        return
    async with postgres_database() as db:
        yield db


@pytest.fixture
async def pg_database() -> AsyncIterator[Database]:
    async with postgres_database() as db:
        yield db


@asynccontextmanager
async def postgres_database() -> AsyncIterator[Database]:
    # No skip when the server is missing: a silently skipped half would hide a broken store.
    admin = await asyncpg.connect(PG_URL, timeout=3)
    db = Database("postgres", schema=f"aigw_ledger_{uuid.uuid4().hex[:12]}")
    try:
        yield db
    finally:
        await db.close_all()
        await admin.execute(f"DROP SCHEMA IF EXISTS {db.schema} CASCADE")
        await admin.close()


@pytest.fixture
async def store(database: Database) -> LedgerStore:
    return await database.open()
