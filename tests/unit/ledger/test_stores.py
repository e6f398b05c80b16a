"""Both ledger stores: schema, idempotent batch writes, SQL aggregation, failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from aigw.config.model import PriceConfig
from aigw.ledger.postgres_store import PostgresLedgerStore
from aigw.ledger.prices import PriceTable
from aigw.ledger.query import ReportSpec
from aigw.ledger.sqlite_store import SqliteLedgerStore
from aigw.ledger.store import LedgerStore, LedgerUnavailable, open_ledger_store
from aigw.subscriptions.sqlite_store import SqliteStore
from aigw.usage.model import Usage
from tests.unit.ledger.conftest import PG_URL, Database
from tests.unit.ledger.records import T0, at, row
from tests.unit.postgres_urls import MISREAD_URLS, PASSWORD_PIECES

PRICES = PriceTable({"gpt-4o-mini": PriceConfig(input=Decimal("0.15"), output=Decimal("0.60"))})
DAY = ReportSpec(datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC), ())


async def test_open_creates_the_schema_once(database: Database) -> None:
    first = await database.open()
    second = await database.open()  # another worker on the same database
    await first.open()  # again: nothing happens
    assert await first.schema_version() == await second.schema_version() == 1
    tables = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if database.kind == "sqlite"
        else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )
    names = {name for (name,) in await database.fetch(tables)}
    assert {"usage_records", "ledger_schema_migrations"} <= names


async def test_write_is_idempotent_by_request_id(store: LedgerStore, database: Database) -> None:
    batch = [row(request_id="a"), row(request_id="b")]
    assert await store.write(batch) == 2
    # A retried batch (its first write committed, the answer was lost) adds nothing.
    assert await store.write([*batch, row(request_id="c")]) == 1
    # Repeated ids inside one batch are fine too.
    assert await store.write([row(request_id="d"), row(request_id="d")]) == 1
    assert await store.write([]) == 0
    ids = await database.fetch("SELECT request_id FROM usage_records ORDER BY request_id")
    assert [found for (found,) in ids] == ["a", "b", "c", "d"]


async def test_row_values_round_trip(store: LedgerStore, database: Database) -> None:
    usage = Usage(10, 5, 15, cached_tokens=2, reasoning_tokens=1, source="estimated")
    await store.write(
        [
            row(PRICES, request_id="priced", usage=usage, client_request_id="x1", cache_hit=True),
            row(PRICES, request_id="free", model="other", status=429, usage=None, reason="R"),
        ]
    )
    found = await database.fetch(
        "SELECT request_id, started_at, prompt_tokens, completion_tokens, cached_tokens,"
        " reasoning_tokens, total_tokens, usage_source, cache_hit, status, reason,"
        " client_disconnected, duration_ms, ttfb_ms, cost_nanos, currency, client_request_id"
        " FROM usage_records ORDER BY request_id"
    )
    free, priced = found
    started = priced[1]
    if database.kind == "sqlite":
        assert started == "2026-11-27T10:30:00.123456+00:00"  # sortable text, microseconds
    else:
        assert started == T0
    assert priced[2:8] == (10, 5, 2, 1, 15, "estimated")
    assert bool(priced[8]) is True and priced[9] == 200 and bool(priced[11]) is False
    assert (priced[12], priced[13]) == (250.0, 50.0)
    assert (priced[14], priced[15], priced[16]) == (4_500, "USD", "x1")  # 10*0.15 + 5*0.60
    assert free[2:8] == (0, 0, 0, 0, 0, None) and free[9:11] == (429, "R")
    assert (free[14], free[15]) == (None, None)


async def test_summarize_groups_in_sql(store: LedgerStore) -> None:
    await store.write(
        [
            row(PRICES, subscription_id="a", started_at=at(hours=0)),
            row(PRICES, subscription_id="a", started_at=at(hours=1)),
            row(PRICES, subscription_id="b", started_at=at(hours=1), status=429, usage=None),
            row(PRICES, subscription_id=None, model="unpriced", started_at=at(hours=2)),
            row(PRICES, subscription_id="a", started_at=at(days=1)),  # outside the day
            row(PRICES, subscription_id="a", started_at=at(days=-1)),  # before it
        ]
    )
    spec = ReportSpec(DAY.start, DAY.end, ("subscription", "hour"))
    summary = await store.summarize(spec)
    got = [(r.keys, r.currency, r.requests, r.errors, r.total_tokens) for r in summary.rows]
    assert got == [
        (("a", "2026-11-27T10:00:00Z"), "USD", 1, 0, 15),
        (("a", "2026-11-27T11:00:00Z"), "USD", 1, 0, 15),
        (("b", "2026-11-27T11:00:00Z"), "USD", 1, 1, 0),
        ((None, "2026-11-27T12:00:00Z"), None, 1, 0, 15),  # NULLs sort last
    ]
    assert [(t.currency, t.requests, t.cost_nanos) for t in summary.totals] == [
        ("USD", 3, 2 * 4_500),
        (None, 1, None),
    ]
    by_day = await store.summarize(ReportSpec(at(days=-1), at(days=2), ("day", "status")))
    assert [(r.keys, r.requests) for r in by_day.rows if r.currency == "USD"] == [
        (("2026-11-26", 200), 1),
        (("2026-11-27", 200), 2),
        (("2026-11-27", 429), 1),
        (("2026-11-28", 200), 1),
    ]


async def test_summarize_filters_and_bounds(store: LedgerStore) -> None:
    await store.write(
        [
            row(subscription_id="a", started_at=DAY.start),  # `from` is included
            row(subscription_id="a", started_at=DAY.end),  # `to` is not
            row(subscription_id="b", started_at=DAY.start, status=403, usage=None),
        ]
    )
    only_a = ReportSpec(DAY.start, DAY.end, ("model",), (("subscription", "a"),))
    summary = await store.summarize(only_a)
    assert [(r.keys, r.requests) for r in summary.rows] == [(("gpt-4o-mini",), 1)]
    forbidden = ReportSpec(DAY.start, DAY.end, ("subscription",), (("status", 403),))
    assert [r.keys for r in (await store.summarize(forbidden)).rows] == [("b",)]
    empty = await store.summarize(ReportSpec(at(days=5), at(days=6), ("subscription",)))
    assert empty.rows == [] and empty.totals == []


async def test_shares_a_database_with_the_subscription_store(tmp_path: Path) -> None:
    # The default ledger url is the subscription store's: their version tables must differ.
    path = tmp_path / "aigw.db"
    subscriptions = SqliteStore(path)
    await subscriptions.open()
    ledger = SqliteLedgerStore(path)
    await ledger.open()
    try:
        assert await subscriptions.schema_version() == 1
        assert await ledger.schema_version() == 1
        assert await ledger.write([row()]) == 1
    finally:
        await ledger.close()
        await subscriptions.close()


async def test_concurrent_writers_on_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    stores = [SqliteLedgerStore(path) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        batches = [[row(request_id=f"w{i}-{n}") for n in range(200)] for i in range(4)]
        written = await asyncio.gather(
            *(store.write(batch) for store, batch in zip(stores, batches, strict=True))
        )
        assert written == [200] * 4
        totals = (await stores[0].summarize(ReportSpec(at(-1), at(1), ()))).totals
        assert [t.requests for t in totals] == [800]
    finally:
        for store in stores:
            await store.close()


async def test_newer_schema_is_refused(database: Database) -> None:
    store = await database.open()
    await store.close()
    inserted = (
        "INSERT INTO ledger_schema_migrations (version, applied_at) VALUES (99, '2030-01-01')"
    )
    if database.kind == "sqlite":
        await database.fetch(inserted)
    else:
        await database.fetch("INSERT INTO ledger_schema_migrations (version) VALUES (99)")
    with pytest.raises(LedgerUnavailable, match="schema version 99"):
        await database.open()


async def test_unusable_sqlite_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    store = SqliteLedgerStore(tmp_path / "dir.db")
    with pytest.raises(LedgerUnavailable, match="cannot open the SQLite ledger"):
        await store.open()
    with pytest.raises(LedgerUnavailable, match="not open"):
        await store.write([row()])


async def test_unreachable_postgres_is_unavailable_without_the_password() -> None:
    store = PostgresLedgerStore("postgresql://aigw:s3cret-pw@127.0.0.1:9/test")
    with pytest.raises(LedgerUnavailable) as caught:
        await store.open()
    assert "127.0.0.1:9/test" in str(caught.value) and "s3cret-pw" not in str(caught.value)


@pytest.mark.parametrize("url", MISREAD_URLS)
async def test_a_misread_postgres_url_is_unavailable_without_any_piece_of_it(url: str) -> None:
    store = PostgresLedgerStore(url)
    with pytest.raises(LedgerUnavailable) as caught:
        await store.open()
    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at (unparseable URL): ")
    assert not any(piece in message for piece in PASSWORD_PIECES)


def test_open_ledger_store_from_urls(tmp_path: Path) -> None:
    sqlite = open_ledger_store("sqlite:data/ledger.db", tmp_path)
    assert isinstance(sqlite, SqliteLedgerStore)
    assert sqlite.path == tmp_path / "data" / "ledger.db"
    absolute = open_ledger_store(f"sqlite:{tmp_path}/x.db", Path("/elsewhere"))
    assert isinstance(absolute, SqliteLedgerStore) and absolute.path == tmp_path / "x.db"
    pg = open_ledger_store(f"{PG_URL}?schema=billing&sslmode=disable", tmp_path)
    assert isinstance(pg, PostgresLedgerStore) and pg._schema == "billing"
    assert pg._url.endswith("/test?sslmode=disable")
    with pytest.raises(ValueError, match="schema"):
        open_ledger_store(f"{PG_URL}?schema=Bad-Name", tmp_path)
    with pytest.raises(ValueError, match="must start with"):
        open_ledger_store("mysql://x", tmp_path)
