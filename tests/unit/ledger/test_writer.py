"""The ledger writer: batching, outages, the buffer bound, drop counting, shutdown.

Most tests run the writer on a real SQLite store and make the outage real: the database file
sits under a path that cannot be created until the test clears it. PostgreSQL outages go
through a TCP forwarder the test cuts. Only the tests of retry edge cases (a commit whose
answer is lost, a write that fails while the buffer fills) use a small double of the store
Protocol: there the writer is the unit under test, not the store.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from pathlib import Path

import pytest

from aigw.ledger.postgres_store import PostgresLedgerStore
from aigw.ledger.prices import PriceTable
from aigw.ledger.query import ReportSpec, Summary
from aigw.ledger.rows import LedgerRow
from aigw.ledger.sqlite_store import SqliteLedgerStore
from aigw.ledger.store import LedgerStore, LedgerUnavailable
from aigw.ledger.writer import WARN_INTERVAL, LedgerWriter
from aigw.telemetry.events import LEDGER_DROPPED_RECORDS, LEDGER_WRITTEN_RECORDS
from aigw.usage.model import Usage
from tests.unit.ledger.conftest import Database
from tests.unit.ledger.records import record
from tests.unit.ledger.tcp_proxy import TcpProxy


class Events:
    """Records `event` calls, as the metrics sinks would count them."""

    def __init__(self) -> None:
        self.counted: list[tuple[str, dict[str, str], float]] = []

    def event(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        self.counted.append((name, dict(labels), amount))

    def total(self, name: str, **labels: str) -> float:
        return sum(a for n, lab, a in self.counted if n == name and lab == labels)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def stored_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as conn:
        try:
            rows = conn.execute("SELECT request_id FROM usage_records ORDER BY 1").fetchall()
        except sqlite3.OperationalError:  # the writer has created the file, not the table yet
            return []
    return [found for (found,) in rows]


def writer_for(store: LedgerStore, events: Events | None = None, **options: float) -> LedgerWriter:
    settings: dict[str, float] = {
        "batch_size": 100,
        "flush_interval": 0.05,
        "max_buffered": 1000,
        "retry_initial": 0.02,
        "retry_max": 0.1,
        "shutdown_timeout": 2.0,
    }
    settings.update(options)
    return LedgerWriter(
        store,
        PriceTable({}),
        batch_size=int(settings.pop("batch_size")),
        max_buffered=int(settings.pop("max_buffered")),
        metrics=events,
        **settings,
    )


class Blockable:
    """A SQLite ledger under a folder that a plain file blocks: opening fails until clear()."""

    def __init__(self, tmp_path: Path) -> None:
        self.blocker = tmp_path / "blocked"
        self.path = self.blocker / "ledger.db"
        self.store = SqliteLedgerStore(self.path)

    def block(self) -> None:
        self.blocker.write_text("not a folder")

    def clear(self) -> None:
        self.blocker.unlink()


async def test_writes_a_full_batch_at_once_and_the_rest_on_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    events = Events()
    writer = writer_for(SqliteLedgerStore(path), events, batch_size=3, flush_interval=0.5)
    await writer.start()
    try:
        for n in range(3):
            writer.request_finished(record(request_id=f"full-{n}"))
        await until(lambda: len(stored_ids(path)) == 3, within=0.4)  # before the interval
        writer.request_finished(record(request_id="partial"))
        await asyncio.sleep(0.1)
        assert "partial" not in stored_ids(path)  # waits for the interval
        await until(lambda: "partial" in stored_ids(path), within=2)
        assert events.total(LEDGER_WRITTEN_RECORDS) == 4
    finally:
        await writer.close()


async def test_only_ledger_requests_are_buffered(tmp_path: Path) -> None:
    writer = writer_for(SqliteLedgerStore(tmp_path / "ledger.db"))
    writer.request_finished(record(status=401, usage=None))
    writer.request_finished(record(api_type="http", operation_id="get", metered=False))
    writer.request_finished(record(status=429, usage=None, reason="TokenLimitExceeded"))
    assert writer.buffered == 1
    await writer.close()


async def test_same_request_id_twice_is_one_row(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    writer = writer_for(SqliteLedgerStore(path))
    await writer.start()
    writer.request_finished(record(request_id="dup"))
    await until(lambda: stored_ids(path) == ["dup"])
    writer.request_finished(record(request_id="dup"))
    await writer.close()
    assert stored_ids(path) == ["dup"]


async def test_outage_keeps_rows_and_writes_them_when_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aigw.ledger")
    db = Blockable(tmp_path)
    db.block()
    events = Events()
    writer = writer_for(db.store, events)
    await writer.start()  # the database is unreachable: starting does not wait or fail
    for n in range(250):
        writer.request_finished(record(request_id=f"r{n:03d}"))
    await asyncio.sleep(0.3)  # several failed attempts, backing off
    assert writer.buffered == 250 and events.total(LEDGER_WRITTEN_RECORDS) == 0
    assert "write failed, retrying" in caplog.text
    db.clear()
    await until(lambda: writer.buffered == 0)
    assert stored_ids(db.path) == [f"r{n:03d}" for n in range(250)]
    assert events.total(LEDGER_WRITTEN_RECORDS) == 250
    assert events.total(LEDGER_DROPPED_RECORDS, reason="buffer-full") == 0
    assert "writing again" in caplog.text
    await writer.close()


async def test_full_buffer_drops_the_oldest_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Blockable(tmp_path)
    db.block()
    events = Events()
    clock = FakeClock()
    writer = writer_for(db.store, events, max_buffered=100, batch_size=10, clock=clock)  # type: ignore[arg-type]
    await writer.start()
    with caplog.at_level(logging.WARNING, "aigw.ledger"):
        for n in range(10_000):  # full throughput during the outage: memory stays bounded
            writer.request_finished(record(request_id=f"r{n:05d}"))
            assert writer.buffered <= 100 + 10  # the buffer and at most one batch in flight
        await asyncio.sleep(0.1)
    dropped = [r for r in caplog.records if "dropped the" in r.getMessage()]
    assert len(dropped) == 1  # one warning per interval, not one per record
    assert events.total(LEDGER_DROPPED_RECORDS, reason="buffer-full") == 9_900
    clock.now += WARN_INTERVAL
    db.clear()
    await until(lambda: writer.buffered == 0)
    assert stored_ids(db.path) == [f"r{n:05d}" for n in range(9_900, 10_000)]  # the newest
    await writer.close()


async def test_close_writes_everything_buffered(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    events = Events()
    writer = writer_for(
        SqliteLedgerStore(path), events, batch_size=500, flush_interval=60, max_buffered=5000
    )
    await writer.start()
    for n in range(1234):
        writer.request_finished(record(request_id=f"r{n:04d}"))
    await writer.close()
    assert len(stored_ids(path)) == 1234 and events.total(LEDGER_WRITTEN_RECORDS) == 1234
    writer.request_finished(record())  # after close: counted as lost, never buffered
    assert writer.buffered == 0 and events.total(LEDGER_DROPPED_RECORDS, reason="shutdown") == 1


async def test_close_during_an_outage_gives_up_in_bounded_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Blockable(tmp_path)
    db.block()
    events = Events()
    writer = writer_for(db.store, events, shutdown_timeout=0.3)
    await writer.start()
    for _ in range(7):
        writer.request_finished(record())
    started = asyncio.get_running_loop().time()
    await writer.close()
    assert asyncio.get_running_loop().time() - started < 2
    assert events.total(LEDGER_DROPPED_RECORDS, reason="shutdown") == 7
    assert "7 record(s) lost at shutdown" in caplog.text


async def test_postgres_outage_and_recovery(pg_database: Database) -> None:
    database = pg_database
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    store = PostgresLedgerStore(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/test", schema=database.schema
    )
    events = Events()
    writer = writer_for(store, events)
    await writer.start()
    try:
        writer.request_finished(record(request_id="before"))
        await until(lambda: events.total(LEDGER_WRITTEN_RECORDS) == 1)
        await proxy.cut()  # the open pool connections die, new ones are refused
        for n in range(50):
            writer.request_finished(record(request_id=f"during-{n:02d}"))
        await asyncio.sleep(0.3)
        assert writer.buffered == 50
        await proxy.start()
        await until(lambda: events.total(LEDGER_WRITTEN_RECORDS) == 51)
    finally:
        await writer.close()
        await proxy.cut()
    ids = [r[0] for r in await database.fetch("SELECT request_id FROM usage_records ORDER BY 1")]
    assert ids == ["before", *(f"during-{n:02d}" for n in range(50))]


class LostAnswer:
    """A store double: the first write commits to the real store, then fails as if the
    connection broke before the answer came (the writer cannot know it was stored)."""

    def __init__(self, real: LedgerStore) -> None:
        self.real = real
        self.failures = 1

    async def open(self) -> None:
        await self.real.open()

    async def close(self) -> None:
        await self.real.close()

    async def schema_version(self) -> int:
        return await self.real.schema_version()

    async def write(self, rows: Sequence[LedgerRow]) -> int:
        written = await self.real.write(rows)
        if self.failures:
            self.failures -= 1
            raise LedgerUnavailable("connection lost after COMMIT")
        return written

    async def summarize(self, spec: ReportSpec) -> Summary:
        return await self.real.summarize(spec)


async def test_retry_after_a_lost_answer_does_not_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    events = Events()
    writer = writer_for(LostAnswer(SqliteLedgerStore(path)), events)
    await writer.start()
    for n in range(5):
        writer.request_finished(record(request_id=f"r{n}"))
    await until(lambda: events.total(LEDGER_WRITTEN_RECORDS) == 5)
    await writer.close()
    assert stored_ids(path) == [f"r{n}" for n in range(5)]


class Stalled:
    """A store double whose write waits until released, then fails."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls: list[list[str]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def schema_version(self) -> int:
        return 1

    async def write(self, rows: Sequence[LedgerRow]) -> int:
        self.calls.append([row.request_id for row in rows])
        self.started.set()
        await self.release.wait()
        raise LedgerUnavailable("down")

    async def summarize(self, spec: ReportSpec) -> Summary:
        raise LedgerUnavailable("down")


async def test_failed_batch_returns_to_the_front_dropping_its_oldest_when_full() -> None:
    store = Stalled()
    events = Events()
    writer = writer_for(store, events, batch_size=4, max_buffered=10, flush_interval=60)
    await writer.start()
    for n in range(4):
        writer.request_finished(record(request_id=f"old{n}"))
    await store.started.wait()  # the batch old0..old3 is being written
    for n in range(8):
        writer.request_finished(record(request_id=f"new{n}"))
    store.release.set()
    await until(lambda: len(store.calls) >= 2)
    # 4 + 8 rows for 10 places: the two oldest of the failed batch were dropped.
    assert events.total(LEDGER_DROPPED_RECORDS, reason="buffer-full") == 2
    assert store.calls[1] == ["old2", "old3", "new0", "new1"]
    writer._shutdown_timeout = 0.1
    await writer.close()
    assert events.total(LEDGER_DROPPED_RECORDS, reason="shutdown") == 10


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        writer_for(Stalled(), batch_size=0)


async def test_a_row_the_database_refuses_is_dropped_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite cannot store an integer above 2**63: that row must not hold up the others."""
    path = tmp_path / "ledger.db"
    events = Events()
    writer = writer_for(SqliteLedgerStore(path), events, batch_size=10, flush_interval=60)
    await writer.start()
    writer.request_finished(record(request_id="good-1"))
    writer.request_finished(record(request_id="refused", usage=Usage(2**64, 0, 2**64)))
    writer.request_finished(record(request_id="good-2"))
    await writer.close()
    assert stored_ids(path) == ["good-1", "good-2"]
    assert events.total(LEDGER_DROPPED_RECORDS, reason="invalid") == 1
    assert events.total(LEDGER_WRITTEN_RECORDS) == 2
    assert any("refused" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


async def test_a_reload_during_an_outage_hands_the_buffer_to_the_new_writer(
    tmp_path: Path,
) -> None:
    db = Blockable(tmp_path)
    db.block()
    old_events, new_events = Events(), Events()
    old = writer_for(db.store, old_events, flush_interval=0.05, shutdown_timeout=0.3)
    new = writer_for(SqliteLedgerStore(db.path), new_events, flush_interval=0.05)
    await old.start()
    await new.start()
    for n in range(5):
        old.request_finished(record(request_id=f"before-reload-{n}"))
    old.hand_over_to(new)
    await old.close()  # the database is still down: nothing is lost, the new writer has it
    assert old_events.total(LEDGER_DROPPED_RECORDS, reason="shutdown") == 0
    assert new.buffered == 5
    db.clear()
    await until(lambda: new.buffered == 0)
    assert stored_ids(db.path) == [f"before-reload-{n}" for n in range(5)]
    await new.close()
