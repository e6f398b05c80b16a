"""`Telemetry`: where a runtime sends what its requests did.

The app calls `begin` when a request is routed (measure its usage if the ledger wants it;
trace it if sampled) and `finish` when its response is done; policies call `tokens_emitted`
and `event`. Each goes to the sinks configured: Prometheus (always, process-wide), OTLP and
the usage ledger (per runtime, when configured).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from aigw.telemetry.record import record_of
from aigw.telemetry.sink import MetricsSink, RequestSink
from aigw.usage.meter import meter_for
from aigw.usage.model import Usage

if TYPE_CHECKING:
    from aigw.context import RequestContext
    from aigw.ledger.writer import LedgerWriter
    from aigw.telemetry.prometheus import PrometheusMetrics
    from aigw.tokenizer.encodings import TokenCounter

log = logging.getLogger("aigw.telemetry")


class Tracer(MetricsSink, Protocol):
    def trace_this(self) -> bool:
        """Whether to trace the request starting now (the sampling decision)."""
        ...


class Telemetry:
    def __init__(
        self, prometheus: PrometheusMetrics | None = None, otlp: Tracer | None = None
    ) -> None:
        self.prometheus = prometheus
        self.otlp = otlp
        self.ledger: LedgerWriter | None = None
        self._counter: TokenCounter | None = None
        self._metrics: tuple[MetricsSink, ...] = tuple(s for s in (prometheus, otlp) if s)
        self._sinks: tuple[RequestSink, ...] = self._metrics

    def add_ledger(self, ledger: LedgerWriter, counter: TokenCounter | None) -> None:
        """The ledger needs every model request's usage, so requests get measured; the
        counter counts responses that come without usage."""
        self.ledger, self._counter = ledger, counter
        self._sinks = (*self._metrics, ledger)

    def begin(self, ctx: RequestContext) -> None:
        if self.ledger is not None:
            meter_for(ctx, self._counter)  # every model request's usage goes in the ledger
        if self.otlp is not None and self.otlp.trace_this():
            ctx.steps = []

    def finish(
        self,
        ctx: RequestContext,
        *,
        method: str,
        status: int,
        duration: float,
        request_id: str,
        client_request_id: str | None,
    ) -> None:
        if not self._sinks:
            return
        record = record_of(
            ctx,
            method=method,
            status=status,
            duration=duration,
            request_id=request_id,
            client_request_id=client_request_id,
        )
        for sink in self._sinks:
            try:
                sink.request_finished(record)
            except Exception:  # a sink's bug must not fail the request or skip the others
                log.exception("telemetry sink %s failed", type(sink).__name__)

    def finish_unrouted(self, status: int, duration: float) -> None:
        if self.prometheus is not None:
            self.prometheus.unrouted(status, duration)

    def tokens_emitted(self, namespace: str, dimensions: Mapping[str, str], usage: Usage) -> None:
        for sink in self._metrics:
            try:
                sink.tokens_emitted(namespace, dimensions, usage)
            except Exception:
                log.exception("telemetry sink %s failed", type(sink).__name__)

    def event(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        for sink in self._metrics:
            try:
                sink.event(name, labels, amount)
            except Exception:  # counting an event must never change what the caller does
                log.exception("telemetry sink %s failed", type(sink).__name__)
