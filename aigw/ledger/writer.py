"""`LedgerWriter`: the request sink that puts ledger rows into the database in batches.

`request_finished` runs on the event loop for every request, so it only filters, builds the
row and appends it to a bounded buffer. A background task writes batches every
`flush_interval`, or as soon as `batch_size` rows wait. While the database is unreachable the
rows stay buffered and the writes are retried with back-off; when the buffer is full the
oldest rows are dropped, logged and counted, so memory stays bounded whatever the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from aigw.config.model import GatewayConfig
from aigw.ledger.prices import PriceTable
from aigw.ledger.rows import LedgerRow, belongs_in_ledger, ledger_row
from aigw.ledger.schema import LedgerUnavailable
from aigw.ledger.store import LedgerStore, open_ledger_store
from aigw.telemetry.events import LEDGER_DROPPED_RECORDS, LEDGER_WRITTEN_RECORDS
from aigw.telemetry.record import RequestRecord

log = logging.getLogger("aigw.ledger")

# Shutdown waits this long for the database before giving the buffered rows up.
SHUTDOWN_TIMEOUT = 5.0
# At most one warning per this many seconds about failed writes or dropped rows.
WARN_INTERVAL = 60.0


class EventCounter(Protocol):
    """Where the writer counts written and dropped rows: any MetricsSink, or the telemetry
    hub that fans events out to all of them."""

    def event(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None: ...


def ledger_url(config: GatewayConfig) -> str:
    """The ledger's database: `usage.ledger.url`, else the subscription store's."""
    return config.usage.ledger.url or config.store.url


def build_ledger(
    config: GatewayConfig, base_dir: Path, metrics: EventCounter | None
) -> LedgerWriter | None:
    """The writer for this config (not started, nothing connected), or None when the ledger
    is disabled. A relative SQLite path is relative to `base_dir`, the config's folder.
    ValueError for a URL it cannot use (e.g. an invalid `?schema=` name)."""
    settings = config.usage.ledger
    if not settings.enabled:
        return None
    return LedgerWriter(
        open_ledger_store(ledger_url(config), base_dir),
        PriceTable(config.usage.prices),
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        max_buffered=settings.max_buffered,
        metrics=metrics,
    )


class LedgerWriter:
    def __init__(
        self,
        store: LedgerStore,
        prices: PriceTable,
        *,
        batch_size: int,
        flush_interval: float,
        max_buffered: int,
        metrics: EventCounter | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1 or max_buffered < 1 or flush_interval <= 0:
            raise ValueError("batch_size and max_buffered must be >= 1, flush_interval > 0")
        self.store = store
        self.prices = prices
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_buffered = max_buffered
        self._metrics = metrics
        self._retry_initial, self._retry_max = retry_initial, retry_max
        self._shutdown_timeout = shutdown_timeout
        self._clock = clock
        # Rows waiting to be written, oldest first. A batch being written is out of it; if
        # the write fails it goes back to the front (see _give_back).
        # Records wait as they are: they become rows (priced) in a thread when written, off
        # the request's path (at low load that thread runs while the loop waits on I/O).
        self._buffer: deque[RequestRecord] = deque()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._retry_delay = 0.0
        self._failing = False
        self._closed = False
        self._successor: LedgerWriter | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._dropped_unreported = 0
        self._last_drop_warning = float("-inf")
        self._last_failure_warning = float("-inf")

    @property
    def buffered(self) -> int:
        """Rows not yet stored: waiting, or in the batch being written."""
        return len(self._buffer) + self._in_flight

    # -- the sink ------------------------------------------------------------------------

    def request_finished(self, record: RequestRecord) -> None:
        if not belongs_in_ledger(record):
            return
        if self._closed:  # a request that outlived its runtime: nothing writes any more
            self._count(LEDGER_DROPPED_RECORDS, {"reason": "shutdown"}, 1)
            return
        self._add(record)

    def _add(self, row: RequestRecord) -> None:
        if len(self._buffer) >= self._max_buffered:
            self._buffer.popleft()
            self._dropped(1, "buffer-full")
        self._buffer.append(row)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    # -- lifetime ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background writer. The database is opened by it, with retries: an
        unreachable ledger never stops the gateway from starting."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="aigw-ledger-writer")

    def hand_over_to(self, successor: LedgerWriter) -> None:
        """At a reload to a config with the same ledger: what is still buffered when this
        writer closes goes to `successor` instead (during an outage it would be lost)."""
        self._successor = successor

    async def close(self) -> None:
        """Write everything buffered, waiting up to `shutdown_timeout` for the database;
        what is still unwritten then is logged and counted as lost. With a successor, the
        buffer goes to it instead."""
        self._closed = True
        successor, self._successor = self._successor, None
        if successor is not None and not successor._closed:
            await self._stop_task()
            while self._buffer:
                successor._add(self._buffer.popleft())
            with contextlib.suppress(Exception):
                await self.store.close()
            self._stop_thread()
            return
        deadline = self._clock() + self._shutdown_timeout
        await self._stop_task()
        while self._buffer and self._clock() < deadline:
            written = await self._write_next(within=max(deadline - self._clock(), 0.01))
            if not written and self._buffer:
                await asyncio.sleep(min(0.2, max(deadline - self._clock(), 0)))
        if self._buffer:
            lost = len(self._buffer)
            self._buffer.clear()
            log.error("usage ledger: %d record(s) lost at shutdown: database unavailable", lost)
            self._count(LEDGER_DROPPED_RECORDS, {"reason": "shutdown"}, lost)
        self._report_drops(force=True)
        with contextlib.suppress(Exception):
            await self.store.close()
        self._stop_thread()

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)

    async def _stop_task(self) -> None:
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            # On time-out the task is cancelled mid-write: its batch goes back to the buffer.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, self._shutdown_timeout)

    # -- the background task -------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stop.is_set():
            if self._retry_delay:
                # Backing off: neither a full batch nor the interval cuts the wait short.
                await _wait(self._stop, self._retry_delay)
            else:
                await _wait(self._wake, self._flush_interval)
                self._wake.clear()
            if self._stop.is_set():
                return  # close() writes what is left, within its deadline
            await self._drain()

    async def _drain(self) -> None:
        """Write what waits, then more batches while full ones wait (a busy gateway); a
        partial one waits for the next interval. Stop at the first failure."""
        threshold = 1
        while len(self._buffer) >= threshold and not self._stop.is_set():
            if not await self._write_next():
                self._retry_delay = min(
                    max(self._retry_delay * 2, self._retry_initial), self._retry_max
                )
                return
            self._retry_delay = 0.0
            threshold = self._batch_size
        self._report_drops()

    async def _write_next(self, within: float | None = None) -> bool:
        """Write the oldest batch; False (with the batch back in the buffer) if that failed."""
        batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
        self._in_flight = len(batch)
        written: int | None = len(batch)
        try:
            await asyncio.wait_for(self._write(batch), within)
        except asyncio.CancelledError:
            self._give_back(batch)
            raise
        except LedgerUnavailable as exc:  # an outage: the whole batch waits for the retry
            self._give_back(batch)
            self._warn_failure(exc)
            return False
        except Exception as exc:  # the database refused a row: never let it block the rest
            log.warning("usage ledger: a batch was refused (%s); writing it row by row", exc)
            written = await self._write_one_by_one(batch)
        finally:
            self._in_flight = 0
        if written is None:
            return False
        # Stored now: rows an earlier, unclear attempt committed count here (the store
        # skipped them), once.
        self._count(LEDGER_WRITTEN_RECORDS, {}, written)
        if self._failing:
            self._failing = False
            log.info("usage ledger: writing again (%d record(s) waiting)", len(self._buffer))
        return True

    async def _write_one_by_one(self, batch: list[RequestRecord]) -> int | None:
        """Write a refused batch row by row; a row refused alone is dropped (`invalid`).
        The rows written, or None after an outage (the rest is back in the buffer)."""
        written = 0
        for index, row in enumerate(batch):
            try:
                await self._write([row])
            except LedgerUnavailable as exc:
                self._give_back(batch[index:])
                self._warn_failure(exc)
                return None
            except Exception as exc:
                log.error(
                    "usage ledger: record %s refused by the database, dropped: %s",
                    row.request_id,
                    exc if str(exc) else type(exc).__name__,
                )
                self._count(LEDGER_DROPPED_RECORDS, {"reason": "invalid"}, 1)
            else:
                written += 1
        return written

    async def _write(self, batch: list[RequestRecord]) -> None:
        await self.store.open()  # does nothing once open; after an outage it reconnects
        if self._thread is None:  # one thread: see SqliteLedgerStore._in_thread
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="aigw-ledger-rows")
        loop = asyncio.get_running_loop()
        await self.store.write(await loop.run_in_executor(self._thread, self._rows, batch))

    def _rows(self, batch: list[RequestRecord]) -> list[LedgerRow]:
        return [ledger_row(record, self.prices) for record in batch]

    def _give_back(self, batch: list[RequestRecord]) -> None:
        """Put a failed batch back at the front. Rows that arrived meanwhile may have filled
        the buffer: then the batch's own oldest rows are the ones dropped."""
        overflow = len(self._buffer) + len(batch) - self._max_buffered
        if overflow > 0:
            batch = batch[overflow:]
            self._dropped(overflow, "buffer-full")
        self._buffer.extendleft(reversed(batch))

    # -- reporting -----------------------------------------------------------------------

    def _dropped(self, count: int, reason: str) -> None:
        self._count(LEDGER_DROPPED_RECORDS, {"reason": reason}, count)
        self._dropped_unreported += count
        self._report_drops()

    def _report_drops(self, force: bool = False) -> None:
        now = self._clock()
        if self._dropped_unreported and (force or now - self._last_drop_warning >= WARN_INTERVAL):
            log.warning(
                "usage ledger: buffer full (%d records): dropped the %d oldest record(s)",
                self._max_buffered,
                self._dropped_unreported,
            )
            self._dropped_unreported = 0
            self._last_drop_warning = now

    def _warn_failure(self, exc: Exception) -> None:
        self._failing = True
        now = self._clock()
        if now - self._last_failure_warning >= WARN_INTERVAL:
            log.warning(
                "usage ledger: write failed, retrying (%d record(s) buffered): %s",
                len(self._buffer),
                exc if str(exc) else type(exc).__name__,
            )
            self._last_failure_warning = now

    def _count(self, name: str, labels: Mapping[str, str], amount: int) -> None:
        if self._metrics is not None and amount:
            self._metrics.event(name, labels, amount)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
