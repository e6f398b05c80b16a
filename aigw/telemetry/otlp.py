"""`OtlpExporter`: the gateway's metrics and traces over OTLP/HTTP (protobuf), when `otlp:` is
configured. A `MetricsSink`: every call is cheap and non-blocking; the SDK's exporters send from
their own threads, and `close` waits for their last export only as long as it is told to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from aigw import __version__
from aigw.config.model import OtlpConfig
from aigw.telemetry.otlp_aggregation import MetricStore
from aigw.telemetry.otlp_metrics import GatewayMetrics, MetricExportLoop
from aigw.telemetry.otlp_traces import RequestTracer
from aigw.telemetry.record import RequestRecord
from aigw.usage.model import Usage

log = logging.getLogger(__name__)

SCOPE = "aigw"


class OtlpExporter:
    """Exports to `config.endpoint` + `/v1/metrics` and `/v1/traces`, on providers of its own
    (the global OpenTelemetry providers are left alone)."""

    def __init__(
        self, config: OtlpConfig, gateway_id: str, *, instance_id: str | None = None
    ) -> None:
        self._config = config
        # Cumulative series must not collide between worker processes: one instance id each.
        self.resource = Resource.create(
            {
                "service.name": config.service_name,
                "service.version": __version__,
                "service.instance.id": instance_id or str(uuid.uuid4()),
                "aigw.gateway.id": gateway_id,
            }
        )
        self._store = MetricStore(self.resource, InstrumentationScope(SCOPE, __version__))
        self._metrics = GatewayMetrics(self._store) if config.metrics else None
        self._metric_loop: MetricExportLoop | None = None
        self._tracer_provider: TracerProvider | None = None
        self._span_exporter: OTLPSpanExporter | None = None
        self._tracer: RequestTracer | None = None
        self._closed = False
        self._abandoned = False

    def _url(self, signal: str) -> str:
        return f"{self._config.endpoint.rstrip('/')}/v1/{signal}"

    async def start(self) -> None:
        """Start the export threads (on the worker that will serve, after any fork)."""
        config = self._config
        headers = dict(config.headers)
        if self._metrics is not None and self._metric_loop is None:
            exporter = OTLPMetricExporter(
                endpoint=self._url("metrics"), headers=headers, timeout=config.timeout
            )
            self._metric_loop = MetricExportLoop(
                self._store, exporter, config.export_interval, config.timeout
            )
            self._metric_loop.start()
        if config.traces and self._tracer_provider is None:
            # Sampling is decided per request by `trace_this`; what reaches here is kept.
            provider = TracerProvider(
                sampler=ALWAYS_ON, resource=self.resource, shutdown_on_exit=False
            )
            span_exporter = OTLPSpanExporter(
                endpoint=self._url("traces"), headers=headers, timeout=config.timeout
            )
            provider.add_span_processor(
                BatchSpanProcessor(
                    span_exporter, schedule_delay_millis=config.export_interval * 1000
                )
            )
            self._tracer_provider = provider
            self._span_exporter = span_exporter
            self._tracer = RequestTracer(provider.get_tracer(SCOPE, __version__))

    def trace_this(self) -> bool:
        """Whether to trace a request that is starting (then the app collects its steps)."""
        if self._tracer is None or self._closed:
            return False
        ratio = self._config.trace_sample_ratio
        return ratio >= 1.0 or random.random() < ratio  # noqa: S311 (sampling, not secrecy)

    def request_finished(self, record: RequestRecord) -> None:
        if self._metrics is not None:
            self._metrics.request_finished(record)
        if record.steps and self._tracer is not None and not self._closed:
            try:
                self._tracer.trace(record)
            except Exception:  # a span the SDK refuses must never fail the request
                log.exception("could not record the trace of request %s", record.request_id)

    def tokens_emitted(self, namespace: str, dimensions: Mapping[str, str], usage: Usage) -> None:
        if self._metrics is not None:
            self._metrics.tokens_emitted(namespace, dimensions, usage)

    def event(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        if self._metrics is not None:
            self._metrics.event(name, labels, amount)

    def force_flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far now. Blocking: call it from a thread."""
        limit = self._config.timeout if timeout is None else timeout
        sent = True
        if self._metric_loop is not None:
            sent = self._metric_loop.export()
        if self._tracer_provider is not None:
            sent = self._tracer_provider.force_flush(int(limit * 1000)) and sent
        return sent

    async def close(self) -> None:
        """Send what is pending and stop, waiting at most the configured `timeout`. Past it,
        or if the caller cancels first (its own `asyncio.timeout`), pending data is dropped
        and the exporters are told to stop retrying; their threads are daemons."""
        if self._closed:
            return
        self._closed = True
        limit = self._config.timeout
        done = asyncio.get_running_loop().create_future()

        def shut_down() -> None:
            try:
                self._shut_down(time.monotonic() + limit)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be gone after a timeout
                    done.get_loop().call_soon_threadsafe(_resolve, done)

        # Not the default executor: a stuck export must not hold up the loop's own shutdown.
        threading.Thread(target=shut_down, name="aigw-otlp-close", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), limit)
        except TimeoutError:
            log.warning("OTLP export did not finish within %.1fs; pending data dropped", limit)
            self._abandon()
        except asyncio.CancelledError:
            self._abandon()
            raise

    def _shut_down(self, deadline: float) -> None:
        if self._metric_loop is not None:
            self._metric_loop.stop(max(deadline - time.monotonic(), 0.0))
            if not self._abandoned:
                self._metric_loop.exporter.shutdown()
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush(int(max(deadline - time.monotonic(), 0.0) * 1000))
            self._tracer_provider.shutdown()  # ends the batch thread (and shuts the exporter)

    def _abandon(self) -> None:
        """Interrupt exports still retrying (the OTLP client's shutdown wakes its back-off)."""
        self._abandoned = True
        if self._metric_loop is not None:
            self._metric_loop.exporter.shutdown()
        if self._span_exporter is not None:
            self._span_exporter.shutdown()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
