"""What receives telemetry: the interfaces the Prometheus registry, the OTLP exporter and the
usage ledger implement. Every method is called on the event loop and must not block: sinks
that do I/O queue the work and do it in their own task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aigw.telemetry.record import RequestRecord
from aigw.usage.model import Usage


class RequestSink(Protocol):
    def request_finished(self, record: RequestRecord) -> None:
        """A request's response is done (sent, failed or abandoned)."""
        ...


class EventSink(Protocol):
    def event(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        """A counted event of the gateway itself (see aigw.telemetry.events for the names)."""
        ...


class MetricsSink(RequestSink, EventSink, Protocol):
    def tokens_emitted(self, namespace: str, dimensions: Mapping[str, str], usage: Usage) -> None:
        """An `llm-emit-token-metric` policy's counts for one request, by its dimensions
        (names as configured, e.g. "Subscription ID")."""
        ...
