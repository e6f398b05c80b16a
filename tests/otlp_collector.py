"""A local OTLP/HTTP collector stand-in on 127.0.0.1: accepts `POST /v1/metrics` and
`POST /v1/traces` (`application/x-protobuf`, optionally gzip), decodes them with
opentelemetry-proto, and keeps every export with its request headers.

Metrics arrive cumulative, so the newest export of a metric holds its current values:
`points(name)` reads those, `point(name, {attr: value})` picks one series. Spans come as
`SpanView`s with hex ids, kind and status names, and plain-Python attributes.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass(frozen=True)
class Export:
    path: str
    headers: dict[str, str]  # lower-case names
    message: ExportMetricsServiceRequest | ExportTraceServiceRequest


@dataclass(frozen=True)
class Point:
    metric: str
    unit: str
    kind: str  # sum, histogram, gauge
    attributes: dict[str, Any]
    resource: dict[str, Any]
    start_ns: int
    time_ns: int
    value: float | int | None = None  # sum, gauge
    monotonic: bool | None = None  # sum
    temporality: int | None = None  # 1 delta, 2 cumulative
    count: int | None = None  # histogram
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class SpanView:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    kind: str  # SERVER, CLIENT, INTERNAL, …
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    status_message: str
    resource: dict[str, Any]
    scope: str


def _points(message: ExportMetricsServiceRequest) -> Iterator[Point]:
    for resource_metrics in message.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for dp in data.data_points:
                    common: dict[str, Any] = {
                        "metric": metric.name,
                        "unit": metric.unit,
                        "kind": kind,
                        "attributes": attributes_of(dp.attributes),
                        "resource": resource,
                        "start_ns": dp.start_time_unix_nano,
                        "time_ns": dp.time_unix_nano,
                    }
                    if kind == "histogram":
                        yield Point(
                            **common,
                            temporality=data.aggregation_temporality,
                            count=dp.count,
                            sum=dp.sum,
                            min=dp.min,
                            max=dp.max,
                            bucket_counts=list(dp.bucket_counts),
                            explicit_bounds=list(dp.explicit_bounds),
                        )
                    else:
                        number = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                        yield Point(
                            **common,
                            value=number,
                            monotonic=getattr(data, "is_monotonic", None),
                            temporality=getattr(data, "aggregation_temporality", None),
                        )


def _spans(message: ExportTraceServiceRequest) -> Iterator[SpanView]:
    for resource_spans in message.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield SpanView(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=attributes_of(span.attributes),
                    status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    status_message=span.status.message,
                    resource=resource,
                    scope=scope_spans.scope.name,
                )


class OtlpCollector:
    """Start with `with OtlpCollector() as collector:`; point exporters at `collector.url`."""

    def __init__(self) -> None:
        self.exports: list[Export] = []
        self.status = 200  # what exports are answered with (e.g. 503 to refuse them)
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> OtlpCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector._receive(self.path, dict(self.headers.items()), body, self)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _receive(
        self, path: str, headers: dict[str, str], body: bytes, reply: BaseHTTPRequestHandler
    ) -> None:
        if path == "/v1/metrics":
            message: Any = ExportMetricsServiceRequest.FromString(body)
            answer: bytes = ExportMetricsServiceResponse().SerializeToString()
        elif path == "/v1/traces":
            message = ExportTraceServiceRequest.FromString(body)
            answer = ExportTraceServiceResponse().SerializeToString()
        else:
            reply.send_error(404)
            return
        status = self.status
        if status == 200:
            with self.lock:
                lowered = {name.lower(): value for name, value in headers.items()}
                self.exports.append(Export(path, lowered, message))
        reply.send_response(status)
        reply.send_header("Content-Type", "application/x-protobuf")
        reply.send_header("Content-Length", str(len(answer)))
        reply.end_headers()
        reply.wfile.write(answer)

    # Reading what arrived.

    def received(self, path: str) -> list[Export]:
        with self.lock:
            return [export for export in self.exports if export.path == path]

    def points(self, name: str) -> list[Point]:
        """The data points of `name` in the newest metrics export that has it."""
        for export in reversed(self.received("/v1/metrics")):
            assert isinstance(export.message, ExportMetricsServiceRequest)
            found = [p for p in _points(export.message) if p.metric == name]
            if found:
                return found
        return []

    def point(self, name: str, attributes: Mapping[str, Any] | None = None) -> Point | None:
        """The one current point of `name` whose attributes include `attributes`."""
        wanted = dict(attributes or {})
        matches = [
            p for p in self.points(name) if all(p.attributes.get(k) == v for k, v in wanted.items())
        ]
        assert len(matches) <= 1, f"{len(matches)} series of {name} match {wanted}: {matches}"
        return matches[0] if matches else None

    def metric_names(self) -> set[str]:
        names: set[str] = set()
        for export in self.received("/v1/metrics"):
            assert isinstance(export.message, ExportMetricsServiceRequest)
            names.update(p.metric for p in _points(export.message))
        return names

    def spans(self) -> list[SpanView]:
        found: list[SpanView] = []
        for export in self.received("/v1/traces"):
            assert isinstance(export.message, ExportTraceServiceRequest)
            found.extend(_spans(export.message))
        return found

    # Waiting for it.

    def wait(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll `check` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.02)

    def wait_point(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        ready: Callable[[Point], bool] = lambda point: True,
        timeout: float = 10.0,
    ) -> Point:
        def check() -> Point | None:
            point = self.point(name, attributes)
            return point if point is not None and ready(point) else None

        point = self.wait(check, timeout)
        assert point is not None, f"no point of {name} with {attributes}; got {self.points(name)}"
        return point

    def wait_spans(self, count: int, timeout: float = 10.0) -> list[SpanView]:
        """At least `count` spans (all that arrived by then)."""
        self.wait(lambda: len(self.spans()) >= count, timeout)
        spans = self.spans()
        assert len(spans) >= count, f"{len(spans)} spans arrived, wanted {count}: {spans}"
        return spans
