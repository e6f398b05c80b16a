"""Benchmark aigw against nginx direct and minimal reference forwarders (see bench/README.md).

Starts a static nginx backend, then each target in turn on a free loopback port, drives it
with wrk at c=1 and c=16, measures gateway RSS, soak growth and ready time, and writes
bench/results/latest.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
ALL_TARGETS = (
    "direct",
    "ref-aiohttp",
    "ref-granian",
    "aigw-bare",
    "aigw-subscriptions",
    "aigw-jwt-rs256",
    "aigw-jwt-es256",
    "aigw-bare-1k",
    "aigw-token-limit",
    "aigw-pool",
    "aigw-pool-429",
    "aigw-pool-slow",
    "aigw-pool-429-slow",
    "aigw-metered",
    "aigw-policies",
    "litellm",
)
DEFAULT_TARGETS = ALL_TARGETS[:-1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 s runs, 1 s warm-up, 20,000-request soak"
    )
    parser.add_argument(
        "--duration", type=int, help="seconds per measured run (default 10; --quick: 3)"
    )
    parser.add_argument(
        "--warmup", type=int, help="seconds of unrecorded c=16 load first (default 2; --quick: 1)"
    )
    parser.add_argument(
        "--soak",
        type=int,
        help="requests in the aigw RSS-growth run (default 200000; --quick: 20000)",
    )
    parser.add_argument(
        "--soak-max-seconds", type=int, default=900, help="hard cap on each soak (default 900)"
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated, from: {', '.join(ALL_TARGETS)} (default: all but litellm)",
    )
    parser.add_argument(
        "--litellm", action="store_true", help="also benchmark LiteLLM (installs it in a venv)"
    )
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the SSE streaming scenario (default: on)",
    )
    parser.add_argument(
        "--python",
        default=str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable),
        help="interpreter for aigw and the reference forwarders (default: the repo's .venv)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=BENCH_DIR / "results", help="where latest.* go"
    )
    ns = parser.parse_args(argv)
    targets = [t.strip() for t in ns.targets.split(",") if t.strip()]
    if ns.litellm and "litellm" not in targets:
        targets.append("litellm")
    unknown = sorted(set(targets) - set(ALL_TARGETS))
    if unknown or not targets:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(ALL_TARGETS)}")
    ns.targets = tuple(dict.fromkeys(targets))
    for name, value in (("duration", ns.duration), ("warmup", ns.warmup), ("soak", ns.soak)):
        if value is not None and value < (1 if name == "duration" else 0):
            parser.error(f"--{name} must be {'positive' if name == 'duration' else 'zero or more'}")
    return ns


def _ensure_yaml() -> None:
    """The harness needs PyYAML; re-run under the project venv if this interpreter lacks it."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        if VENV_PYTHON.exists() and Path(sys.executable).resolve() != VENV_PYTHON.resolve():
            os.execv(
                str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]]
            )
        sys.exit("bench/run.py needs PyYAML: run it as .venv/bin/python bench/run.py")


def main(argv: list[str]) -> int:
    ns = parse_args(argv)
    _ensure_yaml()
    from harness.runner import Settings, run_benchmark
    from harness.targets import TARGETS
    from harness.tools import ToolsMissingError

    assert set(TARGETS) == set(ALL_TARGETS), "keep ALL_TARGETS in step with harness.targets"

    settings = Settings(
        targets=ns.targets,
        duration=ns.duration or (3 if ns.quick else 10),
        warmup=ns.warmup if ns.warmup is not None else (1 if ns.quick else 2),
        soak=ns.soak if ns.soak is not None else (20_000 if ns.quick else 200_000),
        soak_chunk=5 if ns.quick else 10,
        soak_max_seconds=max(ns.soak_max_seconds, 1),
        ttfb_samples=50 if ns.quick else 200,
        stream=ns.stream,
        python=ns.python,
        repo=str(REPO),
        litellm_venv=str(BENCH_DIR / ".litellm-venv"),
    )
    try:
        return run_benchmark(settings, ns.results_dir.resolve())
    except ToolsMissingError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
