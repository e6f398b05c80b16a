"""Request records and ledger rows for the ledger tests."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aigw.ledger.prices import PriceTable
from aigw.ledger.rows import LedgerRow, ledger_row
from aigw.telemetry.record import RequestRecord
from aigw.usage.model import Usage

T0 = datetime(2026, 11, 27, 10, 30, 0, 123456, tzinfo=UTC)
_ids = itertools.count(1)

BASE = RequestRecord(
    request_id="req-0",
    client_request_id=None,
    started_at=T0,
    started=0.0,
    method="POST",
    api_id="chat",
    api_type="openai",
    operation_id="chat-completions",
    subscription_id="sub1",
    product_id="starter",
    user_id=None,
    deployment=None,
    model="gpt-4o-mini",
    backend_id="demo",
    client_ip="127.0.0.1",
    status=200,
    reason=None,
    shadow_rejections=(),
    client_disconnected=False,
    duration=0.25,
    time_to_first_byte=0.05,
    usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
    metered=True,
    cache_hit=False,
)


def record(**changes: Any) -> RequestRecord:
    """A successful chat completion with a fresh request id, changed as given."""
    changes.setdefault("request_id", f"req-{next(_ids)}")
    return replace(BASE, **changes)


def row(prices: PriceTable | None = None, **changes: Any) -> LedgerRow:
    return ledger_row(record(**changes), prices or PriceTable({}))


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)
