"""The cross-charging report: usage and cost over a time range, grouped as asked.

`parse_spec` checks what a person typed (CLI or admin API) and says clearly what is wrong;
`usage_report` asks the store, which aggregates in SQL. Every row is also split by currency,
and the totals (one per currency) come from the same query without the grouping, so the rows
of any grouping add up exactly to them: all sums are integers, costs in nano-units.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from aigw.ledger.query import (
    COLUMN_KEYS,
    GROUP_KEYS,
    MAX_ROWS,
    Aggregate,
    ReportSpec,
)
from aigw.ledger.store import LedgerStore

MAX_SPAN = timedelta(days=400)
_NANOS = 1_000_000_000


class ReportError(ValueError):
    """A report request that cannot be answered as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Report:
    spec: ReportSpec
    rows: list[Aggregate]
    totals: list[Aggregate]  # one per currency (None: unpriced requests)


async def usage_report(store: LedgerStore, spec: ReportSpec) -> Report:
    """Raises ReportError when the answer would have more than MAX_ROWS rows, and the
    store's LedgerUnavailable when the database cannot be read."""
    summary = await store.summarize(spec)
    if len(summary.rows) > MAX_ROWS:
        raise ReportError(
            f"the report has more than {MAX_ROWS} rows: "
            "choose a shorter span or fewer group-by keys"
        )
    return Report(spec, summary.rows, summary.totals)


def parse_spec(
    start: str | None,
    end: str | None,
    group_by: Iterable[str] = (),
    filters: Mapping[str, str] | None = None,
) -> ReportSpec:
    """From text: `start`/`end` ISO-8601 dates or date-times (UTC when no zone; `end` is
    exclusive), group-by names (each may be comma-separated), `filters` {group key: value}."""
    if not start or not end:
        raise ReportError("both 'from' and 'to' are required (ISO 8601, e.g. 2026-11-01)")
    first, last = parse_time(start, "from"), parse_time(end, "to")
    if first >= last:
        raise ReportError(f"'from' ({iso_utc(first)}) must be before 'to' ({iso_utc(last)})")
    if last - first > MAX_SPAN:
        raise ReportError(f"the span from 'from' to 'to' is limited to {MAX_SPAN.days} days")
    return ReportSpec(first, last, parse_group_by(group_by), _filters(filters or {}))


def parse_time(text: str, name: str) -> datetime:
    text = text.strip()
    try:
        if len(text) == 10:  # a date: its midnight, UTC
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        value = datetime.fromisoformat(text)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ReportError(
            f"invalid '{name}' {text[:40]!r}: use an ISO 8601 date or date-time, "
            "e.g. 2026-11-01 or 2026-11-01T12:00:00Z"
        ) from None
    return value


def parse_group_by(values: Iterable[str]) -> tuple[str, ...]:
    keys: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name or name == "currency":  # rows are always split by currency
                continue
            if name not in GROUP_KEYS:
                raise ReportError(
                    f"unknown group-by key {name[:40]!r}; known: {', '.join(GROUP_KEYS)}"
                )
            if name in keys:
                raise ReportError(f"group-by key {name!r} is given twice")
            keys.append(name)
    return tuple(keys)


def _filters(filters: Mapping[str, str]) -> tuple[tuple[str, str | int], ...]:
    parsed: list[tuple[str, str | int]] = []
    for name, value in filters.items():
        if name not in COLUMN_KEYS:
            raise ReportError(f"cannot filter on {name[:40]!r}; filters: {', '.join(COLUMN_KEYS)}")
        if name == "status":
            if not value.isdigit() or len(value) > 3:
                raise ReportError(f"status filter must be an HTTP status code, not {value[:40]!r}")
            parsed.append((name, int(value)))
        else:
            parsed.append((name, value))
    return tuple(parsed)


def format_cost(nanos: int | None) -> str | None:
    """Exact decimal text: nine decimals, trailing zeros trimmed to at least two."""
    if nanos is None:
        return None
    sign = "-" if nanos < 0 else ""
    units, fraction = divmod(abs(nanos), _NANOS)
    digits = f"{fraction:09d}".rstrip("0").ljust(2, "0")
    return f"{sign}{units}.{digits}"


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
