"""Interleaved A/B measurement of gateway configs (or code versions), at c=1 by default.

On a small, shared machine the same target's p50 moves by more than a feature costs from one
run to the next, so comparing two `bench/run.py` runs says little. This starts every variant
at once, each its own aigw process behind the same nginx, and measures them in turn, round
after round, so they share whatever the machine does meanwhile. Per round and variant it
reports wrk's p50 and requests per second, and the CPU the gateway process (all its threads,
user and system apart) and a local Redis used per request, read from /proc; then the medians,
and each variant's difference from the first. With `--connections 16` it compares the work
per request where the gateway is CPU-bound (what the c=16 throughput of `run.py` follows).

    .venv/bin/python bench/ab.py configs/bare.yaml configs/metered.yaml
    .venv/bin/python bench/ab.py configs/token-limit.yaml configs/token-limit.yaml@/tmp/old \\
        --payload payloads/request-1k.json --rounds 8 --stream
    .venv/bin/python bench/ab.py configs/pool.yaml configs/pool-429.yaml --connections 16

A variant is `CONFIG` or `CONFIG@TREE`: TREE is a directory holding another version of the
`aigw` package (for instance `git worktree add /tmp/old HEAD~1`), run with the same
interpreter. Configs are rewritten as for `bench/run.py` (loopback URLs go to nginx).
Linux only (/proc); needs nginx and wrk like the benchmark.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from harness.admin import new_token  # noqa: E402
from harness.backend import CHAT_PATH, start_backend  # noqa: E402
from harness.gateway_config import write_gateway_config  # noqa: E402
from harness.processes import Child, ProcessRegistry, free_port, wait_ready  # noqa: E402
from harness.tools import ensure_tools  # noqa: E402
from harness.wrk import run_wrk  # noqa: E402

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass
class Variant:
    label: str
    config: Path
    tree: Path
    child: Child | None = None
    port: int = 0
    rounds: list[Round] = field(default_factory=list)


@dataclass(frozen=True)
class Round:
    p50_ms: float
    rps: float
    user_us: float  # the gateway's CPU per request, in user mode
    system_us: float  # ... and in the kernel
    redis_us: float

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.system_us


def cpu_ticks(pid: int) -> tuple[int, int]:
    """User and system clock ticks of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def redis_pid() -> int | None:
    found = subprocess.run(
        ["pgrep", "-f", "redis-server.*:6379"], capture_output=True, text=True, check=False
    )
    pids = found.stdout.split()
    return int(pids[0]) if pids else None


def bench_file(name: str) -> Path:
    """`name` as given, else relative to bench/ (as the examples write them)."""
    path = Path(name)
    if not path.is_absolute() and not path.exists():
        path = BENCH_DIR / path
    return path.resolve()


def parse_variant(spec: str) -> Variant:
    config, _, tree = spec.partition("@")
    return Variant(spec, bench_file(config), Path(tree).resolve() if tree else REPO)


def start(variant: Variant, index: int, registry: ProcessRegistry, upstream: str) -> None:
    work = registry.log_dir / f"variant-{index}"
    variant.port = free_port()
    config = work / "gateway.yaml"
    write_gateway_config(variant.config, config, upstream, variant.port, free_port())
    env = {**os.environ, "PYTHONPATH": str(variant.tree), "AIGW_BENCH_ADMIN_TOKEN": new_token()}
    argv = [sys.executable, "-m", "aigw", "serve", "--config", str(config)]
    argv += ["--port", str(variant.port), "--workers", "1"]
    variant.child = registry.start(f"variant-{index}", argv, env=env, cwd=variant.tree)
    wait_ready(variant.child, f"http://127.0.0.1:{variant.port}/healthz", 60)


def measure(variant: Variant, wrk: str, ns: argparse.Namespace, redis: int | None) -> str:
    assert variant.child is not None
    url = f"http://127.0.0.1:{variant.port}{CHAT_PATH}"
    body = bench_file(ns.payload) if ns.payload else None
    connections = ns.connections
    run_wrk(wrk, url, connections, 1, stream=ns.stream, body=body)  # warm: connections, caches
    before = cpu_ticks(variant.child.pid), cpu_ticks(redis) if redis else (0, 0)
    result = run_wrk(wrk, url, connections, ns.seconds, stream=ns.stream, body=body)
    after = cpu_ticks(variant.child.pid), cpu_ticks(redis) if redis else (0, 0)
    per_request = 1e6 / TICKS_PER_SECOND / max(1, result.requests)
    (user, system), redis_ticks = (
        [(a - b) * per_request for a, b in zip(now, then, strict=True)]
        for now, then in zip(after, before, strict=True)
    )
    measured = Round(result.p50_ms, result.rps, user, system, sum(redis_ticks))
    variant.rounds.append(measured)
    return f"{variant.label:40} {_figures(measured)}  errors {result.error_count}"


def _figures(measured: Round) -> str:
    return (
        f"p50 {measured.p50_ms:6.3f} ms  {measured.rps:8,.0f} rps  "
        f"cpu/req {measured.cpu_us:6.1f} µs (user {measured.user_us:5.1f}, "
        f"system {measured.system_us:5.1f})  redis/req {measured.redis_us:5.1f} µs"
    )


def summary(variants: list[Variant]) -> list[str]:
    lines = ["", "medians over the rounds (difference from the first variant):"]
    base = variants[0]
    base_p50 = statistics.median(r.p50_ms for r in base.rounds)
    base_rps = statistics.median(r.rps for r in base.rounds)
    for variant in variants:
        rounds = variant.rounds
        median = Round(
            *(
                statistics.median(getattr(r, name) for r in rounds)
                for name in ("p50_ms", "rps", "user_us", "system_us", "redis_us")
            )
        )
        # Paired per round: both ran back to back, so the machine's drift mostly cancels.
        paired = statistics.median(
            mine.p50_ms - theirs.p50_ms for mine, theirs in zip(rounds, base.rounds, strict=True)
        )
        lines.append(
            f"{variant.label:40} {_figures(median)}  p50 {median.p50_ms - base_p50:+.3f} ms "
            f"(paired {paired:+.3f}), rps {100 * median.rps / base_rps:.1f} %"
        )
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/ab.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("variants", nargs="+", help="CONFIG or CONFIG@TREE, two or more")
    parser.add_argument("--payload", help="request body to send (default payloads/request.json)")
    parser.add_argument("--stream", action="store_true", help="the SSE scenario")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3, help="per variant and round")
    parser.add_argument("--connections", type=int, default=1, help="wrk's -c (default 1)")
    ns = parser.parse_args(argv)
    if len(ns.variants) < 2 or ns.rounds < 1 or ns.seconds < 1 or ns.connections < 1:
        parser.error(
            "give two or more variants, --rounds >= 1, --seconds >= 1 and --connections >= 1"
        )
    variants = [parse_variant(spec) for spec in ns.variants]
    tools = ensure_tools()
    registry = ProcessRegistry(Path(tempfile.mkdtemp(prefix="aigw-ab-")))
    try:
        backend = start_backend(registry, registry.log_dir / "nginx", tools.nginx)
        upstream = backend.sse_url if ns.stream else backend.json_url
        for index, variant in enumerate(variants):
            start(variant, index, registry, upstream)
        redis = redis_pid()
        for round_number in range(1, ns.rounds + 1):
            print(f"round {round_number}/{ns.rounds}", flush=True)
            for variant in variants:
                print("  " + measure(variant, tools.wrk, ns, redis), flush=True)
        print("\n".join(summary(variants)))
    finally:
        registry.stop_all()
    print(f"process logs in {registry.log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
