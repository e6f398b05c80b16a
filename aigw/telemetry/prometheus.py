"""The gateway's Prometheus metrics: what each finished request adds, and `/metrics` text.

One `PrometheusMetrics` per process lives as long as the process (reloads keep it, so
counters never go back). Its series are in files shared by all worker processes
(`aigw.telemetry.series`), so any worker's `/metrics` shows the sum over all of them.
See the README's metrics reference for every name and label.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from aigw.telemetry.events import DESCRIPTIONS, METRIC_SERIES_DROPPED
from aigw.telemetry.labels import label_name
from aigw.telemetry.record import RequestRecord
from aigw.telemetry.series import Family, Kind, Series, SeriesFiles
from aigw.usage.model import Usage

LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0
)  # fmt: skip
TOKEN_TYPES: Final = ("prompt", "completion", "total", "cached_prompt", "reasoning")
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

BREAKER_STATES: Final = {"closed": 0, "half-open": 1, "open": 2}
_REQUEST_LABELS: Final = ("api", "operation", "backend", "status")


def token_counts(usage: Usage) -> tuple[int, int, int, int, int]:
    """The counts in TOKEN_TYPES order."""
    return (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
    )


class PrometheusMetrics:
    def __init__(self, directory: Path, max_series: int = 2000) -> None:
        self.directory = directory
        self.max_series = max_series
        self._files = SeriesFiles(directory)
        self._families: dict[tuple[str, tuple[str, ...]], Family] = {}
        # The emit policies' families, by their dimension names as configured.
        self._emitted: dict[tuple[str, ...], Family] = {}
        requests = self._family
        self._requests = requests("counter", "aigw_requests", "Requests answered", _REQUEST_LABELS)
        self._duration = requests(
            "histogram",
            "aigw_request_duration_seconds",
            "Time from the request's arrival to the end of its response",
            _REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
        )
        self._first_byte = requests(
            "histogram",
            "aigw_time_to_first_token_seconds",
            "Time from the request's arrival to the first byte of the response body "
            "(for a streamed completion: its first token)",
            _REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
        )
        self._rejections = requests(
            "counter",
            "aigw_rejections",
            "Requests ended by an error, by its reason (policy decisions, backend failures)",
            ("api", "operation", "status", "reason"),
        )
        self._shadow = requests(
            "counter",
            "aigw_shadow_rejections",
            "Rejections that policies in shadow mode recorded instead of enforcing",
            ("api", "operation", "reason"),
        )
        self._tokens = requests(
            "counter",
            "aigw_request_tokens",
            "Tokens of model requests, by the model and backend that served them",
            ("api", "operation", "model", "backend", "source", "token_type"),
            kept=("token_type", "source"),
        )
        self._breaker_state = requests(
            "gauge",
            "aigw_backend_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open (the most open any worker sees)",
            ("backend",),
        )
        self._in_flight = requests(
            "gauge_sum", "aigw_backend_in_flight", "Requests waiting on the backend", ("backend",)
        )
        self._backend_requests = requests(
            "counter", "aigw_backend_requests", "Answers from (or attempts at) the backend",
            ("backend",),
        )  # fmt: skip
        self._ledger_buffered = requests(
            "gauge_sum",
            "aigw_ledger_buffered_records",
            "Usage ledger rows waiting to be written, all workers",
            (),
        )
        self._backend_failures = requests(
            "counter",
            "aigw_backend_failures",
            "Attempts answered 429 or 5xx, or not at all",
            ("backend",),
        )
        # The series a request adds to, by its labels: one lookup per request instead of one
        # per sample. Kept only for label sets below the cardinality cap, hence bounded.
        self._request_series: dict[tuple[str, ...], tuple[Series, Series]] = {}
        self._token_series: dict[tuple[object, ...], list[Series | None]] = {}

    def _family(
        self,
        kind: Kind,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        *,
        kept: Sequence[str] = (),
        buckets: Sequence[float] = (),
    ) -> Family:
        key = (name, tuple(labelnames))
        family = self._families.get(key)
        if family is None:
            family = self._families[key] = Family(
                self._files,
                kind,
                name,
                help_text,
                labelnames,
                kept=kept,
                buckets=buckets,
                max_series=lambda: self.max_series,
                on_drop=self._dropped,
            )
        return family

    def _dropped(self, metric: str) -> None:
        self.event(METRIC_SERIES_DROPPED, {"metric": metric})

    # MetricsSink

    def request_finished(self, record: RequestRecord) -> None:
        status = str(record.status)
        labels = (record.api_id, record.operation_id, record.backend_id or "", status)
        series = self._request_series.get(labels)
        if series is None:
            series = self._series_of_request(labels)
        self._requests.add(series[0], 1.0)
        self._duration.sample(series[1], record.duration)
        if record.time_to_first_byte is not None:  # only answers with a body have one
            self._first_byte.observe(labels, record.time_to_first_byte)
        if record.reason is not None and record.status >= 400:
            self._rejections.inc((record.api_id, record.operation_id, status, record.reason))
        for reason in record.shadow_rejections:
            self._shadow.inc((record.api_id, record.operation_id, reason))
        usage = record.usage
        if usage is not None:
            model = record.model or record.deployment or ""
            backend = record.backend_id or ""
            head = (record.api_id, record.operation_id, model, backend, usage.source)
            self._add_tokens(self._tokens, head, usage, skip_zero=True)

    def _series_of_request(self, labels: tuple[str, ...]) -> tuple[Series, Series]:
        found = (self._requests.series(labels), self._duration.series(labels))
        if not (self._requests.full or self._duration.full):
            self._request_series[labels] = found
        return found

    def _add_tokens(
        self, family: Family, head: tuple[str, ...], usage: Usage, *, skip_zero: bool = False
    ) -> None:
        """Each token type's count to `family`, under `head` + the token type label; with
        `skip_zero`, a type without tokens gets no series."""
        counts = token_counts(usage)
        if skip_zero and not any(counts):
            return  # nothing to add, and no row to keep for it
        key = (family, *head)
        row = self._token_series.get(key)
        if row is None:
            row = [None] * len(TOKEN_TYPES)
            if not family.full:
                self._token_series[key] = row
        for index, count in enumerate(counts):
            if not count and skip_zero:
                continue
            series = row[index]
            if series is None:
                series = family.series((*head, TOKEN_TYPES[index]))
                if not family.full:  # not a folded one: that must count each drop
                    row[index] = series
            family.add(series, count)

    def cached_rows(self) -> int:
        """Token series rows kept for quick lookup (bounded by the cardinality cap)."""
        return len(self._token_series)

    def unrouted(self, status: int, duration: float) -> None:
        """A request that matched no API (or was refused before routing)."""
        labels = ("", "", "", str(status))
        self._requests.inc(labels)
        self._duration.observe(labels, duration)

    def backend_state(
        self, backend_id: str, state: str, in_flight: int, requests: int, failures: int
    ) -> None:
        """One backend's breaker as this worker sees it (published every second)."""
        labels = (backend_id,)
        self._breaker_state.set(labels, BREAKER_STATES.get(state, 0))
        self._in_flight.set(labels, in_flight)
        # Counts of this worker's current config: a reload starts them again (a counter
        # reset, which rate() and increase() handle).
        self._backend_requests.set(labels, requests)
        self._backend_failures.set(labels, failures)

    def ledger_buffered(self, rows: int) -> None:
        """Usage ledger rows this worker holds, not yet written (published every second)."""
        self._ledger_buffered.set((), rows)

    def tokens_emitted(self, namespace: str, dimensions: Mapping[str, str], usage: Usage) -> None:
        key = tuple(dimensions)
        family = self._emitted.get(key)
        if family is None:
            family = self._emitted[key] = self._family(
                "counter",
                "aigw_llm_tokens",
                "Tokens counted by llm-emit-token-metric policies, by their dimensions",
                ("namespace", *(label_name(name) for name in key), "token_type"),
                kept=("namespace", "token_type"),
            )
        self._add_tokens(family, (namespace, *dimensions.values()), usage)

    def event(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        family = self._family(
            "counter", f"aigw_{name}", DESCRIPTIONS.get(name, name), tuple(labels)
        )
        family.inc(tuple(labels.values()), amount)

    # Exposition

    def flush(self) -> None:
        """Write what changed to this process's files, where every worker's scrape reads it
        (on the event loop's thread; the worker does it every second and before a scrape)."""
        self._files.flush()

    def render(self) -> bytes:
        """The text format, summed over every worker's files, with this process's series
        flushed first (for callers without an event loop; the listener uses `exposition`)."""
        self.flush()
        return self.exposition()

    def exposition(self) -> bytes:
        """The text format as the files have it (blocking: call in a thread, after `flush`
        on the loop)."""
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=str(self.directory))
        return generate_latest(registry)

    def close(self) -> None:
        """Flush and close the files."""
        self._files.close()


class MetricsDirectory:
    """The directory the worker processes share: made at start, removed at exit."""

    ENV: Final = "AIGW_METRICS_DIR"

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="aigw-metrics-"))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def forget_process(self, pid: int) -> None:
        """A dead worker's gauges describe nothing any more (its counters still count)."""
        for path in self.path.glob(f"gauge_live*_{pid}-*.db"):
            path.unlink(missing_ok=True)
