"""The report's question (`ReportSpec`) and the SQL that answers it, for either dialect.

Aggregation happens in the database: one GROUP BY query for the rows and the same query
grouped by currency alone for the totals, so both sum the same integers and always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aigw.ledger.schema import TABLE

# Group-by names (as the report shows them) → the column they read.
COLUMN_KEYS: dict[str, str] = {
    "subscription": "subscription_id",
    "product": "product_id",
    "user": "user_id",
    "model": "model",
    "deployment": "deployment",
    "api": "api_id",
    "operation": "operation_id",
    "backend": "backend_id",
    "reason": "reason",
    "status": "status",
}
TIME_KEYS = ("day", "hour")  # UTC
GROUP_KEYS: tuple[str, ...] = (*COLUMN_KEYS, *TIME_KEYS)
# A report bigger than this is refused: narrow the span or the grouping instead.
MAX_ROWS = 100_000

Key = str | int | None


@dataclass(frozen=True, slots=True)
class ReportSpec:
    start: datetime  # aware UTC, inclusive
    end: datetime  # aware UTC, exclusive
    group_by: tuple[str, ...]
    filters: tuple[tuple[str, str | int], ...] = ()  # (group key, value): equality


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One report row (or a currency's total): its keys in `group_by` order."""

    keys: tuple[Key, ...]
    currency: str | None
    requests: int
    errors: int  # status >= 400
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_nanos: int | None  # None: unpriced (currency None)


@dataclass(frozen=True, slots=True)
class Dialect:
    placeholder: Callable[[int], str]  # 1-based parameter number → its marker
    day: str  # SQL giving the UTC day of started_at as YYYY-MM-DD
    hour: str  # … and its UTC hour as YYYY-MM-DDTHH:00:00Z


_SUMS = (
    "count(*)",
    "sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END)",
    "sum(prompt_tokens)",
    "sum(completion_tokens)",
    "sum(cached_tokens)",
    "sum(reasoning_tokens)",
    "sum(total_tokens)",
    "sum(cost_nanos)",
)


def summary_sql(
    spec: ReportSpec, dialect: Dialect, grouped: bool, time_param: Callable[[datetime], Any]
) -> tuple[str, list[Any]]:
    """The query and its parameters: grouped by the spec's keys and currency, or (for the
    totals) by currency alone."""
    keys = [_key_sql(key, dialect) for key in spec.group_by] if grouped else []
    keys.append("currency")
    params: list[Any] = [time_param(spec.start), time_param(spec.end)]
    where = [
        f"started_at >= {dialect.placeholder(1)}",
        f"started_at < {dialect.placeholder(2)}",
    ]
    for name, value in spec.filters:
        params.append(value)
        where.append(f"{COLUMN_KEYS[name]} = {dialect.placeholder(len(params))}")
    positions = ", ".join(str(i) for i in range(1, len(keys) + 1))
    # NULLs last in both dialects (SQLite sorts them first by default).
    order = ", ".join(f"({key}) IS NULL, {key}" for key in keys)
    # Names and expressions come from COLUMN_KEYS and the dialect; values are parameters.
    sql = (
        f"SELECT {', '.join(keys)}, {', '.join(_SUMS)} FROM {TABLE}"  # noqa: S608
        f" WHERE {' AND '.join(where)} GROUP BY {positions} ORDER BY {order}"
    )
    if grouped:
        sql += f" LIMIT {MAX_ROWS + 1}"
    return sql, params


def aggregate_of(row: Sequence[Any], key_count: int) -> Aggregate:
    """A result row of `summary_sql` (PostgreSQL sums bigints as numeric: int() them)."""
    sums = row[key_count + 1 :]
    return Aggregate(
        keys=tuple(row[:key_count]),
        currency=row[key_count],
        requests=int(sums[0]),
        errors=int(sums[1]),
        prompt_tokens=int(sums[2]),
        completion_tokens=int(sums[3]),
        cached_tokens=int(sums[4]),
        reasoning_tokens=int(sums[5]),
        total_tokens=int(sums[6]),
        cost_nanos=None if sums[7] is None else int(sums[7]),
    )


def _key_sql(key: str, dialect: Dialect) -> str:
    if key == "day":
        return dialect.day
    if key == "hour":
        return dialect.hour
    return COLUMN_KEYS[key]


@dataclass(frozen=True, slots=True)
class Summary:
    """A report's rows and its per-currency totals, read from one snapshot."""

    rows: list[Aggregate]
    totals: list[Aggregate]
