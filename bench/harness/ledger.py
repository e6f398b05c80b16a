"""Whether the usage ledger kept up: its rows, read after the gateway stopped, against the
requests the clients completed (the harness reads the file; it does not import aigw)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

TABLE = "usage_records"  # aigw.ledger.schema.TABLE


def ledger_rows(path: Path) -> int:
    """Rows in the ledger file, opened read-only; OSError if it cannot be read."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
    except sqlite3.Error as err:
        raise OSError(f"cannot read the ledger {path}: {err}") from err


def completed_requests(result: Mapping[str, Any]) -> int:
    """Requests the load generators completed against one launch: warm-up, measured runs and
    soak. The preflight and time-to-first-byte probes are left out, so every one of these
    must have a row, and a few more rows (probes, requests cut off at the end of a run) are
    expected."""
    runs = (result.get("runs") or {}).values()
    soak = result.get("soak") or {}
    return (
        int(result.get("warmup_requests", 0))
        + sum(int(r["requests"]) for r in runs)
        + int(soak.get("requests", 0))
    )
