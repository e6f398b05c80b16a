"""`aigw usage report`: the cross-charging report from a shell.

It reads the ledger database the config names (`usage.ledger.url`, else `store.url`)
directly, not through a running gateway, and prints an aligned table, CSV or the admin API's
JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aigw.ledger.report import Report, ReportError, parse_spec, usage_report
from aigw.ledger.schema import LedgerUnavailable

if TYPE_CHECKING:
    from aigw.ledger.query import ReportSpec
    from aigw.runtime import Runtime

BuildRuntime = Callable[[str], "Runtime | None"]
FORMATS = ("table", "csv", "json")


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], build: BuildRuntime
) -> None:
    """Add the command to `aigw`'s subcommands; `build` loads a config, printing its problems."""
    parser = commands.add_parser("usage", help="usage and cost from the usage ledger")
    actions = parser.add_subparsers(dest="action", required=True)
    report = actions.add_parser(
        "report",
        help="usage and cost over a time range, grouped (cross-charging)",
        description="Requests, tokens and cost from the usage ledger, grouped as asked and "
        "always split by currency. Times are UTC; --to is excluded.",
    )
    report.add_argument("--config", "-c", required=True, help="the gateway's YAML config file")
    report.add_argument(
        "--from", dest="start", required=True, help="ISO 8601 date or date-time (included)"
    )
    report.add_argument(
        "--to", dest="end", required=True, help="ISO 8601 date or date-time (excluded)"
    )
    report.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="KEYS",
        help="subscription, product, user, model, deployment, api, operation, backend, reason, "
        "status, day, hour (comma-separated or repeated)",
    )
    report.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only requests with this value, e.g. subscription=team-a (repeatable)",
    )
    report.add_argument("--format", choices=FORMATS, default="table")
    report.set_defaults(run=lambda args: _run(args, build))


def _run(args: argparse.Namespace, build: BuildRuntime) -> int:
    try:
        spec = parse_spec(args.start, args.end, args.group_by, _filters(args.filter))
    except ReportError as exc:
        return _fail(str(exc), 2)
    runtime = build(args.config)
    if runtime is None:
        return 2
    try:
        found = asyncio.run(_report(runtime, Path(args.config).resolve().parent, spec))
    except ReportError as exc:
        return _fail(str(exc), 2)
    except LedgerUnavailable as exc:
        return _fail(f"usage ledger unavailable: {exc}", 1)
    _print(_render(found, args.format))
    return 0


async def _report(runtime: Runtime, base_dir: Path, spec: ReportSpec) -> Report:
    from aigw.ledger.sqlite_store import SqliteLedgerStore
    from aigw.ledger.store import open_ledger_store
    from aigw.ledger.writer import ledger_url

    try:
        store = open_ledger_store(ledger_url(runtime.config), base_dir, migrate=False)
    except ValueError as exc:
        raise ReportError(f"usage ledger url: {exc}") from None
    # Reading must not create an empty database where a typo points.
    if isinstance(store, SqliteLedgerStore) and not store.path.exists():
        raise LedgerUnavailable(f"no ledger database at {store.path}")
    await store.open()
    try:
        return await usage_report(store, spec)
    finally:
        await store.close()


def _filters(pairs: list[str]) -> dict[str, str]:
    filters: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ReportError(f"--filter wants KEY=VALUE, not {pair[:40]!r}")
        if name.strip() in filters:
            raise ReportError(f"--filter {name.strip()!r} is given twice")
        filters[name.strip()] = value
    return filters


def _render(found: Report, form: str) -> str:
    from aigw.ledger.formats import to_csv, to_document, to_table

    if form == "json":
        return json.dumps(to_document(found), indent=2)
    if form == "csv":
        return to_csv(found).rstrip("\n")
    return to_table(found)


def _print(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # piped into `head`: the reader has gone, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(message: str, code: int) -> int:
    print(f"aigw usage report: {message}", file=sys.stderr)
    return code
