"""quota-by-key: only a bandwidth quota watches the response body go by."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aigw.context import Response
from aigw.headers import Headers
from aigw.relay import send_response
from tests.unit.policies.conftest import build_one, make_ctx


async def _body() -> AsyncIterator[bytes]:
    yield b"hello "
    yield b"world"


def relayed_headers(attributes: dict[str, Any]) -> dict[bytes, bytes]:
    policy = build_one("quota-by-key", {"counter-key": "k", "renewal-period": 60, **attributes})
    ctx = make_ctx()
    ctx.observers.append(policy)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    response = Response(200, Headers([("content-length", "11")]), stream=_body())
    asyncio.run(send_response(send, response, "r1", ctx))
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"hello world"
    return dict(sent[0]["headers"])


def test_a_calls_quota_leaves_the_response_alone() -> None:
    assert relayed_headers({"calls": 5})[b"content-length"] == b"11"


def test_a_bandwidth_quota_watches_the_body() -> None:
    assert b"content-length" not in relayed_headers({"bandwidth": 100})
