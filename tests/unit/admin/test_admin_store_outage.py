"""An outage of the subscription store, as admin API callers see it: a fixed 503, never the
database server's name, address or driver text (those go to the gateway's log)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aigw.admin.app import build_app
from aigw.reload import RuntimeHolder
from aigw.subscriptions.directory import SubscriptionDirectory
from aigw.subscriptions.store import StoreUnavailable
from tests.unit.admin.test_admin_app import AUTH, BrokenStore, runtime

OUTAGE = (
    "PostgreSQL at db-prod.internal.example:5432/aigw: Multiple exceptions: [Errno 111]"
    " Connect call failed ('10.20.30.40', 5432)"
)


async def test_a_store_outage_is_a_fixed_503_with_the_detail_in_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = runtime(monkeypatch, tmp_path)
    broken = BrokenStore(StoreUnavailable(OUTAGE))
    current.services.subscriptions = SubscriptionDirectory(broken)
    async with TestClient(TestServer(build_app(RuntimeHolder(current)))) as client:
        for method, path, body in [
            ("GET", "/subscriptions", None),
            ("GET", "/subscriptions/x", None),
            ("POST", "/subscriptions", {"displayName": "x", "product": "starter"}),
            ("PATCH", "/subscriptions/x", {"displayName": "y"}),
            ("GET", "/audit", None),
        ]:
            with caplog.at_level(logging.ERROR, logger="aigw.subscriptions"):
                reply = await client.request(method, path, json=body, headers=AUTH)
            assert reply.status == 503, path
            assert await reply.json() == {
                "statusCode": 503,
                "message": "subscription store unavailable; try again later",
            }
    assert caplog.text.count(OUTAGE) == 5
