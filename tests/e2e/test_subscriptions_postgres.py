"""Several gateway replicas sharing subscriptions in the real PostgreSQL server: a change made
anywhere is enforced by every replica within two seconds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.helpers import CHAT_BODY, wait_until
from tests.e2e.subscriptions import StoreAdmin
from tests.support import REPO, DemoBackend, Gateway

PG_URL = os.environ.get("AIGW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PRODUCTS = {"team": ["chat"]}


def drop_schema(schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def replica_config(demo_url: str, store_url: str) -> dict[str, Any]:
    return {
        "gateway": {"host": "127.0.0.1"},
        "store": {"url": store_url},  # the default refresh interval: 1 s
        "backends": {"demo": {"url": demo_url}},
        "products": {"team": {"apis": ["chat"]}},
        "apis": {"chat": {"type": "openai", "path": "", "backend": "demo"}},
    }


@pytest.fixture(scope="module")
def store_url() -> Iterator[str]:
    schema = f"aigw_e2e_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    drop_schema(schema)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, demo_backend: DemoBackend, store_url: str
) -> Iterator[list[Gateway]]:
    config = replica_config(demo_backend.url, store_url)
    started = [Gateway(Path(tmp_path_factory.mktemp(f"replica{i}")), config) for i in range(2)]
    yield started
    for gateway in started:
        gateway.stop()


def status(gateway: Gateway, key: str) -> int:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT_BODY,
        headers={"Ocp-Apim-Subscription-Key": key},
        timeout=5,
    )
    return response.status_code


def all_answer(replicas: list[Gateway], key: str, expected: int, within: float) -> float:
    """Seconds until every replica answers `expected` for `key` (fails after `within`)."""
    started = time.monotonic()
    for gateway in replicas:
        remaining = within - (time.monotonic() - started)
        assert wait_until(lambda g=gateway: status(g, key) == expected, timeout=remaining), (
            f"{gateway.url} still does not answer {expected}"
        )
    return time.monotonic() - started


def test_replicas_enforce_each_others_changes_within_two_seconds(
    replicas: list[Gateway], store_url: str, tmp_path: Path
) -> None:
    admin = StoreAdmin(store_url, tmp_path, PRODUCTS)
    sub_id, primary, secondary = admin.keys("/products/team")
    all_answer(replicas, primary, 200, within=2.0)
    admin.set_state(sub_id, "suspended")
    all_answer(replicas, primary, 401, within=2.0)
    admin.set_state(sub_id, "active")
    all_answer(replicas, secondary, 200, within=2.0)
    admin.regenerate(sub_id, "primary")
    all_answer(replicas, primary, 401, within=2.0)
    assert all(status(gateway, secondary) == 200 for gateway in replicas)


def test_a_replica_started_later_loads_every_subscription(
    replicas: list[Gateway], store_url: str, tmp_path: Path, demo_backend: DemoBackend
) -> None:
    admin = StoreAdmin(store_url, tmp_path, PRODUCTS)
    _, key, _ = admin.keys("/apis")
    late = Gateway(tmp_path, replica_config(demo_backend.url, store_url))
    try:
        assert status(late, key) == 200  # ready means loaded: no wait needed
    finally:
        late.stop()


def test_an_unreachable_database_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "down.yaml"
    config.write_text(
        "store: {url: 'postgresql://aigw:S3cretPassw0rd@127.0.0.1:1/test'}\n"
        "backends: {demo: {type: demo}}\n"
        "apis: {chat: {type: openai, backend: demo}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "aigw", "serve", "--config", str(config), "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/test" in result.stderr
    assert "S3cretPassw0rd" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
