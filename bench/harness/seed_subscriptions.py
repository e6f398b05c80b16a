"""Fill a gateway config's subscription store before the gateway starts (aigw-subscriptions).

Run as a script with the project's interpreter: it imports aigw, which the harness itself
never does (the harness may run under another Python than the targets). It reads the config
the way the gateway does, so the store URL, the products and the key header come from the
config alone. Prints one JSON line: the header to send, its value, and how long seeding took.

    python bench/harness/seed_subscriptions.py --config GATEWAY.yaml --count 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aigw.config.loader import load_config
from aigw.config.model import GatewayConfig
from aigw.subscriptions.keys import hash_key, new_key
from aigw.subscriptions.model import Scope, Subscription
from aigw.subscriptions.store import open_store

ACTOR = "bench-seed"


@dataclass(frozen=True, slots=True)
class KeyedApi:
    api_id: str
    header: str  # where its callers put the key
    products: tuple[str, ...]  # published products that contain it and need a key


def keyed_api(config: GatewayConfig) -> KeyedApi:
    """The first API that requires a key and sits in at least one keyed product."""
    for api_id, api in config.apis.items():
        products = tuple(
            pid
            for pid, product in config.products.items()
            if api_id in product.apis
            and product.subscription_required
            and product.state == "published"
        )
        if api.subscription_required and products:
            return KeyedApi(api_id, api.subscription_key_parameter_names.header, products)
    raise SystemExit("no API with subscription-required in a published keyed product")


def scope_of(n: int, api: KeyedApi) -> Scope:
    """Mostly product keys, as in a real tenant; every 10th an API key, every 50th an all-APIs
    key, so the index holds every scope kind the gate distinguishes."""
    if n % 50 == 0:
        return Scope("all")
    if n % 10 == 0:
        return Scope("api", api.api_id)
    return Scope("product", api.products[n % len(api.products)])


def subscription(n: int, scope: Scope, primary_hash: str, now: datetime) -> Subscription:
    return Subscription(
        id=f"bench-{n:06d}",
        display_name=f"bench app {n}",
        scope=scope,
        state="active",
        created_at=now,
        updated_at=now,
        primary_key_hash=primary_hash,
        secondary_key_hash=hash_key(new_key()),
    )


def build(count: int, api: KeyedApi) -> tuple[list[Subscription], str]:
    """`count` subscriptions and the primary key of one product subscription in the middle
    (not the first or last row, so nothing favours it); every other key is thrown away."""
    chosen = next(n for n in range(count // 2, count) if scope_of(n, api).kind == "product")
    now = datetime.now(UTC)
    subscriptions, chosen_key = [], ""
    for n in range(count):
        key = new_key()
        if n == chosen:
            chosen_key = key
        subscriptions.append(subscription(n, scope_of(n, api), hash_key(key), now))
    return subscriptions, chosen_key


async def insert(config_path: Path, url: str, subscriptions: list[Subscription]) -> None:
    # Relative SQLite paths are resolved against the config's folder, as the gateway does.
    store = open_store(url, config_path.parent)
    await store.open()
    try:
        await store.insert_many(subscriptions, ACTOR)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--count", type=int, default=10_000)
    ns = parser.parse_args()
    if ns.count < 1:
        parser.error("--count must be positive")
    started = time.perf_counter()
    config = load_config(ns.config).config
    api = keyed_api(config)
    subscriptions, key = build(ns.count, api)
    asyncio.run(insert(ns.config.resolve(), config.store.url, subscriptions))
    value = f"Bearer {key}" if api.header.lower() == "authorization" else key
    seconds = round(time.perf_counter() - started, 3)
    print(json.dumps({"header": api.header, "value": value, "count": ns.count, "seconds": seconds}))


if __name__ == "__main__":
    main()
