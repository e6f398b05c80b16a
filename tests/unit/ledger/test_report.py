"""The report: its arguments, its SQL aggregation on both stores, exact reconciliation of
any grouping with the totals, and the three output formats."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aigw.config.model import PriceConfig
from aigw.ledger import query, report
from aigw.ledger.formats import to_csv, to_document, to_table
from aigw.ledger.prices import PriceTable
from aigw.ledger.query import GROUP_KEYS, Aggregate, ReportSpec
from aigw.ledger.report import ReportError, format_cost, parse_spec, usage_report
from aigw.ledger.rows import LedgerRow
from aigw.ledger.store import LedgerStore
from aigw.usage.model import Usage
from tests.unit.ledger.records import at, row

PRICES = PriceTable(
    {
        "gpt-4o": PriceConfig(input=Decimal("2.5"), cached_input=Decimal("1.25"), output=10),
        "gpt-4o-mini": PriceConfig(input=Decimal("0.15"), output=Decimal("0.6")),
        "eu-deployment": PriceConfig(input=Decimal("0.33"), output=1, currency="EUR"),
    }
)


# -- arguments -------------------------------------------------------------------------


def test_dates_and_datetimes() -> None:
    spec = parse_spec("2026-11-01", "2026-11-02T06:30:00+02:00", ["subscription,model", "day"])
    assert spec.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert spec.end == datetime(2026, 11, 2, 4, 30, tzinfo=UTC)
    assert spec.group_by == ("subscription", "model", "day")
    naive = parse_spec("2026-11-01T10:00:00", "2026-11-01T11:00:00Z")
    assert naive.start == datetime(2026, 11, 1, 10, tzinfo=UTC) and naive.group_by == ()


@pytest.mark.parametrize(
    ("start", "end", "group_by", "message"),
    [
        (None, "2026-11-02", [], "both 'from' and 'to' are required"),
        ("2026-13-01", "2026-11-02", [], "invalid 'from'"),
        ("2026-11-01", "yesterday", [], "invalid 'to'"),
        ("2026-11-02", "2026-11-02", [], "must be before"),
        ("2026-11-03", "2026-11-02", [], "must be before"),
        ("2020-01-01", "2026-11-02", [], "limited to 400 days"),
        ("2026-11-01", "2026-11-02", ["tenant"], "unknown group-by key 'tenant'"),
        ("2026-11-01", "2026-11-02", ["model,model"], "given twice"),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    start: str | None, end: str | None, group_by: list[str], message: str
) -> None:
    with pytest.raises(ReportError, match=message):
        parse_spec(start, end, group_by)


def test_filters() -> None:
    spec = parse_spec("2026-11-01", "2026-11-02", [], {"subscription": "a", "status": "429"})
    assert spec.filters == (("subscription", "a"), ("status", 429))
    with pytest.raises(ReportError, match="cannot filter on 'day'"):
        parse_spec("2026-11-01", "2026-11-02", [], {"day": "2026-11-01"})
    with pytest.raises(ReportError, match="HTTP status code"):
        parse_spec("2026-11-01", "2026-11-02", [], {"status": "bad"})


def test_currency_is_always_a_key_and_may_be_named() -> None:
    assert parse_spec("2026-11-01", "2026-11-02", ["currency,model"]).group_by == ("model",)


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (None, None),
        (0, "0.00"),
        (123_000, "0.000123"),
        (1_500_000_000, "1.50"),
        (12_345_678_901, "12.345678901"),
        (10**19, "10000000000.00"),
    ],
)
def test_cost_text_is_exact(nanos: int | None, text: str | None) -> None:
    assert format_cost(nanos) == text


# -- aggregation and reconciliation ----------------------------------------------------


def _random_rows(seed: int, count: int) -> list[LedgerRow]:
    rand = random.Random(seed)
    made = []
    for n in range(count):
        prompt = rand.randint(0, 5000)
        completion = rand.randint(0, 2000)
        usage = Usage(
            prompt,
            completion,
            prompt + completion,
            cached_tokens=rand.randint(0, prompt),
            reasoning_tokens=rand.randint(0, completion),
        )
        status = rand.choice([200, 200, 200, 429, 403, 500])
        made.append(
            row(
                PRICES,
                request_id=f"r{seed}-{n}",
                started_at=at(hours=rand.uniform(-30, 60)),
                subscription_id=rand.choice(["sub-a", "sub-b", "sub-c", None]),
                product_id=rand.choice(["starter", "premium"]),
                user_id=rand.choice([None, "alice", "bob"]),
                model=rand.choice(["gpt-4o", "gpt-4o-mini", "unpriced-model", None]),
                deployment=rand.choice([None, "eu-deployment"]),
                status=status,
                reason=None if status == 200 else f"Reason{status}",
                usage=usage if status == 200 else None,
                backend_id=rand.choice(["east", "west"]),
            )
        )
    return made


SUMMED = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
)


def _sum_by_currency(rows: list[Aggregate]) -> dict[str | None, tuple[int | None, ...]]:
    sums: dict[str | None, list[int | None]] = {}
    for item in rows:
        acc = sums.setdefault(item.currency, [0] * (len(SUMMED) + 1))
        for i, name in enumerate(SUMMED):
            acc[i] = int(acc[i] or 0) + getattr(item, name)
        cost = item.cost_nanos
        acc[-1] = None if cost is None else int(acc[-1] or 0) + cost
    return {currency: tuple(values) for currency, values in sums.items()}


async def test_every_grouping_reconciles_exactly_with_the_totals(store: LedgerStore) -> None:
    rows = _random_rows(7, 600)
    for start in range(0, len(rows), 150):
        await store.write(rows[start : start + 150])
    groupings = [[key] for key in GROUP_KEYS] + [
        ["subscription", "model", "day"],
        ["product", "user", "hour", "status"],
        list(GROUP_KEYS),
    ]
    spec_base = parse_spec("2026-11-26T12:00:00Z", "2026-11-29")
    expected_totals = None
    for group_by in groupings:
        spec = ReportSpec(spec_base.start, spec_base.end, tuple(group_by))
        result = await usage_report(store, spec)
        totals = {t.currency: t for t in result.totals}
        assert _sum_by_currency(result.rows) == _sum_by_currency(result.totals), group_by
        assert set(totals) == {"USD", "EUR", None}
        assert totals[None].cost_nanos is None and totals["USD"].cost_nanos
        if expected_totals is None:
            expected_totals = result.totals
        assert result.totals == expected_totals  # the same whatever the grouping
    # … and equal to the rows themselves, summed in Python here only to check the SQL.
    inside = [r for r in rows if spec_base.start <= r.started_at < spec_base.end]
    assert expected_totals is not None
    usd = next(t for t in expected_totals if t.currency == "USD")
    assert usd.cost_nanos == sum(r.cost_nanos or 0 for r in inside if r.currency == "USD")
    assert sum(t.requests for t in expected_totals) == len(inside)
    assert sum(t.errors for t in expected_totals) == sum(r.status >= 400 for r in inside)


async def test_too_many_rows_is_refused(
    store: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.write([row(request_id=f"r{n}", user_id=f"u{n}") for n in range(5)])
    monkeypatch.setattr(query, "MAX_ROWS", 3)
    monkeypatch.setattr(report, "MAX_ROWS", 3)
    with pytest.raises(ReportError, match="more than 3 rows"):
        await usage_report(store, parse_spec("2026-11-27", "2026-11-28", ["user"]))


# -- formats ---------------------------------------------------------------------------


def _sample() -> report.Report:
    spec = parse_spec("2026-11-27", "2026-11-28", ["day", "subscription"])

    def agg(keys: tuple[str | None, ...], currency: str | None, cost: int | None) -> Aggregate:
        return Aggregate(keys, currency, 3, 1, 10, 5, 2, 1, 15, cost)

    rows = [
        agg(("2026-11-27", "sub1"), "USD", 123_000),
        agg(("2026-11-27", None), None, None),
    ]
    totals = [agg((), "USD", 123_000), agg((), None, None)]
    return report.Report(spec, rows, totals)


def test_json_document_shape() -> None:
    document = to_document(_sample())
    assert json.loads(json.dumps(document)) == {
        "from": "2026-11-27T00:00:00Z",
        "to": "2026-11-28T00:00:00Z",
        "group_by": ["day", "subscription"],
        "rows": [
            {
                "day": "2026-11-27",
                "subscription": "sub1",
                "requests": 3,
                "errors": 1,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cached_tokens": 2,
                "reasoning_tokens": 1,
                "total_tokens": 15,
                "cost": "0.000123",
                "currency": "USD",
            },
            {
                "day": "2026-11-27",
                "subscription": None,
                "requests": 3,
                "errors": 1,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cached_tokens": 2,
                "reasoning_tokens": 1,
                "total_tokens": 15,
                "cost": None,
                "currency": None,
            },
        ],
        "totals": [
            {
                "currency": "USD",
                "requests": 3,
                "errors": 1,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cached_tokens": 2,
                "reasoning_tokens": 1,
                "total_tokens": 15,
                "cost": "0.000123",
            },
            {
                "currency": None,
                "requests": 3,
                "errors": 1,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cached_tokens": 2,
                "reasoning_tokens": 1,
                "total_tokens": 15,
                "cost": None,
            },
        ],
    }


def test_csv_has_a_header_and_the_rows() -> None:
    parsed = list(csv.reader(io.StringIO(to_csv(_sample()))))
    assert parsed[0] == [
        "day",
        "subscription",
        "currency",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost",
    ]
    assert parsed[1] == [
        "2026-11-27",
        "sub1",
        "USD",
        "3",
        "1",
        "10",
        "5",
        "2",
        "1",
        "15",
        "0.000123",
    ]
    assert parsed[2][:3] == ["2026-11-27", "", ""] and parsed[2][-1] == ""
    assert len(parsed) == 3


def test_table_is_aligned_with_totals() -> None:
    lines = to_table(_sample()).splitlines()
    assert (
        lines[0] == "Usage from 2026-11-27T00:00:00Z to 2026-11-28T00:00:00Z (UTC, 'to' excluded)"
    )
    header, first, second, rule, total_usd, total_none = lines[2:]
    assert header.split() == [
        "DAY",
        "SUBSCRIPTION",
        "CURRENCY",
        "REQUESTS",
        "ERRORS",
        "PROMPT",
        "COMPLETION",
        "CACHED",
        "REASONING",
        "TOTAL",
        "TOKENS",
        "COST",
    ]
    assert first.split()[:3] == ["2026-11-27", "sub1", "USD"] and first.endswith("0.000123")
    assert second.split()[:3] == ["2026-11-27", "-", "-"]
    assert set(rule) == {"-", " "}
    assert total_usd.split()[:2] == ["TOTAL", "USD"] and total_none.split()[:2] == ["TOTAL", "-"]
    # Numbers are right-aligned: the cost column ends at the same place on every line.
    assert len({len(line) for line in (header, first, total_usd)}) == 1


def test_table_of_nothing() -> None:
    empty = report.Report(parse_spec("2026-11-27", "2026-11-28", ["model"]), [], [])
    text = to_table(empty)
    assert "(no requests)" in text and text.splitlines()[-1].split()[0] == "TOTAL"
    ungrouped = to_table(report.Report(parse_spec("2026-11-27", "2026-11-28"), [], []))
    assert "(no requests)" not in ungrouped and ungrouped.splitlines()[-1].split()[0] == "-"


def test_csv_keys_that_look_like_formulas_stay_text() -> None:
    spec = parse_spec("2026-11-27", "2026-11-28", ["model"])
    rows = [
        Aggregate((key,), None, 1, 0, 1, 1, 0, 0, 2, None)
        for key in ("=HYPERLINK(1)", "+1", "-2", "@SUM(A1)", "gpt-4o")
    ]
    parsed = list(csv.reader(io.StringIO(to_csv(report.Report(spec, rows, [])))))
    assert [line[0] for line in parsed[1:]] == [
        "'=HYPERLINK(1)",
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "gpt-4o",
    ]
