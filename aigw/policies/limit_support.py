"""What the limit policies share: the counter store and tokenizer they use (one of each per
runtime), the `on-store-error` choice, and writing remaining-* headers and variables."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal

from aigw.context import RequestContext, Response
from aigw.errors import GatewayError
from aigw.limits.store import CounterStore, CounterStoreUnavailable
from aigw.telemetry.events import LIMIT_STORE_ERRORS

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext
    from aigw.tokenizer.encodings import TokenCounter

log = logging.getLogger("aigw.limits")

StoreErrorMode = Literal["fail-closed", "fail-open"]
STORE_RETRY_SECONDS = 5


def counter_store(build: BuildContext) -> CounterStore:
    counters = build.settings.counters if build.settings is not None else None
    url = counters.url if counters is not None else None
    from aigw.limits.memory_store import MemoryCounterStore

    if url is None:
        return build.shared(("counters", None), MemoryCounterStore)
    from aigw.limits.redis_store import RedisCounterStore

    timeout = counters.timeout if counters is not None else 0.5

    # The URL was checked when the config loaded (CountersConfig).
    return build.shared(("counters", url), lambda: RedisCounterStore(url, timeout=timeout))


def token_counter(build: BuildContext) -> TokenCounter:
    from aigw.tokenizer.encodings import O200K, TokenCounter

    # o200k_base (GPT-4o and later, and unknown names) loads before the gateway is ready;
    # cl100k_base (GPT-4, GPT-3.5, embeddings-3) on first use, once per process.
    return build.shared(("tokenizer",), lambda: TokenCounter(preload=(O200K,)))


def lazy_token_counter(build: BuildContext) -> TokenCounter:
    """The limits' tokenizer when the config has one, else one that loads an encoding the
    first time a response without usage must be counted (~0.5 s, once per process), so
    metering alone costs neither start time nor the encodings' memory."""
    from aigw.tokenizer.encodings import TokenCounter

    found = build.resources.get(("tokenizer",))
    if isinstance(found, TokenCounter):
        return found
    if build.settings is not None and build.settings.usage.preload_tokenizer:
        return token_counter(build)
    return build.shared(("tokenizer", "on-first-use"), lambda: TokenCounter(preload=()))


class PendingWrites:
    """Counter corrections made after the response, off the connection's path (the next
    request on a keep-alive connection need not wait for them); drained when the runtime
    closes, so none is lost at shutdown or reload."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def submit(self, write: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(write)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def pending_writes(build: BuildContext) -> PendingWrites:
    # Created after the store, so it is closed (drained) before the store: resources close
    # in reverse order.
    return build.shared(("pending-writes",), PendingWrites)


def store_failure(
    ctx: RequestContext, policy: str, mode: StoreErrorMode, exc: CounterStoreUnavailable
) -> None:
    """Fail closed (503 with Retry-After) or, by choice, let the request through."""
    if ctx.services is not None:
        ctx.services.telemetry.event(LIMIT_STORE_ERRORS, {"policy": policy, "mode": mode})
    if mode == "fail-open":
        log.warning(
            "%s: counter store unavailable, request let through (fail-open): %s", policy, exc
        )
        return
    raise GatewayError(
        "Limits cannot be checked right now; try again shortly",
        status_code=503,
        reason="LimitStoreUnavailable",
        source=policy,
        headers=[("retry-after", str(STORE_RETRY_SECONDS))],
        detail=str(exc),
    )


def whole_seconds(seconds: float) -> int:
    """Retry-After in whole seconds, rounded up so that waiting that long is enough."""
    return max(1, math.ceil(seconds - 1e-9))


def publish(
    ctx: RequestContext,
    response: Response | None,
    header: str | None,
    variable: str | None,
    value: int,
) -> None:
    if variable:
        ctx.variables[variable] = value
    if header and response is not None:
        response.headers.set(header, str(value))
