"""Which finished requests belong in the ledger, and the row each one becomes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final

from aigw.ledger.prices import PriceTable, cost_nanos
from aigw.telemetry.record import RequestRecord
from aigw.usage.meter import METERED_OPERATIONS


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One `usage_records` row; the fields are the columns, in table order."""

    request_id: str
    client_request_id: str | None
    started_at: datetime  # aware, UTC
    subscription_id: str | None
    product_id: str | None
    user_id: str | None
    api_id: str
    operation_id: str
    deployment: str | None
    model: str | None
    backend_id: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    total_tokens: int
    usage_source: str | None  # backend, counted, estimated; None: no usage known
    cache_hit: bool
    status: int
    reason: str | None
    client_disconnected: bool
    duration_ms: float
    ttfb_ms: float | None
    cost_nanos: int | None  # None: no price for the model or deployment
    currency: str | None

    def values(self) -> tuple[Any, ...]:
        """The column values in table order (no deep copy, unlike `dataclasses.astuple`)."""
        return _COLUMN_VALUES(self)


COLUMNS: tuple[str, ...] = tuple(field.name for field in fields(LedgerRow))
_COLUMN_VALUES: Final = attrgetter(*COLUMNS)


def belongs_in_ledger(record: RequestRecord) -> bool:
    """Requests to an LLM API's metered operations, answered or rejected (a 429 or 403 is
    kept, with zero tokens, to show rejections by reason) — except 401s: a caller that could
    not be identified is nobody's usage."""
    if record.api_type == "http" or record.status == 401:
        return False
    return record.metered or record.operation_id in METERED_OPERATIONS


def ledger_row(record: RequestRecord, prices: PriceTable) -> LedgerRow:
    usage = record.usage
    price = prices.price_for(record)
    cost = None
    if price is not None:
        cost = 0 if usage is None else cost_nanos(usage, price)
    ttfb = record.time_to_first_byte
    return LedgerRow(
        request_id=record.request_id,
        client_request_id=record.client_request_id,
        started_at=_utc(record.started_at),
        subscription_id=record.subscription_id,
        product_id=record.product_id,
        user_id=record.user_id,
        api_id=record.api_id,
        operation_id=record.operation_id,
        deployment=record.deployment,
        model=record.model,
        backend_id=record.backend_id,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        total_tokens=usage.total_tokens if usage else 0,
        usage_source=usage.source if usage else None,
        cache_hit=record.cache_hit,
        status=record.status,
        reason=record.reason,
        client_disconnected=record.client_disconnected,
        duration_ms=round(record.duration * 1000, 3),
        ttfb_ms=None if ttfb is None else round(ttfb * 1000, 3),
        cost_nanos=cost,
        currency=None if price is None else price.currency,
    )


def _utc(value: datetime) -> datetime:
    # The request clock gives aware UTC; a naive one is taken as UTC rather than lost.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
