"""What the SQLite stores (subscriptions, usage ledger) share: WAL mode, transactions, and
which errors mean the database file itself is unusable."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal


def use_wal(conn: sqlite3.Connection, within: float) -> None:
    # Switching a new file to WAL takes an exclusive lock, and when two openers try at once
    # SQLite reports "locked" at once instead of waiting on the busy timeout: retry until it.
    deadline = time.monotonic() + within
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


@contextmanager
def transaction(
    conn: sqlite3.Connection, mode: Literal["IMMEDIATE", "DEFERRED"] = "IMMEDIATE"
) -> Iterator[None]:
    # Writers begin IMMEDIATE: taking the write lock up front waits politely on the busy
    # timeout, where upgrading a read lock later could fail outright with "database locked".
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def means_unavailable(exc: sqlite3.DatabaseError) -> bool:
    # Locked, unreadable, full, corrupt or not a database at all: the file is the problem.
    # Constraint and API-misuse errors are bugs and keep their own type.
    return type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError)
