"""Run wrk (a separate process) with post.lua / soak.lua and parse its BENCH_RESULT line."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.processes import LOOPBACK

BENCH_DIR = Path(__file__).resolve().parent.parent
POST_LUA = BENCH_DIR / "post.lua"
SOAK_LUA = BENCH_DIR / "soak.lua"
MARKER = "BENCH_RESULT "


class WrkError(RuntimeError):
    """wrk failed or printed no result line."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"error_count": self.error_count}


def _threads_for(connections: int) -> int:
    return 1 if connections == 1 else 2


def _argv(
    wrk: str,
    url: str,
    connections: int,
    seconds: int,
    script: Path,
    args: Sequence[str],
    headers: Sequence[str],
) -> list[str]:
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"refusing to load anything but {LOOPBACK}: {url}")
    argv = [
        wrk,
        f"-t{_threads_for(connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
    ]
    for header in headers:
        argv += ["-H", header]
    argv += ["-s", str(script), url]
    return argv + (["--", *args] if args else [])


def _parse(stdout: str, connections: int) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            return WrkResult(
                connections=connections,
                requests=int(raw["requests"]),
                rps=round(float(raw["rps"]), 1),
                p50_ms=raw["p50_us"] / 1000.0,
                p90_ms=raw["p90_us"] / 1000.0,
                p99_ms=raw["p99_us"] / 1000.0,
                mean_ms=round(raw["mean_us"] / 1000.0, 3),
                max_ms=raw["max_us"] / 1000.0,
                errors={k: int(v) for k, v in raw["errors"].items()},
            )
    raise WrkError(f"no {MARKER.strip()} line in wrk output: {stdout[-400:]!r}")


def run_wrk(
    wrk: str,
    url: str,
    connections: int,
    seconds: int,
    stream: bool = False,
    headers: Sequence[str] = (),
    script: Path = POST_LUA,
    extra_args: Sequence[str] = (),
    body: Path | None = None,
) -> WrkResult:
    """One fixed-duration load run; wrk itself is bounded by -d, the subprocess by a timeout.
    `body`: the request body to send instead of payloads/request.json."""
    args = (["stream"] if stream else []) + ([f"body={body}"] if body else []) + list(extra_args)
    argv = _argv(wrk, url, connections, seconds, script, args, headers)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise WrkError(f"wrk did not finish within {seconds + 60} s") from err
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return _parse(done.stdout, connections)


@dataclass
class SoakResult:
    requests: int = 0
    errors: int = 0
    chunks: list[dict[str, Any]] = field(default_factory=list)


def run_soak(
    wrk: str,
    url: str,
    total: int,
    chunk_seconds: int,
    sample: Callable[[], float],
    headers: Sequence[str] = (),
    max_chunks: int = 500,
    body: Path | None = None,
) -> SoakResult:
    """Send `total` requests at c=16 in chunks of at most `chunk_seconds`, sampling RSS after each.

    Each wrk thread stops itself at its share of what is left (soak.lua), so the count is exact
    to within one request per thread; `max_chunks` bounds the loop even if the target stalls.
    """
    result = SoakResult()
    connections = 16
    for _ in range(max_chunks):
        remaining = total - result.requests
        if remaining <= 0:
            break
        per_thread = math.ceil(remaining / _threads_for(connections))
        run = run_wrk(
            wrk,
            url,
            connections,
            chunk_seconds,
            headers=headers,
            script=SOAK_LUA,
            extra_args=[f"limit={per_thread}"],
            body=body,
        )
        result.requests += run.requests
        result.errors += run.error_count
        result.chunks.append({"requests": result.requests, "rss_mb": sample(), "rps": run.rps})
        if run.requests == 0:
            break
    return result
