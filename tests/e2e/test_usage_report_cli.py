"""`aigw usage report` on a ledger database filled through the store API: SQLite next to the
config file, and PostgreSQL in a private schema. All three formats, totals that reconcile,
and clear failures (exit 2 for bad arguments, 1 without a traceback when the DB is down)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from aigw.config.model import PriceConfig
from aigw.ledger.postgres_store import PostgresLedgerStore
from aigw.ledger.prices import PriceTable
from aigw.ledger.rows import LedgerRow, ledger_row
from aigw.ledger.sqlite_store import SqliteLedgerStore
from aigw.ledger.store import LedgerStore
from aigw.telemetry.record import RequestRecord
from aigw.usage.model import Usage
from tests.e2e.helpers import CHAT_BODY, MODEL, base_config
from tests.support import REPO, DemoBackend, Gateway

PG_URL = os.environ.get("AIGW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
PRICES = {
    "gpt-4o": {"input": "2.50", "cached-input": "1.25", "output": "10.00"},
    "gpt-4o-mini": {"input": "0.15", "output": "0.60"},
    "eu-chat": {"input": "0.20", "output": "0.80", "currency": "EUR"},
}
COUNTS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
)


def write_config(folder: Path, ledger_url: str) -> Path:
    config = {
        "store": {"url": "sqlite:subscriptions.db"},
        "usage": {"ledger": {"url": ledger_url}, "prices": PRICES},
        "backends": {"demo": {"url": "http://127.0.0.1:9"}},
        "apis": {"chat": {"type": "openai", "path": "", "backend": "demo"}},
    }
    path = folder / "aigw.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def usage_rows() -> list[LedgerRow]:
    prices = PriceTable(
        {
            name: PriceConfig.model_validate({k.replace("-", "_"): v for k, v in p.items()})
            for name, p in PRICES.items()
        }
    )
    made = []
    plan = [
        # subscription, model, deployment, hours after T0, status, prompt, completion, cached
        ("team-a", "gpt-4o", None, 0, 200, 1200, 300, 200),
        ("team-a", "gpt-4o", None, 1, 200, 800, 100, 0),
        ("team-a", "gpt-4o-mini", None, 2, 200, 5000, 2000, 0),
        ("team-b", "gpt-4o-mini", None, 3, 429, 0, 0, 0),
        ("team-b", "gpt-4o", None, 26, 200, 100, 50, 0),  # the next day
        ("team-b", None, "eu-chat", 4, 200, 1000, 1000, 0),
        ("team-c", "llama-local", None, 5, 200, 700, 70, 0),  # unpriced
    ]
    for n, (sub, model, deployment, hours, status, prompt, completion, cached) in enumerate(plan):
        usage = Usage(prompt, completion, prompt + completion, cached_tokens=cached)
        record = RequestRecord(
            request_id=f"req-{n}",
            client_request_id=None,
            started_at=T0 + timedelta(hours=hours),
            started=0.0,
            method="POST",
            api_id="chat",
            api_type="openai",
            operation_id="chat-completions",
            subscription_id=sub,
            product_id="starter",
            user_id=None,
            deployment=deployment,
            model=model,
            backend_id="demo",
            client_ip="127.0.0.1",
            status=status,
            reason="TokenLimitExceeded" if status == 429 else None,
            shadow_rejections=(),
            client_disconnected=False,
            duration=0.1,
            time_to_first_byte=None,
            usage=None if status != 200 else usage,
            metered=True,
            cache_hit=False,
        )
        made.append(ledger_row(record, prices))
    return made


def fill(store: LedgerStore) -> None:
    async def work() -> None:
        await store.open()
        try:
            await store.write(usage_rows())
            await store.write(usage_rows())  # again: idempotent, nothing doubles
        finally:
            await store.close()

    asyncio.run(work())


def report(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigw", "usage", "report", "--config", str(config), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def report_json(config: Path, *args: str) -> dict[str, Any]:
    result = report(config, *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.fixture(scope="module")
def sqlite_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("usage-cli")
    config = write_config(folder, "sqlite:data/ledger.db")  # relative to the config's folder
    fill(SqliteLedgerStore(folder / "data" / "ledger.db"))
    return config


@pytest.fixture(scope="module")
def pg_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    schema = f"aigw_usage_cli_{uuid.uuid4().hex[:12]}"
    config = write_config(tmp_path_factory.mktemp("usage-cli-pg"), f"{PG_URL}?schema={schema}")
    fill(PostgresLedgerStore(PG_URL, schema=schema))
    yield config

    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "postgres"])
def config(request: pytest.FixtureRequest) -> Path:
    name = "sqlite_config" if request.param == "sqlite" else "pg_config"
    path: Path = request.getfixturevalue(name)
    return path


def test_json_by_subscription_reconciles_exactly(config: Path) -> None:
    document = report_json(
        config, "--from", "2026-11-27", "--to", "2026-11-29", "--group-by", "subscription"
    )
    rows = document["rows"]
    totals = document["totals"]
    assert isinstance(rows, list) and isinstance(totals, list)
    assert document["group_by"] == ["subscription"]
    assert [(r["subscription"], r["currency"], r["requests"]) for r in rows] == [
        ("team-a", "USD", 3),
        ("team-b", "EUR", 1),
        ("team-b", "USD", 2),
        ("team-c", None, 1),
    ]
    # team-a: gpt-4o 1000 uncached * 2.50 + 200 cached * 1.25 + 300 * 10 = 0.00575,
    # 800 * 2.50 + 100 * 10 = 0.003; gpt-4o-mini 5000 * 0.15 + 2000 * 0.60 = 0.00195.
    assert rows[0]["cost"] == "0.0107"
    assert rows[1]["cost"] == "0.001"  # 1000 * 0.20 + 1000 * 0.80, in EUR
    assert rows[3]["cost"] is None  # unpriced: no cost, no currency
    by_currency = {t["currency"]: t for t in totals}
    assert set(by_currency) == {"USD", "EUR", None}
    for currency, total in by_currency.items():
        mine = [r for r in rows if r["currency"] == currency]
        for name in COUNTS:
            assert sum(r[name] for r in mine) == total[name], (currency, name)
        if currency is not None:
            nanos = sum(int(Decimal(r["cost"]) * 10**9) for r in mine)
            assert nanos == int(Decimal(total["cost"]) * 10**9)
    assert by_currency["USD"]["requests"] == 5 and by_currency["USD"]["errors"] == 1
    assert by_currency["USD"]["cost"] == "0.01145"  # + team-b: 100 * 2.50 + 50 * 10 = 0.00075


def test_group_by_day_and_model_with_a_filter(config: Path) -> None:
    document = report_json(
        config,
        "--from", "2026-11-27", "--to", "2026-11-29",
        "--group-by", "day", "--group-by", "model",
        "--filter", "subscription=team-b",
    )  # fmt: skip
    rows = document["rows"]
    assert isinstance(rows, list)
    got = [(r["day"], r["model"], r["currency"], r["requests"]) for r in rows]
    assert got == [
        ("2026-11-27", "gpt-4o-mini", "USD", 1),
        ("2026-11-27", None, "EUR", 1),
        ("2026-11-28", "gpt-4o", "USD", 1),
    ]


def test_csv(config: Path) -> None:
    result = report(
        config,
        "--from",
        "2026-11-27",
        "--to",
        "2026-11-28",
        "--group-by",
        "model,status",
        "--format",
        "csv",
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0])[:3] == ["model", "status", "currency"]
    assert [(r["model"], r["status"], r["requests"]) for r in rows] == [
        ("gpt-4o", "200", "2"),
        ("gpt-4o-mini", "200", "1"),
        ("gpt-4o-mini", "429", "1"),
        ("llama-local", "200", "1"),
        ("", "200", "1"),  # by deployment only (eu-chat)
    ]
    usd = [r for r in rows if r["currency"] == "USD"]
    total = sum(Decimal(r["cost"]) for r in usd)
    assert total == Decimal("0.0107")  # the day's USD total, to the last digit


def test_table(config: Path) -> None:
    result = report(
        config, "--from", "2026-11-27", "--to", "2026-11-29", "--group-by", "subscription"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Usage from 2026-11-27T00:00:00Z to 2026-11-29T00:00:00Z")
    assert lines[2].split()[:4] == ["SUBSCRIPTION", "CURRENCY", "REQUESTS", "ERRORS"]
    assert lines[3].split()[:3] == ["team-a", "USD", "3"] and lines[3].endswith("0.0107")
    totals = [line.split() for line in lines if line.startswith("TOTAL")]
    assert [(t[1], t[2], t[-1]) for t in totals] == [
        ("EUR", "1", "0.001"),
        ("USD", "5", "0.01145"),
        ("-", "1", "-"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-11-28", "--to", "2026-11-27"], "must be before"),
        (["--from", "27/11/2026", "--to", "2026-11-28"], "invalid 'from'"),
        (["--from", "2026-11-27", "--to", "2026-11-28", "--group-by", "team"], "unknown group-by"),
        (["--from", "2026-11-27", "--to", "2026-11-28", "--filter", "subscription"], "KEY=VALUE"),
        (["--from", "2026-11-27", "--to", "2026-11-28", "--format", "xml"], "invalid choice"),
        (["--to", "2026-11-28"], "--from"),
    ],
)
def test_bad_arguments_exit_2(sqlite_config: Path, args: list[str], message: str) -> None:
    result = report(sqlite_config, *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_database_down_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    down = write_config(tmp_path, "postgresql://postgres@127.0.0.1:9/test?schema=nothing_here")
    result = report(down, "--from", "2026-11-27", "--to", "2026-11-28")
    assert result.returncode == 1
    assert "usage ledger unavailable" in result.stderr and "127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "other").mkdir()
    missing = write_config(tmp_path / "other", "sqlite:no-such.db")
    result = report(missing, "--from", "2026-11-27", "--to", "2026-11-28")
    assert result.returncode == 1 and "no ledger database at" in result.stderr
    assert not (tmp_path / "other" / "no-such.db").exists()  # reading created nothing


def test_requests_through_the_gateway_reach_the_report(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    """The real gateway writes its ledger (flushed at shutdown: the interval is long), and
    the CLI reports it: model requests only, with their tokens and cost."""
    import openai

    config = base_config(demo_backend.url)
    config["usage"] = {
        "ledger": {"url": "sqlite:ledger.db", "flush-interval": 60},
        "prices": {MODEL: {"input": "1.00", "output": "2.00"}},
    }
    gateway = Gateway(tmp_path, config)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        answers = [client.chat.completions.create(**CHAT_BODY) for _ in range(2)]
        stream = client.chat.completions.create(
            **CHAT_BODY, stream=True, stream_options={"include_usage": True}
        )
        streamed = [chunk.usage for chunk in stream if chunk.usage is not None]
        client.models.list()  # not a metered operation: not in the ledger
    finally:
        assert gateway.stop() == 0
    expected = [a.usage for a in answers] + streamed
    assert all(usage is not None for usage in expected) and len(expected) == 3
    today = datetime.now(UTC).date()
    document = report_json(
        gateway.config_path,
        "--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1)),
        "--group-by", "model,operation",
    )  # fmt: skip
    (row,) = document["rows"]
    assert (row["model"], row["operation"], row["requests"], row["errors"]) == (
        MODEL,
        "chat-completions",
        3,
        0,
    )
    prompt = sum(u.prompt_tokens for u in expected if u is not None)
    completion = sum(u.completion_tokens for u in expected if u is not None)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
    nanos = prompt * 1000 + completion * 2000  # 1.00 and 2.00 per 1M tokens
    assert Decimal(row["cost"]) == Decimal(nanos) / 10**9 and row["currency"] == "USD"


def test_a_read_only_role_can_report_and_a_typo_creates_nothing(
    tmp_path: Path, pg_config: Path
) -> None:
    """Reports never migrate: a role that may only read the ledger is enough, and a schema
    name with a typo is reported as missing instead of being created."""
    schema = yaml.safe_load(pg_config.read_text())["usage"]["ledger"]["url"].split("schema=")[1]
    role = f"aigw_reader_{uuid.uuid4().hex[:8]}"

    async def as_admin(*statements: str) -> None:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(
        as_admin(
            f"CREATE ROLE {role} LOGIN",
            f'GRANT USAGE ON SCHEMA "{schema}" TO {role}',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}',
        )
    )
    try:
        reader_url = f"postgresql://{role}@127.0.0.1:5432/test?schema={schema}"
        (tmp_path / "reader").mkdir()
        (tmp_path / "typo").mkdir()
        reader = write_config(tmp_path / "reader", reader_url)
        found = report_json(reader, "--from", "2026-11-27", "--to", "2026-11-29")
        assert (
            found["totals"]
            == report_json(pg_config, "--from", "2026-11-27", "--to", "2026-11-29")["totals"]
        )
        typo = write_config(tmp_path / "typo", f"{PG_URL}?schema={schema}_typo")
        result = report(typo, "--from", "2026-11-27", "--to", "2026-11-29")
        assert result.returncode == 1 and "no usage ledger" in result.stderr
    finally:
        asyncio.run(
            as_admin(
                f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {role}',
                f'REVOKE USAGE ON SCHEMA "{schema}" FROM {role}',
                f"DROP ROLE {role}",
            )
        )

    async def schema_exists() -> bool:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            found = await conn.fetchval(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1", f"{schema}_typo"
            )
        finally:
            await conn.close()
        return bool(found)

    assert not asyncio.run(schema_exists())
