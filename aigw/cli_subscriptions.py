"""`aigw subscriptions`: products, subscriptions and keys from a shell.

It builds the runtime from the config file (without starting backends), opens the store and
goes through the same SubscriptionService as the admin API: the same rules, the same audit
log. Output is an aligned table, or with `--json` the admin API's documents.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aigw.subscriptions.service import STATE_ACTIONS, IssuedKeys, ServiceError, parse_datetime
from aigw.subscriptions.store import StoreError

if TYPE_CHECKING:
    from aigw.runtime import Runtime
    from aigw.subscriptions.model import Subscription
    from aigw.subscriptions.service import SubscriptionService

BuildRuntime = Callable[[str], "Runtime | None"]
AUDIT_SHOWN = 10


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], build: BuildRuntime
) -> None:
    """Add the command to `aigw`'s subcommands; `build` loads a config, printing its problems."""
    parser = commands.add_parser("subscriptions", help="manage subscriptions and their keys")
    parser.add_argument("--config", "-c", required=True, help="the gateway's YAML config file")
    parser.add_argument("--json", action="store_true", help="JSON output (admin API fields)")
    parser.set_defaults(run=lambda args: _run(args, build))
    # --json is accepted after the command too; SUPPRESS keeps an absent one from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )
    actions = parser.add_subparsers(dest="action", required=True)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=text, parents=[common])

    create = action("create", "create a subscription and print its two keys (shown once)")
    target = create.add_mutually_exclusive_group(required=True)
    target.add_argument("--product", help="product id: scope /products/ID")
    target.add_argument("--scope", help="/products/ID, /apis/ID or /apis")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument("--id", help="subscription id (default: generated)")
    create.add_argument("--owner", help="owner id")
    create.add_argument("--expires", help="expiration date-time, ISO 8601 (UTC if no zone)")
    create.add_argument("--state", choices=("active", "submitted"), default="active")

    listing = action("list", "list subscriptions")
    listing.add_argument("--product", help="only those scoped to this product")
    listing.add_argument("--state", help="only those in this state (as effective now)")

    action("show", "a subscription and its recent changes").add_argument("id")

    update = action("update", "change a subscription's name, owner or expiry")
    update.add_argument("id")
    update.add_argument("--name", help="display name")
    owner = update.add_mutually_exclusive_group()
    owner.add_argument("--owner", help="owner id")
    owner.add_argument("--no-owner", action="store_true", help="clear the owner")
    expiry = update.add_mutually_exclusive_group()
    expiry.add_argument("--expires", help="expiration date-time, ISO 8601")
    expiry.add_argument("--no-expiry", action="store_true", help="clear the expiration date")

    for name, text in (
        ("suspend", "suspend: its keys stop working until it is activated"),
        ("activate", "activate a suspended or submitted subscription"),
        ("cancel", "cancel for good (it cannot be activated again)"),
    ):
        state = action(name, text)
        state.add_argument("id")
        state.add_argument("--comment", help="why (kept as the state comment)")

    regenerate = action("regenerate-key", "replace one key and print the new one (shown once)")
    regenerate.add_argument("id")
    regenerate.add_argument("--which", choices=("primary", "secondary"), required=True)

    action("products", "list the products in the config")


def _run(args: argparse.Namespace, build: BuildRuntime) -> int:
    runtime = build(args.config)
    if runtime is None:
        return 2
    try:
        document, text = asyncio.run(_execute(args, runtime))
    except ServiceError as exc:
        print(f"aigw subscriptions {args.action}: {exc.message}", file=sys.stderr)
        return 1
    except StoreError as exc:  # the service translates the expected ones; this is a backstop
        print(f"aigw subscriptions {args.action}: subscription store: {exc}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(document, indent=2) if args.json else text, flush=True)
    except BrokenPipeError:  # piped into `head`: the reader has gone, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


async def _execute(args: argparse.Namespace, runtime: Runtime) -> tuple[Any, str]:
    """The command's result as (admin API document, table text)."""
    if args.action == "products":  # from the config alone: no store needed
        products = [product.public() for product in runtime.services.products.values()]
        return _listing(products), _products_table(products)
    store = runtime.services.subscriptions.store
    try:
        await store.open()
    except StoreError as exc:
        raise ServiceError(503, f"cannot open the subscription store: {exc}") from None
    try:
        return await _command(args, runtime.services.subscription_service(), runtime)
    finally:
        await store.close()


async def _command(
    args: argparse.Namespace, service: SubscriptionService, runtime: Runtime
) -> tuple[Any, str]:
    actor = _actor()
    now = runtime.services.clock.now()
    if args.action == "list":
        found = [sub.public(now) for sub in await service.find(args.product, args.state)]
        return _listing(found), _subscriptions_table(found)
    if args.action == "create":
        created, keys = await service.create(
            actor=actor,
            display_name=args.name,
            scope=args.scope,
            product=args.product,
            subscription_id=args.id,
            owner_id=args.owner,
            expires_at=parse_datetime(args.expires) if args.expires else None,
            state=args.state,
        )
        return _with_keys(created.public(now), keys)
    if args.action == "show":
        shown = await service.get(args.id)
        entries = [entry.public() for entry in await service.audit(shown.id, AUDIT_SHOWN)]
        document = shown.public(now)
        text = _details(document) + "\n\nRecent changes (newest first):\n" + _audit_table(entries)
        return {**document, "audit": entries}, text
    if args.action == "update":
        return _shown(await service.update(args.id, actor=actor, **_changes(args)), now)
    if args.action in STATE_ACTIONS:
        changed = await service.set_state(
            args.id, STATE_ACTIONS[args.action], actor=actor, comment=args.comment
        )
        return _shown(changed, now)
    changed, keys = await service.regenerate_key(args.id, args.which, actor=actor)
    return _with_keys(changed.public(now), keys)


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["display_name"] = args.name
    if args.owner is not None or args.no_owner:
        changes["owner_id"] = args.owner
    if args.expires is not None or args.no_expiry:
        changes["expires_at"] = parse_datetime(args.expires) if args.expires else None
    return changes


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in the environment nor the passwd file
        return "cli:unknown"


# -- output --------------------------------------------------------------------------------


def _listing(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"value": items, "count": len(items)}


def _shown(subscription: Subscription, now: datetime) -> tuple[Any, str]:
    document = subscription.public(now)
    return document, _details(document)


def _with_keys(document: dict[str, Any], keys: IssuedKeys) -> tuple[Any, str]:
    issued = keys.public()
    lines = [_details(document), ""]
    for field, label in (("primaryKey", "Primary key:  "), ("secondaryKey", "Secondary key:")):
        if field in issued:
            lines.append(f"{label} {issued[field]}")
    lines.append("Store the key(s) now: they are not shown again (regenerate-key replaces a key).")
    return {**document, **issued}, "\n".join(lines)


_DETAIL_FIELDS = (
    ("ID", "id"),
    ("Name", "displayName"),
    ("Scope", "scope"),
    ("State", "state"),
    ("Owner", "ownerId"),
    ("Expires", "expirationDate"),
    ("Created", "createdDate"),
    ("Updated", "updatedDate"),
    ("Comment", "stateComment"),
)


def _details(document: dict[str, Any]) -> str:
    state = document["state"]
    if state != document["storedState"]:
        document = {**document, "state": f"{state} (stored as {document['storedState']})"}
    return "\n".join(f"{label + ':':<9} {_cell(document[key])}" for label, key in _DETAIL_FIELDS)


def _subscriptions_table(items: list[dict[str, Any]]) -> str:
    columns = ("id", "displayName", "scope", "state", "ownerId", "expirationDate")
    return _table(("ID", "NAME", "SCOPE", "STATE", "OWNER", "EXPIRES"), items, columns)


def _products_table(items: list[dict[str, Any]]) -> str:
    rows = [{**item, "apis": ", ".join(item["apis"])} for item in items]
    columns = ("id", "displayName", "state", "subscriptionRequired", "apis")
    return _table(("ID", "NAME", "STATE", "SUBSCRIPTION REQUIRED", "APIS"), rows, columns)


def _audit_table(entries: list[dict[str, Any]]) -> str:
    rows = [{**entry, "details": json.dumps(entry["details"], sort_keys=True)} for entry in entries]
    return _table(("AT", "ACTOR", "ACTION", "DETAILS"), rows, ("at", "actor", "action", "details"))


def _table(headers: Sequence[str], rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [list(headers)] + [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
