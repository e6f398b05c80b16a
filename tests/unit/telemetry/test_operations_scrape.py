"""The operations listener's `/metrics`: the answering worker's own counts are in it at once,
though series reach the shared files only when flushed."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aigw.config.loader import load_config_text
from aigw.reload import RuntimeHolder
from aigw.runtime import build_runtime
from aigw.telemetry.operations import build_app
from aigw.telemetry.prometheus import PrometheusMetrics
from tests.unit.telemetry.test_prometheus import record, value

CONFIG = """
usage: {ledger: {enabled: false}}
backends: {b: {url: "http://127.0.0.1:9"}}
apis: {chat: {type: openai, backend: b, subscription-required: false}}
"""
LABELS = {"api": "chat", "operation": "chat-completions", "backend": "ptu", "status": "200"}


async def test_a_scrape_shows_this_worker_s_latest_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    holder = RuntimeHolder(build_runtime(load_config_text(CONFIG, "<string>")))
    answering, other = PrometheusMetrics(tmp_path), PrometheusMetrics(tmp_path)
    answering.request_finished(record())
    other.request_finished(record())  # another worker, not flushed yet
    async with TestClient(TestServer(build_app(holder, answering))) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.read()
        assert value(text, "aigw_requests_total", **LABELS) == 1
        other.flush()  # what that worker's publisher does every second
        answering.request_finished(record())
        text = await (await client.get("/metrics")).read()
        assert value(text, "aigw_requests_total", **LABELS) == 3
