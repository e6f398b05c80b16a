"""`GET /usage/report` on the admin application in process, over the runtime's own ledger
store (real SQLite files)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aigw.admin.app import build_app
from aigw.config.loader import load_config_text
from aigw.ledger.prices import PriceTable
from aigw.reload import RuntimeHolder
from aigw.runtime import Runtime, build_runtime
from tests.unit.ledger.records import at, row

TOKEN = "unit-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
store: {url: "sqlite:unit.db"}
usage:
  ledger: {url: "sqlite:LEDGER"}
  prices:
    gpt-4o-mini: {input: 0.15, output: 0.60}
admin: {token: "{{admin-token}}"}
named-values:
  admin-token: {env: AIGW_UNIT_ADMIN_TOKEN, secret: true}
backends: {b: {url: "http://127.0.0.1:9"}}
products: {starter: {apis: [chat]}}
apis: {chat: {type: openai, backend: b}}
"""
DAY = "from=2026-11-27&to=2026-11-28"


def runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ledger: str = "ledger.db", enabled: bool = True
) -> Runtime:
    monkeypatch.setenv("AIGW_UNIT_ADMIN_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)  # a config from a string: its files are in the cwd
    text = CONFIG.replace("LEDGER", ledger)
    if not enabled:
        text = text.replace("ledger: {url:", "ledger: {enabled: false, url:")
    return build_runtime(load_config_text(text, "<string>"))


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[TestClient[Any, Any]] = []

    async def make(current: Runtime) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(RuntimeHolder(current))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def filled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Runtime:
    current = runtime(monkeypatch, tmp_path)
    assert current.services.ledger is not None
    store = current.services.ledger.store
    prices = PriceTable(current.config.usage.prices)
    await store.open()
    await store.write(
        [
            row(prices, subscription_id="team-a", started_at=at(hours=1)),
            row(prices, subscription_id="team-a", started_at=at(hours=2)),
            row(prices, subscription_id="team-b", status=429, usage=None, reason="TokenLimit"),
            row(prices, subscription_id="team-b", started_at=at(days=3)),  # another day
        ]
    )
    return current


async def test_json_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any
) -> None:
    current = await filled(monkeypatch, tmp_path)
    try:
        client = await client_for(current)
        reply = await client.get(f"/usage/report?{DAY}&group-by=subscription,day", headers=AUTH)
        assert reply.status == 200, await reply.text()
        document = await reply.json()
        assert (
            document["from"] == "2026-11-27T00:00:00Z" and document["to"] == "2026-11-28T00:00:00Z"
        )
        assert document["group_by"] == ["subscription", "day"]
        assert [
            (r["subscription"], r["day"], r["requests"], r["errors"]) for r in document["rows"]
        ] == [
            ("team-a", "2026-11-27", 2, 0),
            ("team-b", "2026-11-27", 1, 1),
        ]
        # 2 * (10 * 0.15 + 5 * 0.60) per 1M tokens
        assert document["totals"] == [
            {
                "currency": "USD",
                "requests": 3,
                "errors": 1,
                "prompt_tokens": 20,
                "completion_tokens": 10,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
                "total_tokens": 30,
                "cost": "0.000009",
            }
        ]
        assert reply.headers["Cache-Control"] == "no-store"
        filtered = await client.get(f"/usage/report?{DAY}&group-by=reason&status=429", headers=AUTH)
        assert [r["reason"] for r in (await filtered.json())["rows"]] == ["TokenLimit"]
    finally:
        await current.close()


async def test_csv_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any) -> None:
    current = await filled(monkeypatch, tmp_path)
    try:
        client = await client_for(current)
        reply = await client.get(
            f"/usage/report?{DAY}&group-by=subscription&format=csv", headers=AUTH
        )
        assert reply.status == 200 and reply.content_type == "text/csv"
        parsed = list(csv.DictReader(io.StringIO(await reply.text())))
        assert [(r["subscription"], r["requests"], r["cost"]) for r in parsed] == [
            ("team-a", "2", "0.000009"),
            ("team-b", "1", "0.00"),
        ]
    finally:
        await current.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "both 'from' and 'to' are required"),
        ("from=2026-11-27&to=2026-11-27", "must be before"),
        ("from=nope&to=2026-11-28", "invalid 'from'"),
        (f"{DAY}&group-by=tenant", "unknown group-by key 'tenant'"),
        (f"{DAY}&format=xml", "format must be"),
        (f"{DAY}&tenant=x", "unknown query parameter 'tenant'"),
        (f"{DAY}&from=2026-11-01", "given more than once"),
        (f"{DAY}&status=abc", "HTTP status code"),
    ],
)
async def test_bad_queries_are_400(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any, query: str, message: str
) -> None:
    client = await client_for(runtime(monkeypatch, tmp_path))
    reply = await client.get(f"/usage/report?{query}", headers=AUTH)
    assert reply.status == 400
    assert message in (await reply.json())["message"]


async def test_no_ledger_or_no_database_is_503(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any
) -> None:
    off = await client_for(runtime(monkeypatch, tmp_path, enabled=False))
    reply = await off.get(f"/usage/report?{DAY}", headers=AUTH)
    assert reply.status == 503 and "usage.ledger.enabled" in (await reply.json())["message"]
    (tmp_path / "blocked").write_text("a file where the ledger's folder should be")
    broken = runtime(monkeypatch, tmp_path, ledger="blocked/ledger.db")
    reply = await (await client_for(broken)).get(f"/usage/report?{DAY}", headers=AUTH)
    assert reply.status == 503
    message = (await reply.json())["message"]
    assert message == "usage ledger unavailable; try again later"  # no path, no detail


async def test_needs_the_admin_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any
) -> None:
    client = await client_for(runtime(monkeypatch, tmp_path))
    assert (await client.get(f"/usage/report?{DAY}")).status == 401
