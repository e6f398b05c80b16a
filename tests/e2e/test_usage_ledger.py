"""The usage ledger through real gateway processes: one row per model request, exact counts.

`FixedChatBackend` reports the usage each request asks for (`x-usage: P,C`), so every row
is known in advance. The ledger flushes rarely here (`flush-interval: 60`): rows reach the
database at the graceful stop, which is what "no record lost on shutdown" means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.e2e.token_backend import FixedChatBackend
from tests.support import Gateway

PG_URL = os.environ.get("AIGW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
HELLO = [{"role": "user", "content": "Hello"}]
# Per 1M tokens: input 2.50, cached input 1.25, output 10.00.
PRICES = {"gpt-4o": {"input": "2.50", "cached-input": "1.25", "output": "10.00", "currency": "USD"}}


def config(backend_url: str, ledger_url: str) -> dict[str, Any]:
    limit = {
        "llm-token-limit": {
            "counter-key": '@(context.Request.Headers.GetValueOrDefault("x-key", "-"))',
            "tokens-per-minute": 50,
            "estimate-prompt-tokens": False,
        }
    }
    api = {"type": "openai", "subscription-required": False, "backend": "fixed"}
    return {
        "gateway": {"host": "127.0.0.1"},
        "usage": {"ledger": {"url": ledger_url, "flush-interval": 60}, "prices": PRICES},
        "backends": {"fixed": {"url": backend_url, "timeouts": {"connect": 2, "read": 10}}},
        "apis": {
            "chat": {**api, "path": "chat"},
            "limited": {**api, "path": "limited", "policies": {"inbound": [limit]}},
            "keyed": {**api, "path": "keyed", "subscription-required": True},
        },
    }


@pytest.fixture(scope="module")
def backend() -> Iterator[FixedChatBackend]:
    fixed = FixedChatBackend()
    yield fixed
    fixed.stop()


def traffic(gateway: Gateway) -> dict[str, str]:
    """Each kind of request once; returns the x-request-id each was sent with."""
    ids = {kind: f"{kind}-{uuid.uuid4().hex[:8]}" for kind in
           ("plain", "stream", "counted", "rejected", "unauthenticated", "left")}  # fmt: skip
    with openai.OpenAI(base_url=gateway.url + "/chat/v1", api_key="x", max_retries=0) as sdk:
        sdk.chat.completions.create(
            model="gpt-4o",
            messages=HELLO,
            extra_headers={"x-usage": "1000,200", "x-request-id": ids["plain"]},
        )
        list(
            sdk.chat.completions.create(
                model="gpt-4o",
                messages=HELLO,
                stream=True,
                extra_headers={"x-usage": "20,7", "x-request-id": ids["stream"]},
            )
        )
        sdk.chat.completions.create(
            model="gpt-4o",
            messages=HELLO,
            extra_headers={"x-no-usage": "1", "x-request-id": ids["counted"]},
        )
    with openai.OpenAI(base_url=gateway.url + "/limited/v1", api_key="x", max_retries=0) as sdk:
        headers = {"x-usage": "40,20", "x-key": uuid.uuid4().hex}
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers=headers)
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(
                model="gpt-4o",
                messages=HELLO,
                extra_headers={**headers, "x-request-id": ids["rejected"]},
            )
    with (
        openai.OpenAI(base_url=gateway.url + "/keyed/v1", api_key="x", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError),
    ):
        sdk.chat.completions.create(
            model="gpt-4o",
            messages=HELLO,
            extra_headers={"x-request-id": ids["unauthenticated"]},
        )
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    headers = {"x-usage": "10,60", "x-chunk-delay-ms": "50", "x-request-id": ids["left"]}
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST", gateway.url + "/chat/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 5:
                break
    return ids


COLUMNS = (
    "request_id, client_request_id, api_id, operation_id, model, backend_id, prompt_tokens, "
    "completion_tokens, cached_tokens, reasoning_tokens, total_tokens, usage_source, status, "
    "reason, cost_nanos, currency, client_disconnected"
)


def check_rows(rows: list[dict[str, Any]], ids: dict[str, str]) -> None:
    by_client = {row["client_request_id"]: row for row in rows}
    assert ids["unauthenticated"] not in by_client, "401s are nobody's usage"
    assert len({row["request_id"] for row in rows}) == len(rows)
    plain = by_client[ids["plain"]]
    assert (plain["prompt_tokens"], plain["completion_tokens"], plain["total_tokens"]) == (
        1000,
        200,
        1200,
    )
    assert plain["usage_source"] == "backend" and plain["status"] == 200
    assert (plain["api_id"], plain["operation_id"], plain["model"]) == (
        "chat",
        "chat-completions",
        "gpt-4o",
    )
    # 1000 * 2.50 / 1M + 200 * 10.00 / 1M = 0.0025 + 0.002 = 0.0045 USD
    assert Decimal(plain["cost_nanos"]) / 10**9 == Decimal("0.0045")
    assert plain["currency"] == "USD"
    stream = by_client[ids["stream"]]
    assert (stream["prompt_tokens"], stream["completion_tokens"]) == (20, 7)
    assert stream["usage_source"] == "backend"
    counted = by_client[ids["counted"]]
    assert counted["usage_source"] == "counted" and counted["prompt_tokens"] > 0
    rejected = by_client[ids["rejected"]]
    assert (rejected["status"], rejected["reason"]) == (429, "TokenLimitExceeded")
    assert rejected["total_tokens"] == 0 and rejected["cost_nanos"] in (0, None)
    left = by_client[ids["left"]]
    assert bool(left["client_disconnected"]) and left["usage_source"] == "counted"
    assert 4 <= left["completion_tokens"] < 60


def test_sqlite_ledger_has_every_row_after_a_graceful_stop(
    tmp_path: Path, backend: FixedChatBackend
) -> None:
    gateway = Gateway(tmp_path, config(backend.url, "sqlite:usage.db"))
    try:
        ids = traffic(gateway)
    finally:
        assert gateway.stop() == 0
    with sqlite3.connect(tmp_path / "usage.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(row) for row in conn.execute(f"SELECT {COLUMNS} FROM usage_records")]
    check_rows(rows, ids)


@pytest.fixture
def pg_ledger() -> Iterator[tuple[str, str]]:
    schema = f"aigw_ledger_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}", schema

    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_postgres_ledger_has_every_row_after_a_graceful_stop(
    tmp_path: Path, backend: FixedChatBackend, pg_ledger: tuple[str, str]
) -> None:
    url, schema = pg_ledger
    gateway = Gateway(tmp_path, config(backend.url, url))
    try:
        ids = traffic(gateway)
    finally:
        assert gateway.stop() == 0

    async def read() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            found = await conn.fetch(f'SELECT {COLUMNS} FROM "{schema}".usage_records')
        finally:
            await conn.close()
        return [dict(row) for row in found]

    check_rows(asyncio.run(read()), ids)


def test_several_workers_write_one_ledger(tmp_path: Path, backend: FixedChatBackend) -> None:
    settings = config(backend.url, "sqlite:usage.db")
    del settings["apis"]["limited"]  # in-process limit counters need one worker
    gateway = Gateway(tmp_path, settings, "--workers", "2")
    try:
        for _ in range(30):
            with openai.OpenAI(
                base_url=gateway.url + "/chat/v1", api_key="x", max_retries=0
            ) as sdk:  # a new connection each time, so both workers answer
                sdk.chat.completions.create(
                    model="gpt-4o", messages=HELLO, extra_headers={"x-usage": "3,2"}
                )
    finally:
        assert gateway.stop() == 0
    with sqlite3.connect(tmp_path / "usage.db") as conn:
        count, tokens = conn.execute(
            "SELECT COUNT(*), SUM(total_tokens) FROM usage_records"
        ).fetchone()
    assert (count, tokens) == (30, 150)


def test_backends_that_refuse_stream_options_are_not_asked(
    tmp_path: Path, backend: FixedChatBackend
) -> None:
    settings = config(backend.url, "sqlite:usage.db")
    settings["usage"]["request-stream-usage"] = False
    gateway = Gateway(tmp_path, settings)
    marker = uuid.uuid4().hex
    try:
        with openai.OpenAI(base_url=gateway.url + "/chat/v1", api_key="x", max_retries=0) as sdk:
            chunks = list(
                sdk.chat.completions.create(
                    model="gpt-4o",
                    messages=HELLO,
                    stream=True,
                    extra_headers={"x-usage": "20,7", "x-request-id": marker},
                )
            )
        assert chunks
    finally:
        assert gateway.stop() == 0
    sent = [seen for seen in backend.requests if seen.headers.get("x-request-id") == marker]
    assert len(sent) == 1 and "stream_options" not in sent[0].body
    with sqlite3.connect(tmp_path / "usage.db") as conn:
        source, prompt, completion = conn.execute(
            "SELECT usage_source, prompt_tokens, completion_tokens FROM usage_records"
            " WHERE client_request_id = ?",
            (marker,),
        ).fetchone()
    # Counted by the gateway: the prompt with the tokenizer, the streamed text " t0" … " t6".
    assert source == "counted" and prompt > 0 and completion == 14


def test_a_stream_cut_at_the_end_of_the_grace_period_is_still_recorded(
    tmp_path: Path, backend: FixedChatBackend
) -> None:
    settings = config(backend.url, "sqlite:usage.db")
    settings["gateway"]["shutdown-grace-period"] = 1
    gateway = Gateway(tmp_path, settings)
    marker = uuid.uuid4().hex
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    headers = {"x-usage": "10,100", "x-chunk-delay-ms": "100", "x-request-id": marker}
    seen = 0
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST", gateway.url + "/chat/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        lines = response.iter_lines()
        while seen < 3:
            seen += next(lines).startswith("data: ")
        gateway.popen.send_signal(signal.SIGTERM)  # the stream outlives the grace period
        with contextlib.suppress(httpx.HTTPError):
            for line in lines:
                seen += line.startswith("data: ")
    assert gateway.popen.wait(15) == 0
    assert seen < 100, "cut before the end"
    with sqlite3.connect(tmp_path / "usage.db") as conn:
        found = conn.execute(
            "SELECT status, usage_source, completion_tokens FROM usage_records"
            " WHERE client_request_id = ?",
            (marker,),
        ).fetchone()
    assert found is not None, "the cut request has its ledger record"
    status, source, completion = found
    assert status == 503 and source == "counted"
    assert completion >= 3
