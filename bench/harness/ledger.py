"""Whether the usage ledger kept up, read after the gateway stopped: its rows against the
requests the clients completed, and its log for records it dropped or lost (the harness
reads the files; it does not import aigw)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import yaml

TABLE = "usage_records"  # aigw.ledger.schema.TABLE
# The writer's log lines for records that never reached the database (aigw.ledger.writer).
LOSS_MARKS = ("usage ledger: buffer full", "record(s) lost at shutdown", "refused by the database")


def ledger_file(config: Path) -> Path:
    """The SQLite file of the config's `usage.ledger.url` (relative: to the config's folder);
    OSError if the config has no SQLite ledger."""
    data = yaml.safe_load(config.read_text()) or {}
    url = ((data.get("usage") or {}).get("ledger") or {}).get("url", "")
    if not isinstance(url, str) or not url.startswith("sqlite:"):
        raise OSError(f"{config}: usage.ledger.url is not a SQLite ledger")
    path = Path(url.removeprefix("sqlite:").removeprefix("//"))
    return path if path.is_absolute() else config.parent / path


def ledger_rows(path: Path) -> int:
    """Rows in the ledger file, opened read-only; OSError if it cannot be read."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
    except sqlite3.Error as err:
        raise OSError(f"cannot read the ledger {path}: {err}") from err


def loss_lines(log: Path) -> list[str]:
    """The gateway's log lines saying records were dropped or lost."""
    text = log.read_text(errors="replace")
    return [line for line in text.splitlines() if any(mark in line for mark in LOSS_MARKS)]


def completed_requests(result: Mapping[str, Any]) -> int:
    """Requests the load generators completed against one launch: warm-up, measured runs and
    soak. The preflight and time-to-first-byte probes are left out, so each of these must
    have a row, and a few more rows (probes, requests cut off at the end of a run) are
    expected: a row count alone cannot show a loss, the log lines can."""
    runs = (result.get("runs") or {}).values()
    soak = result.get("soak") or {}
    return (
        int(result.get("warmup_requests", 0))
        + sum(int(r["requests"]) for r in runs)
        + int(soak.get("requests", 0))
    )


def ledger_result(config: Path, log: Path, result: Mapping[str, Any]) -> dict[str, Any]:
    try:
        rows = ledger_rows(ledger_file(config))
        losses = loss_lines(log)
    except OSError as err:
        return {"error": str(err)}
    return {
        "rows": rows,
        "completed_requests": completed_requests(result),
        "loss_lines": losses[:5],
        "losses": len(losses),
    }
