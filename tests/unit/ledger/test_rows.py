"""Which requests go in the ledger, and the row each becomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from aigw.config.model import PriceConfig
from aigw.ledger.prices import PriceTable
from aigw.ledger.rows import COLUMNS, belongs_in_ledger, ledger_row
from aigw.usage.model import Usage
from tests.unit.ledger.records import T0, record

PRICES = PriceTable({"gpt-4o-mini": PriceConfig(input=Decimal("0.15"), output=Decimal("0.60"))})


@pytest.mark.parametrize(
    ("changes", "kept"),
    [
        ({}, True),
        ({"status": 429, "reason": "TokenLimitExceeded", "usage": None}, True),
        ({"status": 403, "reason": "SubscriptionSuspended", "usage": None}, True),
        ({"status": 502, "usage": None}, True),
        ({"status": 401, "reason": "SubscriptionKeyInvalid", "usage": None}, False),
        ({"api_type": "http", "operation_id": "get-thing", "metered": False}, False),
        # A metered operation whose meter was never created (rejected before it): kept.
        ({"metered": False, "status": 429, "usage": None}, True),
        # An LLM API's unmetered operation (a model list): not usage.
        ({"operation_id": "models", "metered": False, "usage": None}, False),
        ({"operation_id": "embeddings"}, True),
        ({"operation_id": "responses"}, True),
    ],
)
def test_belongs_in_ledger(changes: dict[str, object], kept: bool) -> None:
    assert belongs_in_ledger(record(**changes)) is kept


def test_row_copies_the_record_and_prices_it() -> None:
    usage = Usage(
        prompt_tokens=1000,
        completion_tokens=500,
        total_tokens=1500,
        cached_tokens=200,
        reasoning_tokens=100,
        source="counted",
    )
    made = ledger_row(
        record(request_id="r1", client_request_id="c1", usage=usage, user_id="u1"), PRICES
    )
    assert made.request_id == "r1" and made.client_request_id == "c1"
    assert (made.subscription_id, made.product_id, made.user_id) == ("sub1", "starter", "u1")
    assert (made.prompt_tokens, made.completion_tokens, made.total_tokens) == (1000, 500, 1500)
    assert (made.cached_tokens, made.reasoning_tokens, made.usage_source) == (200, 100, "counted")
    assert (made.duration_ms, made.ttfb_ms) == (250.0, 50.0)
    # 1000 * 0.15 + 500 * 0.60 per 1M = 0.00045 → 450000 nanos (no cached price: input).
    assert (made.cost_nanos, made.currency) == (450_000, "USD")
    assert len(made.values()) == len(COLUMNS) and made.values()[0] == "r1"


def test_rejected_request_has_zero_tokens_and_zero_cost_when_priced() -> None:
    made = ledger_row(record(status=429, reason="TokenLimitExceeded", usage=None), PRICES)
    assert (made.prompt_tokens, made.total_tokens, made.usage_source) == (0, 0, None)
    assert (made.cost_nanos, made.currency, made.reason) == (0, "USD", "TokenLimitExceeded")


def test_unpriced_model_has_no_cost_and_no_currency() -> None:
    made = ledger_row(record(model="not-priced", deployment="nor-this"), PRICES)
    assert (made.cost_nanos, made.currency) == (None, None)


def test_times_are_utc() -> None:
    local = T0.astimezone(timezone(timedelta(hours=2)))
    assert ledger_row(record(started_at=local), PRICES).started_at.tzinfo == UTC
    naive = datetime(2026, 1, 1, 12, 0)
    assert ledger_row(record(started_at=naive), PRICES).started_at == naive.replace(tzinfo=UTC)
    assert ledger_row(record(time_to_first_byte=None), PRICES).ttfb_ms is None
