"""What the limit policies share: the counter store and tokenizer they use (one of each per
runtime), the `on-store-error` choice, and writing remaining-* headers and variables."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Literal

from aigw.context import RequestContext, Response
from aigw.errors import GatewayError
from aigw.limits.store import CounterStore, CounterStoreUnavailable

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext
    from aigw.tokenizer.encodings import TokenCounter

log = logging.getLogger("aigw.limits")

StoreErrorMode = Literal["fail-closed", "fail-open"]
STORE_RETRY_SECONDS = 5


def counter_store(build: BuildContext) -> CounterStore:
    counters = build.settings.counters if build.settings is not None else None
    url = counters.url if counters is not None else None
    if url is None:
        from aigw.limits.memory_store import MemoryCounterStore

        return build.shared(("counters", None), MemoryCounterStore)
    from aigw.limits.redis_store import RedisCounterStore

    timeout = counters.timeout if counters is not None else 0.5
    return build.shared(("counters", url), lambda: RedisCounterStore(url, timeout=timeout))


def token_counter(build: BuildContext) -> TokenCounter:
    from aigw.tokenizer.encodings import CL100K, O200K, TokenCounter

    # Both encodings: which models a request names is only known per request.
    return build.shared(("tokenizer",), lambda: TokenCounter(preload=(O200K, CL100K)))


def store_failure(policy: str, mode: StoreErrorMode, exc: CounterStoreUnavailable) -> None:
    """Fail closed (503 with Retry-After) or, by choice, let the request through."""
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
