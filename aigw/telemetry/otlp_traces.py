"""One trace per sampled request, built after the fact from its `RequestRecord`: a SERVER span
for the request and a child span per policy and per backend call, with the recorded times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.util.types import AttributeValue

from aigw.telemetry.otlp_semconv import error_type, operation_name, provider_name, request_model
from aigw.telemetry.record import RequestRecord, StepTiming

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)


def epoch_ns(moment: datetime) -> int:
    """Exact nanoseconds since the epoch (a float timestamp would lose the microseconds)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // MICROSECOND * 1000


def _attributes(*pairs: tuple[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {name: value for name, value in pairs if value is not None}


class RequestTracer:
    """Turns finished requests into spans on `tracer` (the exporter's own provider)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def trace(self, record: RequestRecord) -> None:
        start = epoch_ns(record.started_at)
        # An empty context: a request is a root, whatever span may be current in the caller.
        root = self._tracer.start_span(
            f"{record.method} {record.api_id}/{record.operation_id}",
            context=Context(),
            kind=SpanKind.SERVER,
            attributes=self._request_attributes(record),
            start_time=start,
        )
        parent = set_span_in_context(root, Context())
        for step in record.steps:
            self._step(record, step, parent, start)
        error = error_type(record)
        if error is not None:
            root.set_attribute("error.type", error)
            root.set_status(Status(StatusCode.ERROR, record.reason))
        root.end(end_time=start + round(record.duration * 1e9))

    def _step(self, record: RequestRecord, step: StepTiming, parent: Context, start: int) -> None:
        # Steps carry the request clock's monotonic seconds; the record anchors them in time.
        begin = start + round((step.start - record.started) * 1e9)
        end = start + round((step.end - record.started) * 1e9)
        if step.name == "backend":
            name = f"backend {record.backend_id}" if record.backend_id else "backend"
            kind = SpanKind.CLIENT
            attributes = _attributes(
                ("aigw.backend.id", record.backend_id),
                ("aigw.step.outcome", step.outcome),
                ("gen_ai.operation.name", operation_name(record)),
                ("gen_ai.provider.name", provider_name(record)),
                ("gen_ai.request.model", request_model(record)),
            )
        else:
            name = f"policy {step.name}"
            kind = SpanKind.INTERNAL
            attributes = _attributes(
                ("aigw.policy.name", step.name),
                ("aigw.policy.section", step.section),
                ("aigw.policy.id", step.policy_id),
                ("aigw.step.outcome", step.outcome),
            )
        span = self._tracer.start_span(
            name, context=parent, kind=kind, attributes=attributes, start_time=begin
        )
        if step.outcome == "error":
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)

    @staticmethod
    def _request_attributes(record: RequestRecord) -> dict[str, AttributeValue]:
        usage = record.usage
        return _attributes(
            ("http.request.method", record.method),
            ("http.response.status_code", record.status),
            ("aigw.request_id", record.request_id),
            ("aigw.client_request_id", record.client_request_id),
            ("aigw.api.id", record.api_id),
            ("aigw.operation.id", record.operation_id),
            ("aigw.subscription.id", record.subscription_id),
            ("aigw.product.id", record.product_id),
            ("aigw.backend.id", record.backend_id),
            ("aigw.reason", record.reason),
            ("aigw.cache.hit", record.cache_hit or None),
            ("aigw.client_disconnected", record.client_disconnected or None),
            ("aigw.shadow_rejections", list(record.shadow_rejections) or None),
            ("gen_ai.operation.name", operation_name(record) if record.metered else None),
            ("gen_ai.provider.name", provider_name(record) if record.metered else None),
            ("gen_ai.request.model", request_model(record)),
            ("gen_ai.usage.input_tokens", usage.prompt_tokens if usage else None),
            ("gen_ai.usage.output_tokens", usage.completion_tokens if usage else None),
        )
