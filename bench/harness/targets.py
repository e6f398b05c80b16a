"""What can be benchmarked, and how each target is started and probed for readiness."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from harness.admin import TOKEN_ENV, new_token
from harness.gateway_config import write_gateway_config
from harness.litellm_target import (
    MASTER_KEY,
    ensure_litellm,
    litellm_argv,
    litellm_env,
    write_litellm_config,
)
from harness.minting import VERIFY_SAMPLES, JwtAlg, MintedToken, mint_token
from harness.processes import LOOPBACK, Child, NotReadyError, ProcessRegistry, free_port, wait_ready
from harness.seeding import SeededStore, seed_store
from harness.token_limit import PreparedTokenLimit, prepare_token_limit

BENCH_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PAYLOAD = "payloads/request.json"
PAYLOAD_1K = "payloads/request-1k.json"
TargetKind = Literal["direct", "reference", "aigw", "litellm"]


@dataclass(frozen=True, slots=True)
class TargetSpec:
    name: str
    kind: TargetKind
    description: str
    source: str = ""  # script or config, relative to bench/
    ready_timeout: float = 10.0
    health_path: str = "/healthz"
    headers: tuple[tuple[str, str], ...] = ()
    soak: bool = False  # aigw targets get the long RSS-growth run
    subscriptions: int = 0  # aigw: seed the config's store with this many before starting
    jwt: JwtAlg | None = None  # aigw: key pair in the config, a token signed with it sent
    payload: str = DEFAULT_PAYLOAD  # the request body, relative to bench/
    token_limit: bool = False  # aigw: flush the config's Redis counters, count the prompt
    # aigw: after the gateway has stopped, its config's SQLite usage ledger is read and its
    # log searched for lost records (see harness.ledger)
    ledger: bool = False
    # aigw: its config's members are reached under nginx's SLOW_PREFIX, where completions
    # take MODEL_LATENCY (needs nginx's echo module; without it the target is skipped)
    slow_backend: bool = False

    @property
    def payload_path(self) -> Path:
        return BENCH_DIR / self.payload


TARGETS: Mapping[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec("direct", "direct", "nginx itself: the floor"),
        TargetSpec(
            "ref-aiohttp",
            "reference",
            "minimal aiohttp forwarder",
            "reference/aiohttp_forwarder.py",
        ),
        TargetSpec(
            "ref-granian",
            "reference",
            "minimal ASGI forwarder on granian",
            "reference/granian_forwarder.py",
        ),
        TargetSpec("aigw-bare", "aigw", "aigw, no policies", "configs/bare.yaml", soak=True),
        TargetSpec(
            "aigw-subscriptions",
            "aigw",
            "aigw, no policies, subscription key checked against 10,000 subscriptions",
            "configs/subscriptions.yaml",
            soak=True,
            subscriptions=10_000,
        ),
        TargetSpec(
            "aigw-jwt-rs256",
            "aigw",
            "aigw, validate-jwt only: one RS256 token (RSA 2048), keys inline",
            "configs/jwt.yaml",
            soak=True,
            jwt="RS256",
        ),
        TargetSpec(
            "aigw-jwt-es256",
            "aigw",
            "aigw, validate-jwt only: one ES256 token (EC P-256), keys inline",
            "configs/jwt.yaml",
            soak=True,
            jwt="ES256",
        ),
        TargetSpec(
            "aigw-bare-1k",
            "aigw",
            "aigw, no policies, a 1,000-token prompt (the basis for aigw-token-limit)",
            "configs/bare.yaml",
            payload=PAYLOAD_1K,
        ),
        TargetSpec(
            "aigw-token-limit",
            "aigw",
            "aigw, llm-token-limit only: Redis counters, a 1,000-token prompt estimated",
            "configs/token-limit.yaml",
            soak=True,
            payload=PAYLOAD_1K,
            token_limit=True,
        ),
        TargetSpec(
            "aigw-pool",
            "aigw",
            "aigw, no policies, a two-member pool (PTU first, PAYG second) with breakers",
            "configs/pool.yaml",
        ),
        TargetSpec(
            "aigw-pool-429",
            "aigw",
            "aigw-pool with the PTU member answering 429 to 30 % of requests: all re-sent to PAYG",
            "configs/pool-429.yaml",
            soak=True,
        ),
        TargetSpec(
            "aigw-pool-slow",
            "aigw",
            "aigw-pool against a backend answering like a model: completions after 20 ms",
            "configs/pool.yaml",
            slow_backend=True,
        ),
        TargetSpec(
            "aigw-pool-429-slow",
            "aigw",
            "aigw-pool-slow with the PTU member answering 429 (at once) to 30 % of requests",
            "configs/pool-429.yaml",
            slow_backend=True,
        ),
        TargetSpec(
            "aigw-metered",
            "aigw",
            "aigw-bare plus usage ledger (SQLite), Prometheus metrics and llm-emit-token-metric",
            "configs/metered.yaml",
            soak=True,
            ledger=True,
        ),
        TargetSpec(
            "aigw-policies", "aigw", "aigw, all core policies", "configs/policies.yaml", soak=True
        ),
        TargetSpec(
            "litellm",
            "litellm",
            "LiteLLM proxy 1.108.7, one worker",
            ready_timeout=120.0,
            health_path="/health/liveliness",
            headers=(("Authorization", f"Bearer {MASTER_KEY}"),),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class LaunchContext:
    registry: ProcessRegistry
    workdir: Path  # temp dir for generated configs
    python: str  # the project's interpreter (aiohttp, granian, aigw)
    repo: Path
    litellm_venv: Path


@dataclass(frozen=True, slots=True)
class Admin:
    """Where the target's admin API listens, and its token (never written to the results)."""

    port: int
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RunningTarget:
    spec: TargetSpec
    port: int
    child: Child | None  # None for `direct`: nginx is the backend itself
    ready_ms: float | None
    # What every request sends: the spec's static headers, a seeded subscription key, a token.
    headers: tuple[tuple[str, str], ...] = ()
    seeded: SeededStore | None = None
    minted: MintedToken | None = None
    prepared: PreparedTokenLimit | None = None
    admin: Admin | None = None


def written_config(ctx: LaunchContext, spec: TargetSpec, tag: str) -> Path:
    """Where this launch's copy of an aigw target's config is."""
    # A folder per launch: a relative SQLite store lands next to the config, fresh each time.
    return ctx.workdir / f"{spec.name}-{tag}" / "gateway.yaml"


def _command(
    ctx: LaunchContext, spec: TargetSpec, upstream: str, port: int, tag: str
) -> tuple[list[str], Path, Admin | None]:
    """argv and working directory for one target listening on `port`, forwarding to `upstream`,
    and its admin API if its config enables one."""
    if spec.kind == "reference":
        return (
            [
                ctx.python,
                str(BENCH_DIR / spec.source),
                "--port",
                str(port),
                "--upstream",
                upstream,
            ],
            BENCH_DIR,
            None,
        )
    if spec.kind == "aigw":
        config = written_config(ctx, spec, tag)
        admin_port = free_port()
        has_admin = write_gateway_config(
            BENCH_DIR / spec.source, config, upstream, port, admin_port
        )
        argv = [
            ctx.python,
            "-m",
            "aigw",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        return argv, ctx.repo, Admin(admin_port, new_token()) if has_admin else None
    if spec.kind == "litellm":
        litellm = ensure_litellm(
            ctx.litellm_venv, ctx.python, ctx.registry.log_dir / "litellm-install.log"
        )
        config = write_litellm_config(ctx.workdir / f"litellm-{tag}.yaml", upstream)
        return litellm_argv(litellm, config, port), ctx.workdir, None
    raise ValueError(f"no command for target kind {spec.kind}")


def launch(
    ctx: LaunchContext, spec: TargetSpec, upstream: str, tag: str, measure: bool = False
) -> RunningTarget:
    """Seed its store, mint its token or flush its counters if it has them, start it and wait
    for its health endpoint; raises SetupError, TargetSkippedError or NotReadyError with the
    reason. `measure`: also price in-process what a request pays (JWT validation uncached,
    tokenizer throughput); once per target is enough."""
    if spec.kind == "direct":
        port = urlsplit(upstream).port
        if port is None:
            raise ValueError(f"upstream without a port: {upstream}")
        return RunningTarget(spec, port, child=None, ready_ms=None, headers=spec.headers)
    port = free_port()
    argv, cwd, admin = _command(ctx, spec, upstream, port, tag)
    seeded, minted, prepared = None, None, None
    if spec.subscriptions:
        config = written_config(ctx, spec, tag)
        seeded = seed_store(ctx.python, config, spec.subscriptions, ctx.repo)
    if spec.jwt:
        config = written_config(ctx, spec, tag)
        samples = VERIFY_SAMPLES if measure else 0
        minted = mint_token(ctx.python, config, spec.jwt, ctx.repo, samples)
    if spec.token_limit:
        config = written_config(ctx, spec, tag)
        prepared = prepare_token_limit(ctx.python, config, spec.payload_path, ctx.repo, measure)
    env = litellm_env() if spec.kind == "litellm" else None
    if admin is not None:
        env = {**os.environ, TOKEN_ENV: admin.token}
    child = ctx.registry.start(f"{spec.name}-{tag}", argv, env=env, cwd=cwd)
    try:
        ready_ms = wait_ready(
            child, f"http://{LOOPBACK}:{port}{spec.health_path}", spec.ready_timeout
        )
    except NotReadyError:
        ctx.registry.stop(child)
        raise
    headers = spec.headers + ((seeded.header,) if seeded else ())
    headers += (minted.header,) if minted else ()
    return RunningTarget(
        spec, port, child, round(ready_ms, 1), headers, seeded, minted, prepared, admin
    )
