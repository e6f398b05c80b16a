"""The `aigw` command: serve, validate, reload, demo-backend, subscriptions, usage."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aigw import cli_subscriptions, cli_usage
from aigw.config.errors import ConfigError

if TYPE_CHECKING:
    from aigw.namedvalues import KeyVaultCache
    from aigw.runtime import Runtime

# Stands in for a Key Vault value that `validate` did not fetch (masked in its output).
UNFETCHED = "key-vault-value-not-fetched"


def _build(path: str, key_vault: KeyVaultCache | None = None, fetch: bool = True) -> Runtime | None:
    """Everything `validate` checks; prints the problems and returns None if there are any.
    Key Vault named values are read (into `key_vault`) unless `fetch` is false."""
    from aigw.config.loader import key_vault_refs, load_config_text, parse_yaml, read_config_text
    from aigw.namedvalues import KeyVaultCache
    from aigw.namedvalues.keyvault import load_config_fetching
    from aigw.runtime import build_runtime

    try:
        if fetch:
            return build_runtime(load_config_fetching(path, key_vault or KeyVaultCache()))
        text = read_config_text(path)
        unfetched = {ref: UNFETCHED for ref in key_vault_refs(parse_yaml(text)).values()}
        return build_runtime(load_config_text(text, path, unfetched))
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} problem(s) found:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from aigw.namedvalues import KeyVaultCache

    key_vault = KeyVaultCache()
    runtime = _build(args.config, key_vault)  # a bad config never starts (nor crash-loops workers)
    if runtime is None:
        return 2
    if args.workers > 1 and runtime.counts_in_process:
        print(
            f"{args.config}: limits keep their counters in each process by default, so with "
            "--workers > 1 every worker would enforce its own limit. Set counters.url to a "
            "Redis server (e.g. redis://127.0.0.1:6379/0) to share them, or run one worker.",
            file=sys.stderr,
        )
        return 2
    settings = runtime.config.gateway
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    if args.workers > 1:
        from aigw.server.supervisor import run_workers

        return run_workers(
            args.config, host, port, args.workers, runtime.config.admin, runtime.config.operations
        )
    from aigw.server.worker import run_worker

    run_worker(args.config, host, port, key_vault=key_vault)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from aigw.describe import describe_runtime
    from aigw.logs import redact

    runtime = _build(args.config, fetch=args.resolve)
    if runtime is None:
        return 2
    out = [describe_runtime(runtime)]
    for name, ref in runtime.loaded.key_vault.items():
        fetched = "read" if args.resolve else "not fetched; --resolve reads it"
        out.append(f"named value '{name}': Key Vault {ref} ({fetched})")
    print(redact("\n".join(out), runtime.loaded.secrets | {UNFETCHED}))
    return 0


def _reload(args: argparse.Namespace) -> int:
    pid = args.pid
    if pid is None:
        try:
            pid = int(Path(args.pid_file).read_text().strip())
        except (OSError, ValueError) as exc:
            print(f"aigw reload: cannot read pid file {args.pid_file}: {exc}", file=sys.stderr)
            return 2
    # Check first so the operator sees the errors here; the gateway checks again anyway.
    if args.config and _build(args.config, fetch=False) is None:
        return 2
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"aigw reload: cannot signal process {pid}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"reload signalled to process {pid}")
    return 0


def _demo_backend(args: argparse.Namespace) -> int:
    import uvicorn

    from aigw.demo import DemoSettings, create_demo_app

    settings = DemoSettings(
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        error_rate=args.error_rate,
        error_status=args.error_status,
        retry_after_seconds=args.retry_after,
        seed=args.seed,
        extra_models=tuple(name for name in args.models.split(",") if name),
    )
    uvicorn.run(create_demo_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aigw", description="A self-hosted AI gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the gateway")
    serve.add_argument("--config", "-c", required=True, help="YAML config file")
    serve.add_argument("--host", help="listen address (overrides gateway.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides gateway.port)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--pid-file", help="write the main process id here (for `aigw reload`)")
    serve.set_defaults(run=_serve)

    validate = sub.add_parser("validate", help="check a config and print the compiled chains")
    validate.add_argument("config")
    validate.add_argument(
        "--resolve", action="store_true", help="also read the Key Vault named values"
    )
    validate.set_defaults(run=_validate)

    reload = sub.add_parser("reload", help="make a running gateway reload its config (SIGHUP)")
    target = reload.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid-file")
    target.add_argument("--pid", type=int)
    reload.add_argument("--config", help="validate this file first and refuse if it is invalid")
    reload.set_defaults(run=_reload)

    demo = sub.add_parser("demo-backend", help="run the built-in OpenAI-compatible model simulator")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=9000)
    demo.add_argument("--latency-ms", type=float, default=0.0)
    demo.add_argument("--chunk-delay-ms", type=float, default=0.0)
    demo.add_argument("--error-rate", type=float, default=0.0)
    demo.add_argument("--error-status", type=int, default=429)
    demo.add_argument("--retry-after", type=int, default=1, help="seconds, sent with 429s")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--models", default="", help="more model names for /models, comma-separated")
    demo.set_defaults(run=_demo_backend)

    cli_subscriptions.register(sub, _build)
    cli_usage.register(sub, _build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
