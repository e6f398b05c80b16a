"""The in-memory view of the subscription store that the hot path reads.

Requests look keys up in a dict (key hash → subscription): no database round trip per
request. A background task follows the store's change feed, so a change made through any
replica is enforced here within `refresh_interval`; a change made in this process is
applied at once. If the store becomes unreachable, the last known subscriptions keep
being enforced and the outage is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aigw.subscriptions.keys import MAX_KEY_LENGTH, hash_key
from aigw.subscriptions.model import Subscription
from aigw.subscriptions.store import StoreError, SubscriptionStore

log = logging.getLogger("aigw.subscriptions")


class SubscriptionIndex:
    def __init__(self) -> None:
        self._by_hash: dict[str, Subscription] = {}
        self._by_id: dict[str, Subscription] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def apply(self, changed: Iterable[Subscription]) -> None:
        """Take newer versions of subscriptions; an older copy (a late poll) is ignored."""
        for subscription in changed:
            old = self._by_id.get(subscription.id)
            if old is not None:
                if old.revision > subscription.revision:
                    continue
                for stale in (old.primary_key_hash, old.secondary_key_hash):
                    if self._by_hash.get(stale) is old:
                        del self._by_hash[stale]
            self._by_id[subscription.id] = subscription
            self._by_hash[subscription.primary_key_hash] = subscription
            self._by_hash[subscription.secondary_key_hash] = subscription

    def find(self, key: str) -> Subscription | None:
        if len(key) > MAX_KEY_LENGTH:
            return None
        return self._by_hash.get(hash_key(key))


class SubscriptionDirectory:
    """A store plus the index that follows it; owned by one runtime."""

    def __init__(
        self,
        store: SubscriptionStore,
        refresh_interval: float = 1.0,
        index: SubscriptionIndex | None = None,
    ) -> None:
        self.store = store
        self.index = SubscriptionIndex() if index is None else index
        self.refresh_interval = refresh_interval
        # How far the change feed has been read. Only a fetch moves it: a change this process
        # applied itself may be newer than another replica's change not fetched yet.
        self.revision = 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        await self.store.open()
        await self.refresh()
        log.info("subscriptions loaded: %d (revision %d)", len(self.index), self.revision)
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.close()

    async def refresh(self) -> None:
        changed, current = await self.store.changes_since(self.revision)
        self.index.apply(changed)
        self.revision = current

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except (StoreError, OSError) as exc:
                if not self._failing:
                    log.error(
                        "subscription store unreachable; enforcing the last known "
                        "subscriptions until it is back: %s",
                        exc,
                    )
                self._failing = True
                continue
            except Exception:
                log.exception("refreshing subscriptions failed")
                continue
            if self._failing:
                log.info("subscription store reachable again")
                self._failing = False
