"""The benchmark run: backend up, each target in turn, load, memory, soak, report files."""

from __future__ import annotations

import http.client
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from harness.admin import backend_states
from harness.backend import CHAT_PATH, ECHO_MODULE, SLOW_PREFIX, StaticBackend, start_backend
from harness.ledger import ledger_result
from harness.markdown import render
from harness.probe import preflight, time_to_first_byte
from harness.processes import LOOPBACK, NotReadyError, ProcessRegistry, rss_tree
from harness.report import checks_json, compute_checks
from harness.scripts import SetupError, TargetSkippedError
from harness.targets import (
    TARGETS,
    LaunchContext,
    RunningTarget,
    TargetSpec,
    launch,
    written_config,
)
from harness.tools import Tools, ensure_tools, tool_versions
from harness.wrk import WrkError, run_soak, run_wrk


@dataclass(frozen=True, slots=True)
class Settings:
    targets: tuple[str, ...]
    duration: int  # seconds per measured wrk run
    warmup: int  # seconds of c=16 load before measuring, not recorded
    soak: int  # requests in the RSS-growth run (aigw targets); 0 disables it
    soak_chunk: int  # seconds per soak chunk; RSS is sampled after each
    soak_max_seconds: int  # hard cap on the soak's wall time
    ttfb_samples: int
    stream: bool
    python: str
    repo: str
    litellm_venv: str


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    stream: bool


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _wrk_headers(target: RunningTarget) -> list[str]:
    return [f"{key}: {value}" for key, value in target.headers]


def _soak(settings: Settings, tools: Tools, url: str, target: RunningTarget) -> dict[str, Any]:
    assert target.child is not None
    pid = target.child.pid
    start = rss_tree(pid).total_mb
    max_chunks = max(1, settings.soak_max_seconds // settings.soak_chunk)
    sample = lambda: rss_tree(pid).total_mb  # noqa: E731
    soak = run_soak(
        tools.wrk,
        url,
        settings.soak,
        settings.soak_chunk,
        sample,
        _wrk_headers(target),
        max_chunks,
        target.spec.payload_path,
    )
    end = rss_tree(pid).total_mb
    return {
        "requests": soak.requests,
        "errors": soak.errors,
        "complete": soak.requests >= settings.soak,
        "rss_start_mb": start,
        "rss_end_mb": end,
        "growth_mb": round(end - start, 1),
        "series": soak.chunks,
    }


def _status(result: Mapping[str, Any]) -> str:
    runs = result.get("runs", {}).values()
    errors = sum(r["error_count"] for r in runs) + (result.get("soak") or {}).get("errors", 0)
    total = sum(r["requests"] for r in runs)
    return "ok" if errors == 0 else f"errors: {errors} failed responses (of {total:,} measured)"


def measure(
    settings: Settings, tools: Tools, target: RunningTarget, scenario: Scenario
) -> dict[str, Any]:
    """Preflight, warm up, c=1 and c=16 runs, RSS before/after, TTFB (stream), soak (aigw)."""
    spec, child = target.spec, target.child
    extra, payload = dict(target.headers), spec.payload_path
    problem = preflight(target.port, payload, scenario.stream, extra)
    if problem:
        return {"status": f"failed: {problem}", "ready_ms": target.ready_ms}
    result: dict[str, Any] = {
        "status": "ok",
        "ready_ms": target.ready_ms,
        "payload": {"file": spec.payload, "bytes": len(payload.read_bytes().rstrip())},
    }
    if target.seeded:  # the key itself stays out of the results
        result["seeded"] = {
            "subscriptions": target.seeded.subscriptions,
            "seconds": target.seeded.seconds,
        }
    if target.minted:
        result["jwt"] = target.minted.to_json()
    if target.prepared:
        result["token_limit"] = target.prepared.to_json()
    if child:
        result["rss_idle"] = asdict(rss_tree(child.pid))
    url = f"http://{LOOPBACK}:{target.port}{CHAT_PATH}"
    headers = _wrk_headers(target)
    if settings.warmup > 0:
        warmup = run_wrk(
            tools.wrk, url, 16, settings.warmup, scenario.stream, headers, body=payload
        )
        result["warmup_requests"] = warmup.requests
    result["runs"] = {
        f"c{c}": run_wrk(
            tools.wrk, url, c, settings.duration, scenario.stream, headers, body=payload
        ).to_json()
        for c in (1, 16)
    }
    if child:
        result["rss_after_c16"] = asdict(rss_tree(child.pid))
    if target.admin:
        try:
            result["backends"] = backend_states(target.admin.port, target.admin.token)
        except (OSError, ValueError, KeyError, http.client.HTTPException) as err:
            result["backends_error"] = f"admin API: {err!r}"
    if scenario.stream and settings.ttfb_samples > 0:
        result["ttfb"] = time_to_first_byte(
            target.port, payload, True, extra, settings.ttfb_samples
        )
    if spec.soak and child and settings.soak > 0 and not scenario.stream:
        result["soak"] = _soak(settings, tools, url, target)
    result["status"] = _status(result)
    return result


def bench_target(
    ctx: LaunchContext,
    settings: Settings,
    tools: Tools,
    backend: StaticBackend,
    spec: TargetSpec,
    scenario: Scenario,
) -> dict[str, Any]:
    upstream = backend.sse_url if scenario.stream else backend.json_url
    if spec.slow_backend:
        if not backend.slow:
            return {"status": f"skipped: nginx cannot load its echo module ({ECHO_MODULE})"}
        upstream += SLOW_PREFIX  # the config's member paths go under it
    # In-process costs (uncached JWT validation, tokenizer throughput) do not depend on the
    # scenario: measured once, with JSON.
    try:
        target = launch(ctx, spec, upstream, scenario.name, measure=not scenario.stream)
    except TargetSkippedError as err:
        return {"status": f"skipped: {err}"}
    except (NotReadyError, SetupError, OSError, ValueError) as err:
        return {"status": f"failed: {err}"}
    try:
        result = measure(settings, tools, target, scenario)
    except (WrkError, OSError, ValueError, http.client.HTTPException) as err:
        return {"status": f"failed: {err}", "ready_ms": target.ready_ms}
    finally:
        if target.child:
            ctx.registry.stop(target.child)  # SIGTERM: the gateway writes what it buffered
    if spec.ledger and target.child and "runs" in result:
        config = written_config(ctx, spec, scenario.name)
        result["ledger"] = ledger_result(config, target.child.log_path, result)
    return result


def tokenizer_line(tokenizer: Mapping[str, Any]) -> str:
    figures = [
        f"{what} {t['tokens']:,} tokens in {t['p50_us']:,.0f} µs ="
        f" {t['tokens_per_s'] / 1e6:.1f} M tokens/s (first, cold: {t['first_us']:,.0f} µs)"
        for what, t in (("1k prompt", tokenizer["prompt"]), ("100 KB", tokenizer["text_100k"]))
    ]
    return "tokenizer " + ", ".join(figures)


def summary_line(result: Mapping[str, Any]) -> str:
    runs = result.get("runs", {})
    parts = [
        f"c={run[1:]} {r['rps']:>9,.0f} rps p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms"
        for run, r in runs.items()
    ]
    if result.get("ready_ms") is not None:
        parts.append(f"ready {result['ready_ms']:.0f} ms")
    if seeded := result.get("seeded"):
        parts.append(f"seeded {seeded['subscriptions']:,} subscriptions in {seeded['seconds']} s")
    if validate := (result.get("jwt") or {}).get("validate"):
        parts.append(
            f"{result['jwt']['alg']} validate() in-process: uncached"
            f" p50 {validate['uncached_p50_us']:.0f} µs, cached {validate['cached_p50_us']:.0f} µs"
        )
    if prepared := result.get("token_limit"):
        parts.append(f"prompt {prepared['prompt_tokens']:,} tokens ({prepared['encoding']})")
        if tokenizer := prepared.get("tokenizer"):
            parts.append(tokenizer_line(tokenizer))
    for backend, state in (result.get("backends") or {}).items():
        trip = "never tripped" if state["last_trip"] is None else "tripped"
        parts.append(
            f"{backend} {state['requests']:,} req, {state['failures']:,} failed,"
            f" {state['state']}, {trip}"
        )
    if soak := result.get("soak"):
        parts.append(f"soak {soak['requests']:,} req, RSS +{soak['growth_mb']} MB")
    if ledger := result.get("ledger"):
        parts.append(
            f"ledger {ledger['rows']:,} rows for {ledger['completed_requests']:,} requests,"
            f" {ledger['losses']} loss line(s) in the log"
            if "rows" in ledger
            else f"ledger: {ledger['error']}"
        )
    return " | ".join([*parts, result.get("status", "")])


def _meta(tools: Tools, settings: Settings) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "harness_python": sys.version.split()[0],
        "target_python": settings.python,
        **tool_versions(tools),
    }


def _run_scenarios(
    ctx: LaunchContext,
    settings: Settings,
    tools: Tools,
    backend: StaticBackend,
    results: dict[str, Any],
) -> None:
    scenarios = [Scenario("json", False)] + ([Scenario("stream", True)] if settings.stream else [])
    for scenario in scenarios:
        table: dict[str, Any] = results["scenarios"].setdefault(scenario.name, {})
        for name in settings.targets:
            print(f"[{scenario.name}] {name}: {TARGETS[name].description} ...", flush=True)
            table[name] = bench_target(ctx, settings, tools, backend, TARGETS[name], scenario)
            print(f"    {summary_line(table[name])}", flush=True)


def write_outputs(results: dict[str, Any], results_dir: Path) -> str:
    checks = compute_checks(results.get("scenarios", {}))
    results["checks"] = checks_json(checks)
    results["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    markdown = render(results, checks)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (results_dir / "latest.md").write_text(markdown)
    return markdown


def run_benchmark(settings: Settings, results_dir: Path) -> int:
    """Run everything; every process started is stopped on the way out, Ctrl-C included."""
    tools = ensure_tools()
    results: dict[str, Any] = {
        "meta": _meta(tools, settings),
        "settings": asdict(settings),
        "scenarios": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="aigw-bench-"))
    registry = ProcessRegistry(results_dir / "logs")
    # Also when started in the background, where SIGINT arrives ignored: stop cleanly on any.
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in stop_signals}
    code = 0
    try:
        slow = any(TARGETS[name].slow_backend for name in settings.targets)
        backend = start_backend(registry, workdir / "nginx", tools.nginx, slow)
        ctx = LaunchContext(
            registry, workdir, settings.python, Path(settings.repo), Path(settings.litellm_venv)
        )
        _run_scenarios(ctx, settings, tools, backend, results)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process the benchmark started", file=sys.stderr)
        results["interrupted"], code = True, 130
    except NotReadyError as err:
        print(f"the nginx backend did not start: {err}", file=sys.stderr)
        results["error"], code = f"nginx backend: {err}", 1
    finally:
        for sig in stop_signals:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        try:
            registry.stop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print()
    print(write_outputs(results, results_dir))
    print(f"wrote {results_dir}/latest.md and latest.json (process logs in {registry.log_dir})")
    return code
