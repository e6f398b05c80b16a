"""Metric series kept in memory-mapped files, one set per process, summed when scraped.

Every worker process writes its own files (`counter_<id>.db`, `histogram_<id>.db`,
`gauge_livemax_<id>.db`, `gauge_livesum_<id>.db`) in one directory that all workers share;
whichever worker answers a scrape reads all of them (prometheus_client's multi-process
format and collector), so `/metrics` shows the gateway as a whole. A counter of a worker
that died stays in its file and keeps counting towards the total, as a counter must.

Updates stay in memory and reach the files when `SeriesFiles.flush` runs (the worker does
it every second and before it answers a scrape), so a request pays for a few additions, not
for a file write per sample; each changed series is then written once per flush. Another
worker's scrape may therefore miss the last second of this one's counts, and a worker that is
killed loses them (a graceful stop flushes).

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


class Series:
    """One label set of a metric: its samples' keys in the file and their current values
    (a counter or gauge has one; a histogram its sum, then a count per bucket)."""

    __slots__ = ("dirty", "file", "keys", "values")

    def __init__(self, keys: list[str], file: MmapedDict) -> None:
        self.keys = keys
        self.values = [0.0] * len(keys)
        self.file = file
        self.dirty = True  # every sample shows from the start, as Prometheus expects


class SeriesFiles:
    """This process's files in the shared directory, and the series changed since the last
    flush."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The pid names the files (the supervisor removes a dead worker's gauges by it);
        # the random part keeps two registries of one process (tests) apart.
        self.process_id = f"{os.getpid()}-{os.urandom(3).hex()}"
        self._files: dict[str, MmapedDict] = {}
        self.changed: list[Series] = []

    def file(self, kind: Kind) -> MmapedDict:
        name = _FILE_PREFIX[kind]
        found = self._files.get(name)
        if found is None:
            path = self.directory / f"{name}_{self.process_id}.db"
            found = self._files[name] = MmapedDict(str(path))
        return found

    def flush(self) -> None:
        """Write every changed series to its file. On the event loop's thread only: that is
        where the series change."""
        changed, self.changed = self.changed, []
        for index, series in enumerate(changed):
            try:
                file = series.file
                for key, value in zip(series.keys, series.values, strict=True):
                    file.write_value(key, value, 0.0)
            except BaseException:
                self.changed.extend(changed[index:])  # still changed: the next flush tries
                raise
            series.dirty = False

    def close(self) -> None:
        self.flush()
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
        self._files = files
        self._file = files.file(kind)
        self._max_series = max_series
        self._on_drop = on_drop
        self._series: dict[tuple[str, ...], Series] = {}
        self._warned = False

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.add(self.series(labels), amount)

    def add(self, series: Series, amount: float) -> None:
        """`inc` for a series looked up before (the caller keeps hot ones at hand)."""
        series.values[0] += amount
        if not series.dirty:
            series.dirty = True
            self._files.changed.append(series)

    def set(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series(labels)
        series.values[0] = value
        if not series.dirty:
            series.dirty = True
            self._files.changed.append(series)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        self.sample(self.series(labels), value)

    def sample(self, series: Series, value: float) -> None:
        """`observe` for a series looked up before."""
        values = series.values
        values[0] += value  # the sum
        index = 1
        for bound in self._buckets:  # few buckets: a scan beats bisect's call
            if value <= bound:
                break
            index += 1
        values[index] += 1
        if not series.dirty:
            series.dirty = True
            self._files.changed.append(series)

    def series(self, labels: tuple[str, ...]) -> Series:
        """The series of `labels`, made on first use; past the cap, the folded one."""
        found = self._series.get(labels)
        if found is not None:
            return found
        if len(self._series) >= self._max_series():
            labels = self._fold(labels)
            found = self._series.get(labels)
            if found is not None:
                return found
        found = self._series[labels] = Series(self._new_keys(labels), self._file)
        self._files.changed.append(found)
        return found

    @property
    def full(self) -> bool:
        """New label sets are folded now (callers caching series stop caching then)."""
        return len(self._series) >= self._max_series()

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
