"""Both subscription stores, against one set of tests: SQLite in a temporary folder and the
real PostgreSQL server (a fresh schema per test)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from aigw.subscriptions import sqlite_store
from aigw.subscriptions.directory import SubscriptionDirectory
from aigw.subscriptions.keys import hash_key
from aigw.subscriptions.model import AuditEntry, Scope, Subscription
from aigw.subscriptions.postgres_store import PostgresStore
from aigw.subscriptions.sqlite_store import SqliteStore
from aigw.subscriptions.store import (
    ConcurrentUpdate,
    DuplicateSubscription,
    StoreUnavailable,
    SubscriptionNotFound,
    SubscriptionStore,
)
from tests.unit.postgres_urls import MISREAD_URLS, PASSWORD_PIECES

PG_URL = os.environ.get("AIGW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


class Backend:
    """Opens store objects on one database, as separate gateway replicas would."""

    def __init__(self, name: str, path: Path | None = None, schema: str | None = None) -> None:
        self.name, self.path, self.schema = name, path, schema
        self.opened: list[SubscriptionStore] = []

    def make(self) -> SubscriptionStore:
        if self.path is not None:
            return SqliteStore(self.path)
        return PostgresStore(PG_URL, schema=self.schema)

    async def open(self) -> SubscriptionStore:
        store = self.make()
        self.opened.append(store)
        await store.open()
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()

    async def sql(self, statement: str) -> None:
        """Runs one statement on the database behind the store's back."""
        if self.path is not None:
            with closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
                conn.execute(statement)
            return
        conn = await asyncpg.connect(PG_URL, server_settings={"search_path": str(self.schema)})
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        backend = Backend("sqlite", path=tmp_path / "data" / "subscriptions.db")
        yield backend
        await backend.close_all()
        return
    # No skip when the server is missing: CI starts PostgreSQL, and a silently skipped half
    # of the store tests would hide a broken store.
    admin = await asyncpg.connect(PG_URL, timeout=3)
    backend = Backend("postgres", schema=f"aigw_test_{uuid.uuid4().hex[:12]}")
    try:
        yield backend
    finally:
        await backend.close_all()
        await admin.execute(f"DROP SCHEMA IF EXISTS {backend.schema} CASCADE")
        await admin.close()


@pytest.fixture
async def store(backend: Backend) -> SubscriptionStore:
    return await backend.open()


def make_sub(sub_id: str, **changes: object) -> Subscription:
    sub = Subscription(
        id=sub_id,
        display_name=f"Team {sub_id}",
        scope=Scope("product", "starter"),
        state="active",
        created_at=T0,
        updated_at=T0,
        primary_key_hash=hash_key(f"{sub_id}-primary"),
        secondary_key_hash=hash_key(f"{sub_id}-secondary"),
    )
    return sub.with_changes(**changes)


def entry(sub: Subscription, action: str = "create", **details: object) -> AuditEntry:
    return AuditEntry(sub.updated_at, "admin@example.com", action, sub.id, dict(details))


async def current_revision(store: SubscriptionStore) -> int:
    return (await store.changes_since(0))[1]


async def test_open_creates_the_latest_schema_and_opening_again_changes_nothing(
    backend: Backend,
) -> None:
    store = await backend.open()
    assert await store.schema_version() == 1
    await store.open()  # already open: a no-op
    again = await backend.open()
    assert await again.schema_version() == 1
    assert await again.list_all() == []


async def test_two_stores_opening_a_new_database_at_once_both_succeed(backend: Backend) -> None:
    first, second = await asyncio.gather(backend.open(), backend.open())
    assert [await first.schema_version(), await second.schema_version()] == [1, 1]
    await first.insert(make_sub("a"), entry(make_sub("a")))
    assert [sub.id for sub in await second.list_all()] == ["a"]


async def test_reopening_keeps_the_data(backend: Backend) -> None:
    store = await backend.open()
    stored = await store.insert(make_sub("a"), entry(make_sub("a")))
    await store.close()
    await store.close()  # closing twice is fine
    reopened = await backend.open()
    assert await reopened.get("a") == stored
    assert await reopened.schema_version() == 1


async def test_insert_get_and_list_round_trip_every_field(store: SubscriptionStore) -> None:
    full = make_sub(
        "b-full",
        display_name="Full ünïcode",
        scope=Scope("api", "chat"),
        state="suspended",
        owner_id="user-7",
        expires_at=datetime(2027, 1, 2, 3, 4, 5, 999999, tzinfo=UTC),
        created_at=T0,
        updated_at=T0 + timedelta(microseconds=1),
        state_comment="paused by ops",
    )
    # A time given in another zone comes back as the same instant in UTC.
    plus_two = timezone(timedelta(hours=2))
    bare = make_sub("a-bare", scope=Scope("all"), created_at=T0.astimezone(plus_two))

    stored_full = await store.insert(full, entry(full))
    stored_bare = await store.insert(bare, entry(bare))

    assert stored_full == full.with_changes(revision=stored_full.revision)
    assert stored_full.revision > 0
    got_full, got_bare = await store.get("b-full"), await store.get("a-bare")
    assert got_full == stored_full
    assert got_bare is not None
    assert got_bare == stored_bare
    assert (got_bare.owner_id, got_bare.expires_at, got_bare.state_comment) == (None, None, None)
    assert got_bare.scope == Scope("all")
    for value in (
        got_full.created_at,
        got_full.updated_at,
        got_full.expires_at,
        got_bare.created_at,
    ):
        assert value is not None
        assert value.utcoffset() == timedelta(0)
    assert got_full.updated_at.microsecond == 123457
    assert await store.list_all() == [got_bare, got_full]
    assert await store.get("missing") is None


async def test_a_naive_datetime_is_refused(store: SubscriptionStore) -> None:
    naive = make_sub("a", created_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        await store.insert(naive, entry(naive))
    assert await store.list_all() == []


async def test_inserting_an_existing_id_fails_and_writes_nothing(store: SubscriptionStore) -> None:
    first = await store.insert(make_sub("a"), entry(make_sub("a")))
    revision = await current_revision(store)
    other = make_sub("a", display_name="Impostor")
    with pytest.raises(DuplicateSubscription, match="'a' already exists"):
        await store.insert(other, entry(other))
    assert await store.get("a") == first
    assert len(await store.audit_log("a")) == 1
    assert await current_revision(store) == revision


async def test_update_with_the_current_revision_replaces_the_row(store: SubscriptionStore) -> None:
    stored = await store.insert(make_sub("a"), entry(make_sub("a")))
    changed = stored.with_changes(state="suspended", state_comment="late payment")
    updated = await store.update(changed, stored.revision, entry(changed, "suspend"))
    assert updated.revision > stored.revision
    assert updated == changed.with_changes(revision=updated.revision)
    assert await store.get("a") == updated


async def test_update_with_a_stale_revision_is_a_conflict(store: SubscriptionStore) -> None:
    stored = await store.insert(make_sub("a"), entry(make_sub("a")))
    first = stored.with_changes(display_name="First")
    updated = await store.update(first, stored.revision, entry(first, "rename"))
    second = stored.with_changes(display_name="Second")
    with pytest.raises(ConcurrentUpdate):
        await store.update(second, stored.revision, entry(second, "rename"))
    assert await store.get("a") == updated
    assert [e.action for e in await store.audit_log("a")] == ["rename", "create"]


async def test_update_of_a_missing_id_is_not_found(store: SubscriptionStore) -> None:
    ghost = make_sub("ghost")
    with pytest.raises(SubscriptionNotFound):
        await store.update(ghost, 1, entry(ghost, "rename"))
    assert await store.audit_log() == []
    assert await current_revision(store) == 0


async def test_revisions_increase_and_changes_since_returns_what_changed(
    store: SubscriptionStore,
) -> None:
    a = await store.insert(make_sub("a"), entry(make_sub("a")))
    b = await store.insert(make_sub("b"), entry(make_sub("b")))
    c = await store.insert(make_sub("c"), entry(make_sub("c")))
    assert a.revision < b.revision < c.revision
    b2 = await store.update(b.with_changes(state="cancelled"), b.revision, entry(b, "cancel"))
    assert b2.revision > c.revision

    assert await store.changes_since(c.revision) == ([b2], b2.revision)
    assert await store.changes_since(0) == ([a, c, b2], b2.revision)
    assert await store.changes_since(b2.revision) == ([], b2.revision)


async def test_every_change_is_audited_newest_first_without_key_hashes(
    store: SubscriptionStore,
) -> None:
    sub = make_sub("a")
    stored = await store.insert(sub, entry(sub, scope="/products/starter"))
    renamed = stored.with_changes(display_name="Renamed")
    renamed = await store.update(renamed, stored.revision, entry(renamed, "rename", to="Renamed"))
    rekeyed = renamed.with_changes(primary_key_hash=hash_key("new-primary"))
    await store.update(rekeyed, renamed.revision, entry(rekeyed, "regenerate-key", slot="primary"))
    await store.insert(make_sub("b"), entry(make_sub("b")))

    log = await store.audit_log("a")
    assert [(e.action, e.details) for e in log] == [
        ("regenerate-key", {"slot": "primary"}),
        ("rename", {"to": "Renamed"}),
        ("create", {"scope": "/products/starter"}),
    ]
    assert log[0].at == T0 and log[0].at.utcoffset() == timedelta(0)
    assert log[0].actor == "admin@example.com"
    assert [e.subscription_id for e in await store.audit_log()] == ["b", "a", "a", "a"]
    assert [e.action for e in await store.audit_log(limit=2)] == ["create", "regenerate-key"]

    text = json.dumps([e.public() for e in await store.audit_log()])
    for key_hash in (sub.primary_key_hash, sub.secondary_key_hash, hash_key("new-primary")):
        assert key_hash not in text


async def test_audit_details_quoting_a_key_hash_are_refused(store: SubscriptionStore) -> None:
    sub = make_sub("a")
    with pytest.raises(ValueError, match="key hash"):
        await store.insert(sub, entry(sub, leaked=sub.secondary_key_hash))
    assert await store.get("a") is None
    assert await store.audit_log() == []


async def test_insert_many_imports_ten_thousand_rows_in_one_revision(
    store: SubscriptionStore,
) -> None:
    before = await current_revision(store)
    subs = [make_sub(f"bulk-{n:05d}") for n in range(10_000)]
    assert await store.insert_many(subs, "importer") == 10_000
    changed, current = await store.changes_since(before)
    assert len(changed) == 10_000
    assert {sub.revision for sub in changed} == {current}
    assert changed[0] == subs[0].with_changes(revision=current)
    log = await store.audit_log(limit=3)
    assert [(e.actor, e.action, e.subscription_id) for e in log] == [
        ("importer", "import", "bulk-09999"),
        ("importer", "import", "bulk-09998"),
        ("importer", "import", "bulk-09997"),
    ]
    assert log[0].details == {
        "displayName": "Team bulk-09999",
        "scope": "/products/starter",
        "state": "active",
    }
    assert await store.insert_many([], "importer") == 0


async def test_insert_many_with_a_taken_or_repeated_id_imports_nothing(
    store: SubscriptionStore,
) -> None:
    await store.insert(make_sub("b"), entry(make_sub("b")))
    revision = await current_revision(store)
    with pytest.raises(DuplicateSubscription, match="'b'"):
        await store.insert_many([make_sub("a"), make_sub("b"), make_sub("c")], "importer")
    with pytest.raises(DuplicateSubscription, match="'x' appears twice"):
        await store.insert_many([make_sub("x"), make_sub("y"), make_sub("x")], "importer")
    assert [sub.id for sub in await store.list_all()] == ["b"]
    assert len(await store.audit_log()) == 1
    assert await current_revision(store) == revision


async def test_two_replicas_follow_each_others_writes(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    seen_by_two = await current_revision(two)
    a = await one.insert(make_sub("a"), entry(make_sub("a")))
    changed, seen_by_two = await two.changes_since(seen_by_two)
    assert changed == [a]

    a2 = await two.update(a.with_changes(state="suspended"), a.revision, entry(a, "suspend"))
    assert await one.changes_since(a.revision) == ([a2], a2.revision)
    with pytest.raises(ConcurrentUpdate):
        await one.update(a.with_changes(display_name="late"), a.revision, entry(a, "rename"))
    assert await two.changes_since(seen_by_two) == ([a2], a2.revision)


async def test_a_local_write_never_hides_an_earlier_write_of_another_replica(
    backend: Backend,
) -> None:
    """Replica one applies its own write at once; that must not move its place in the
    change feed past a write of replica two that it has not fetched yet."""
    one = SubscriptionDirectory(backend.make(), refresh_interval=60)
    await one.start()
    try:
        two = await backend.open()
        a = await two.insert(make_sub("a"), entry(make_sub("a")))
        await one.refresh()
        assert one.index.find("a-primary") == a
        # Replica two suspends `a`; before replica one polls, it makes a change of its own.
        await two.update(a.with_changes(state="suspended"), a.revision, entry(a, "suspend"))
        b = await one.store.insert(make_sub("b"), entry(make_sub("b")))
        one.index.apply([b])
        await one.refresh()
        found = one.index.find("a-primary")
        assert found is not None and found.state == "suspended"
    finally:
        await one.close()


async def test_a_database_from_a_newer_aigw_is_refused(backend: Backend) -> None:
    store = await backend.open()
    await store.close()
    await backend.sql(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (99, '2030-01-01T00:00:00Z')"
    )
    with pytest.raises(StoreUnavailable, match="schema version 99, newer than the 1"):
        await backend.open()


async def test_a_closed_store_refuses_calls(store: SubscriptionStore) -> None:
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.get("a")


async def test_postgres_connect_failure_names_the_server_but_not_the_password() -> None:
    store = PostgresStore("postgresql://postgres:s3cretpw@127.0.0.1:1/test")
    with pytest.raises(StoreUnavailable) as failed:
        await store.open()
    message = str(failed.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1/test: ")
    assert "s3cretpw" not in message
    # Nothing chained that a traceback would print, and that might quote the URL.
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    await store.close()


@pytest.mark.parametrize("url", MISREAD_URLS)
async def test_postgres_misread_url_is_unavailable_without_any_piece_of_it(url: str) -> None:
    store = PostgresStore(url)
    with pytest.raises(StoreUnavailable) as failed:
        await store.open()
    message = str(failed.value)
    assert message.startswith("cannot connect to PostgreSQL at (unparseable URL): ")
    assert "percent-encode" in message
    assert not any(piece in message for piece in PASSWORD_PIECES)


async def test_postgres_driver_refusing_an_option_is_not_quoted() -> None:
    # asyncpg's message quotes the option's value, which may be a piece of the URL.
    store = PostgresStore(f"{PG_URL}?target_session_attrs=Tail-0f-S3cret")
    with pytest.raises(StoreUnavailable) as failed:
        await store.open()
    assert "refused the URL or one of its options" in str(failed.value)
    assert "Tail-0f-S3cret" not in str(failed.value)


def test_postgres_refuses_a_schema_name_it_would_have_to_quote() -> None:
    with pytest.raises(ValueError, match="schema name"):
        PostgresStore(PG_URL, schema='x"; DROP TABLE y; --')


async def test_sqlite_folder_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    path = tmp_path / "file" / "subscriptions.db"
    with pytest.raises(StoreUnavailable, match=f"cannot open the SQLite store {path}"):
        await SqliteStore(path).open()


async def test_sqlite_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.db"
    path.write_bytes(b"definitely not sqlite " * 100)
    with pytest.raises(StoreUnavailable, match="not a database"):
        await SqliteStore(path).open()


async def test_sqlite_store_uses_wal_so_processes_can_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "subscriptions.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_write_blocked_past_the_busy_timeout_is_unavailable_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_SECONDS", 0.05)
    path = tmp_path / "subscriptions.db"
    store = SqliteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    with pytest.raises(StoreUnavailable, match="database is locked"):
        await store.insert(make_sub("a"), entry(make_sub("a")))
    other.execute("ROLLBACK")
    other.close()
    assert (await store.insert(make_sub("a"), entry(make_sub("a")))).revision == 1
    await store.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_connection_lost_mid_write_is_unavailable_and_writes_nothing(
    backend: Backend,
) -> None:
    store = await backend.open()
    locker = await asyncpg.connect(PG_URL, server_settings={"search_path": str(backend.schema)})
    try:
        async with locker.transaction():
            # Hold the revision row so the store's write waits, then kill its server process.
            await locker.execute("SELECT revision FROM store_revision FOR UPDATE")
            insert = asyncio.create_task(store.insert(make_sub("a"), entry(make_sub("a"))))
            blocked = None
            while blocked is None:
                await asyncio.sleep(0.01)
                blocked = await locker.fetchval(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                )
            await locker.execute("SELECT pg_terminate_backend($1)", blocked)
            with pytest.raises(StoreUnavailable, match=r"^PostgreSQL at \S+: "):
                await insert
    finally:
        await locker.close()
    assert await store.get("a") is None  # and the pool has replaced the dead connection
