"""The ledger store interface, and the choice of implementation from a URL.

Two siblings implement it, as for subscriptions: SQLite (one file, shared by the workers of
one host) and PostgreSQL (shared by replicas). Writes are idempotent by request id, so a batch
retried after an unclear failure never counts a request twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aigw.ledger.query import ReportSpec, Summary
from aigw.ledger.rows import LedgerRow
from aigw.ledger.schema import LedgerUnavailable

__all__ = ["LedgerStore", "LedgerUnavailable", "open_ledger_store"]


class LedgerStore(Protocol):
    async def open(self) -> None:
        """Connect, then create or migrate the schema. Calling it again does nothing."""

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def write(self, rows: Sequence[LedgerRow]) -> int:
        """Insert the rows in one transaction, skipping request ids already stored; returns
        how many were new. LedgerUnavailable when the database cannot be used."""

    async def summarize(self, spec: ReportSpec) -> Summary:
        """The report's rows and totals, aggregated by the database from one snapshot."""


def open_ledger_store(url: str, base_dir: Path, *, migrate: bool = True) -> LedgerStore:
    """`sqlite:PATH` (relative to `base_dir`, the config file's folder) or `postgresql://…`
    (`?schema=NAME` keeps the table in that schema). Nothing is connected yet. A reader
    (`migrate=False`) needs the ledger to exist and never changes its schema."""
    if url.startswith(("postgresql://", "postgres://")):
        from aigw.ledger.postgres_store import PostgresLedgerStore

        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = [value for key, value in query if key == "schema"]
        rest = urlencode([(key, value) for key, value in query if key != "schema"])
        return PostgresLedgerStore(
            urlunsplit(parts._replace(query=rest)),
            schema=schema[-1] if schema else None,
            migrate=migrate,
        )
    if url.startswith("sqlite:"):
        from aigw.ledger.sqlite_store import SqliteLedgerStore

        path = Path(url.removeprefix("sqlite:").removeprefix("//"))
        return SqliteLedgerStore(path if path.is_absolute() else base_dir / path)
    raise ValueError("ledger url must start with 'sqlite:' or 'postgresql://'")
