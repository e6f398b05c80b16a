"""Metric series kept in memory-mapped files, one set per process, summed when scraped.

Every worker process writes its own files (`counter_<id>.db`, `histogram_<id>.db`,
`gauge_livemax_<id>.db`, `gauge_livesum_<id>.db`) in one directory that all workers share;
whichever worker answers a scrape reads all of them (prometheus_client's multi-process
format and collector), so `/metrics` shows the gateway as a whole. A counter of a worker
that died stays in its file and keeps counting towards the total, as a counter must.

The cardinality guard caps each metric at `max_series` label sets per process. Beyond that,
a new label set is counted under `other` for every label that is not `kept` (such as the
token type), once logged and counted by the `on_drop` callback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.utils import floatToGoString

log = logging.getLogger("aigw.metrics")

# gauge: the largest value any live worker holds; gauge_sum: the sum over live workers.
Kind = Literal["counter", "histogram", "gauge", "gauge_sum"]
_FILE_PREFIX: Final = {
    "counter": "counter",
    "histogram": "histogram",
    "gauge": "gauge_livemax",
    "gauge_sum": "gauge_livesum",
}
OTHER: Final = "other"


class SeriesFiles:
    """This process's files in the shared directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The pid names the files (the supervisor removes a dead worker's gauges by it);
        # the random part keeps two registries of one process (tests) apart.
        self.process_id = f"{os.getpid()}-{os.urandom(3).hex()}"
        self._files: dict[str, MmapedDict] = {}

    def file(self, kind: Kind) -> MmapedDict:
        name = _FILE_PREFIX[kind]
        found = self._files.get(name)
        if found is None:
            path = self.directory / f"{name}_{self.process_id}.db"
            found = self._files[name] = MmapedDict(str(path))
        return found

    def close(self) -> None:
        for mapped in self._files.values():
            mapped.close()
        self._files.clear()


class Family:
    """One metric: its name, help, label names and the series seen so far."""

    def __init__(
        self,
        files: SeriesFiles,
        kind: Kind,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        *,
        kept: Sequence[str] = (),
        buckets: Sequence[float] = (),
        max_series: Callable[[], int],
        on_drop: Callable[[str], None],
    ) -> None:
        self.kind, self.name, self.help_text = kind, name, help_text
        self.labelnames = tuple(labelnames)
        self._kept = frozenset(kept)
        self._buckets = tuple(buckets)
        self._file = files.file(kind)
        self._max_series = max_series
        self._on_drop = on_drop
        self._values: dict[tuple[str, ...], list[float]] = {}
        self._keys: dict[tuple[str, ...], list[str]] = {}
        self._warned = False

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        keys, values = self._series(labels)
        values[0] += amount
        self._file.write_value(keys[0], values[0], 0.0)

    def set(self, labels: tuple[str, ...], value: float) -> None:
        keys, values = self._series(labels)
        values[0] = value
        self._file.write_value(keys[0], value, 0.0)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        keys, values = self._series(labels)
        values[0] += value  # the sum
        index = 1
        for bound in self._buckets:  # few buckets: a scan beats bisect's call
            if value <= bound:
                break
            index += 1
        values[index] += 1
        file = self._file
        file.write_value(keys[0], values[0], 0.0)
        file.write_value(keys[index], values[index], 0.0)

    def _series(self, labels: tuple[str, ...]) -> tuple[list[str], list[float]]:
        values = self._values.get(labels)
        if values is not None:
            return self._keys[labels], values
        if len(self._values) >= self._max_series():
            labels = self._fold(labels)
            values = self._values.get(labels)
            if values is not None:
                return self._keys[labels], values
        keys = self._keys[labels] = self._new_keys(labels)
        values = self._values[labels] = [0.0] * len(keys)
        for key in keys:  # every bucket shows from the start, as Prometheus expects
            self._file.write_value(key, 0.0, 0.0)
        return keys, values

    def _fold(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """The label set to count this one under, with the guard's log line and count."""
        if not self._warned:
            self._warned = True
            log.warning(
                "metric %s reached %d label sets in this process; further ones are counted "
                "with the label value '%s'",
                self.name,
                self._max_series(),
                OTHER,
            )
        self._on_drop(self.name)
        return tuple(
            value if name in self._kept else OTHER
            for name, value in zip(self.labelnames, labels, strict=True)
        )

    def _new_keys(self, labels: tuple[str, ...]) -> list[str]:
        names, values = list(self.labelnames), list(labels)
        if self.kind != "histogram":
            sample = self.name + "_total" if self.kind == "counter" else self.name
            return [mmap_key(self.name, sample, names, values, self.help_text)]
        keys = [mmap_key(self.name, self.name + "_sum", names, values, self.help_text)]
        for bound in (*self._buckets, float("inf")):
            keys.append(
                mmap_key(
                    self.name,
                    self.name + "_bucket",
                    [*names, "le"],
                    [*values, floatToGoString(bound)],
                    self.help_text,
                )
            )
        return keys
