"""Managing subscriptions from a test, the way another replica or the CLI would: through the
real store and the same service the admin API uses, while the gateway runs on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aigw.subscriptions.model import Subscription
from aigw.subscriptions.service import IssuedKeys, ProductEntry, SubscriptionService
from aigw.subscriptions.store import SubscriptionStore, open_store

T = TypeVar("T")


class StoreAdmin:
    def __init__(self, url: str, base_dir: Path, products: dict[str, list[str]]) -> None:
        self.url, self.base_dir = url, base_dir
        self.products = {
            pid: ProductEntry(pid, pid, None, "published", True, tuple(apis))
            for pid, apis in products.items()
        }
        self.api_ids = frozenset(api for apis in products.values() for api in apis)

    def _run(self, action: Callable[[SubscriptionService], Awaitable[T]]) -> T:
        async def go() -> T:
            store: SubscriptionStore = open_store(self.url, self.base_dir)
            await store.open()
            try:
                return await action(SubscriptionService(store, self.products, self.api_ids | {"x"}))
            finally:
                await store.close()

        return asyncio.run(go())

    def create(self, scope: str, **options: Any) -> tuple[Subscription, IssuedKeys]:
        options.setdefault("display_name", "test app")
        return self._run(lambda service: service.create(actor="test", scope=scope, **options))

    def keys(self, scope: str, **options: Any) -> tuple[str, str, str]:
        """A new subscription: (id, primary key, secondary key)."""
        subscription, keys = self.create(scope, **options)
        assert keys.primary and keys.secondary
        return subscription.id, keys.primary, keys.secondary

    def set_state(self, subscription_id: str, state: Any) -> Subscription:
        return self._run(
            lambda service: service.set_state(subscription_id, state, actor="test", comment=None)
        )

    def update(self, subscription_id: str, **changes: Any) -> Subscription:
        return self._run(lambda service: service.update(subscription_id, actor="test", **changes))

    def regenerate(self, subscription_id: str, slot: Any) -> str:
        _, keys = self._run(
            lambda service: service.regenerate_key(subscription_id, slot, actor="test")
        )
        key = keys.primary or keys.secondary
        assert key
        return key
