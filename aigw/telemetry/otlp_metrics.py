"""The gateway's OTLP metrics: what a finished request, an emitted-token policy and a counted
event add to which instrument, and the thread that exports them every interval."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Final

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

from aigw.telemetry.events import DESCRIPTIONS
from aigw.telemetry.otlp_aggregation import Attrs, Counter, MetricStore
from aigw.telemetry.otlp_semconv import error_type, operation_name, provider_name, request_model
from aigw.telemetry.record import RequestRecord
from aigw.usage.model import Usage

log = logging.getLogger(__name__)

# Bucket advice of the semantic conventions for each histogram.
TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                        16777216, 67108864)  # fmt: skip
GEN_AI_DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                                  10.24, 20.48, 40.96, 81.92)  # fmt: skip
HTTP_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                                5.0, 7.5, 10.0)  # fmt: skip
# As `gen_ai.server.time_to_first_token`'s advice.
FIRST_BYTE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                             1.0, 2.5, 5.0, 7.5, 10.0)  # fmt: skip


def _present(*pairs: tuple[str, str | None]) -> Attrs:
    """The pairs whose value is known (an absent subscription is no attribute, not ""),
    flattened into a series key."""
    key: list[str] = []
    for name, value in pairs:
        if value is not None:
            key += (name, value)
    return tuple(key)


def _flat(labels: Mapping[str, str]) -> Attrs:
    """Labels as a series key, sorted so that their order never makes a new series."""
    return tuple(item for pair in sorted(labels.items()) for item in pair)


def token_counts(usage: Usage) -> list[tuple[str, int]]:
    """`aigw.token.type` values and counts; cached and reasoning only when the backend had some."""
    counts = [
        ("prompt", usage.prompt_tokens),
        ("completion", usage.completion_tokens),
        ("total", usage.total_tokens),
    ]
    if usage.cached_tokens:
        counts.append(("cached_prompt", usage.cached_tokens))
    if usage.reasoning_tokens:
        counts.append(("reasoning", usage.reasoning_tokens))
    return counts


class GatewayMetrics:
    """The instruments, and how telemetry calls map onto them (see docs: OpenTelemetry)."""

    def __init__(self, store: MetricStore) -> None:
        self._store = store
        self.token_usage = store.histogram(
            "gen_ai.client.token.usage", "{token}", "Input and output tokens used", TOKEN_BUCKETS
        )
        self.operation_duration = store.histogram(
            "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration, as the gateway served it",
            GEN_AI_DURATION_BUCKETS,
        )
        self.server_duration = store.histogram(
            "http.server.request.duration", "s", "Duration of HTTP requests", HTTP_DURATION_BUCKETS
        )
        self.first_byte = store.histogram(
            "aigw.time_to_first_byte",
            "s",
            "Time until the first byte of the response body went out",
            FIRST_BYTE_BUCKETS,
        )
        self.requests = store.counter("aigw.requests", "{request}", "Requests handled")
        self.rejections = store.counter(
            "aigw.rejections", "{request}", "Requests that ended with an error, by reason"
        )
        self.shadow_rejections = store.counter(
            "aigw.shadow_rejections", "{request}", "Rejections that shadow mode let through"
        )
        self.tokens = store.counter("aigw.llm.tokens", "{token}", "Tokens used, by type")
        self.emitted_tokens = store.counter(
            "aigw.llm.emitted_tokens", "{token}", "Tokens counted by llm-emit-token-metric"
        )
        self._events: dict[str, Counter] = {}

    def request_finished(self, record: RequestRecord) -> None:
        status = ("http.response.status_code", record.status)
        operation = ("aigw.api.id", record.api_id, "aigw.operation.id", record.operation_id)
        route = (*operation, *_present(("aigw.backend.id", record.backend_id)))
        owner = _present(
            ("aigw.subscription.id", record.subscription_id),
            ("aigw.product.id", record.product_id),
        )
        with self._store.lock:
            self.server_duration.record(
                record.duration, ("http.request.method", record.method, *status, *route)
            )
            self.requests.add(1, (*route, *owner, *status))
            if record.time_to_first_byte is not None:
                self.first_byte.record(record.time_to_first_byte, route)
            if record.reason is not None and record.status >= 400:
                self.rejections.add(1, ("aigw.reason", record.reason, *status, *operation, *owner))
            for reason in record.shadow_rejections:
                self.shadow_rejections.add(1, ("aigw.reason", reason, *operation, *owner))
            if record.metered:
                self._llm(record, owner)

    def _llm(self, record: RequestRecord, owner: Attrs) -> None:
        genai = (
            "gen_ai.operation.name",
            operation_name(record),
            "gen_ai.provider.name",
            provider_name(record),
            *_present(("gen_ai.request.model", request_model(record))),
        )
        api = ("aigw.api.id", record.api_id)
        error = error_type(record)
        duration_attrs = (*genai, *api) if error is None else (*genai, *api, "error.type", error)
        self.operation_duration.record(record.duration, duration_attrs)
        usage = record.usage
        if usage is None:
            return
        self.token_usage.record(
            usage.prompt_tokens, (*genai, "gen_ai.token.type", "input", *api, *owner)
        )
        if record.operation_id != "embeddings":  # embeddings have no output tokens
            self.token_usage.record(
                usage.completion_tokens, (*genai, "gen_ai.token.type", "output", *api, *owner)
            )
        source = ("aigw.usage.source", usage.source)
        for kind, count in token_counts(usage):
            self.tokens.add(count, (*genai, "aigw.token.type", kind, *source, *api, *owner))

    def tokens_emitted(self, namespace: str, dimensions: Mapping[str, str], usage: Usage) -> None:
        dims = _flat(dimensions)
        with self._store.lock:
            for kind, count in token_counts(usage):
                attrs = ("aigw.namespace", namespace, "aigw.token.type", kind, *dims)
                self.emitted_tokens.add(count, attrs)

    def event(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        with self._store.lock:
            counter = self._events.get(name)
            if counter is None:
                dotted = "aigw." + name.replace("_", ".")
                counter = self._events[name] = self._store.counter(
                    dotted, "1", DESCRIPTIONS.get(name, "")
                )
            counter.add(float(amount), _flat(labels))


class MetricExportLoop:
    """Sends the store every `interval` seconds from its own thread, and once more at stop."""

    def __init__(
        self, store: MetricStore, exporter: MetricExporter, interval: float, timeout: float
    ) -> None:
        self._store = store
        self.exporter = exporter
        self._interval = interval
        self._timeout_millis = timeout * 1000
        self._stopping = threading.Event()
        self._export_lock = threading.Lock()  # the loop and a flush never send at once
        self._thread = threading.Thread(target=self._run, name="aigw-otlp-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.export()
        self.export()

    def export(self) -> bool:
        """Send what the store holds now (blocking; retries within the exporter's timeout)."""
        data = self._store.collect()
        if data is None:
            return True
        with self._export_lock:
            try:
                result = self.exporter.export(data, timeout_millis=self._timeout_millis)
            except Exception:  # the exporter logs and returns FAILURE; this is a last guard
                log.exception("OTLP metrics export failed")
                return False
        return result is MetricExportResult.SUCCESS

    def stop(self, timeout: float) -> None:
        """Stop the loop after one last export, waiting at most `timeout` for it."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:
            self.export()
