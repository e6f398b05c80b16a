"""A report as JSON (the admin API's and the dashboard's shape), CSV, or an aligned table."""

from __future__ import annotations

import csv
import io
from typing import Any

from aigw.ledger.query import Aggregate
from aigw.ledger.report import Report, format_cost, iso_utc

COUNTS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
)


def to_document(report: Report) -> dict[str, Any]:
    """`{"from", "to", "group_by", "rows": [...], "totals": [...]}`; a row holds its group
    keys by name, the counts, `cost` (exact decimal text; null when unpriced) and `currency`."""
    spec = report.spec
    rows = []
    for row in report.rows:
        item: dict[str, Any] = dict(zip(spec.group_by, row.keys, strict=True))
        item.update(_measures(row))
        item["currency"] = row.currency
        rows.append(item)
    totals = [{"currency": total.currency, **_measures(total)} for total in report.totals]
    return {
        "from": iso_utc(spec.start),
        "to": iso_utc(spec.end),
        "group_by": list(spec.group_by),
        "rows": rows,
        "totals": totals,
    }


def to_csv(report: Report) -> str:
    """The rows only (a spreadsheet sums them; the totals are in the JSON and the table)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*report.spec.group_by, "currency", *COUNTS, "cost"])
    for row in report.rows:
        measures = _measures(row)
        writer.writerow(
            [
                *(_cell(key) for key in row.keys),
                row.currency or "",
                *(measures[name] for name in COUNTS),
                measures["cost"] or "",
            ]
        )
    return out.getvalue()


def _cell(key: object) -> object:
    """A group key for a spreadsheet. Keys can come from callers (a model name): one that
    starts like a formula is prefixed with `'`, so a spreadsheet shows it as text."""
    if key is None:
        return ""
    if isinstance(key, str) and key.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + key
    return key


def to_table(report: Report) -> str:
    """Aligned columns for a terminal: the rows, then a TOTAL line per currency."""
    spec = report.spec
    headers = [name.upper() for name in spec.group_by]
    headers += ["CURRENCY", "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "CACHED"]
    headers += ["REASONING", "TOTAL TOKENS", "COST"]
    width = len(spec.group_by)
    lines = [_cells(list(row.keys), row) for row in report.rows]
    label = ["TOTAL", *([""] * (width - 1))] if width else []
    totals = [_cells(list(label), total) for total in report.totals]
    if not totals:
        totals = [[*label, "-", *("0" for _ in COUNTS), "-"]]
    table = [headers, *lines, *totals]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    numeric = set(range(width + 1, len(headers)))

    def render(line: list[str]) -> str:
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    heading = f"Usage from {iso_utc(spec.start)} to {iso_utc(spec.end)} (UTC, 'to' excluded)"
    if not width:  # no grouping: the rows are the totals
        return "\n".join([heading, "", render(headers), *map(render, totals)])
    rule = "  ".join("-" * w for w in widths)
    body = [render(line) for line in lines] or ["(no requests)"]
    return "\n".join([heading, "", render(headers), *body, rule, *map(render, totals)])


def _measures(row: Aggregate) -> dict[str, Any]:
    return {
        "requests": row.requests,
        "errors": row.errors,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cached_tokens": row.cached_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "total_tokens": row.total_tokens,
        "cost": format_cost(row.cost_nanos),
    }


def _cells(keys: list[Any], row: Aggregate) -> list[str]:
    measures = _measures(row)
    return [
        *("-" if key is None else str(key) for key in keys),
        row.currency or "-",
        *(str(measures[name]) for name in COUNTS),
        measures["cost"] or "-",
    ]
