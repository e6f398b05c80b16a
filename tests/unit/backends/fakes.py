"""Fake member backends and builders for the breaker, selector and pool tests."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aigw.backends.breaker import CircuitBreaker
from aigw.backends.guarded import GuardedBackend
from aigw.backends.pool import PoolBackend
from aigw.backends.shared import SharedRecord, SharedStateUnavailable
from aigw.clock import ManualClock
from aigw.config.model import BreakerRule, PoolConfig
from aigw.context import RequestContext, Response
from aigw.headers import Headers
from tests.unit.policies.conftest import make_ctx


@dataclass
class Reply:
    """One scripted answer: a head after `head_delay` s, then `chunks`, the first after
    `first_chunk_delay` s (math.inf: never). `error` is raised instead of answering, or
    (with `error_in_stream`) by the stream before its first chunk."""

    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    chunks: Sequence[bytes] = (b'{"ok": true}',)
    head_delay: float = 0.0
    first_chunk_delay: float = 0.0
    error: Exception | None = None
    error_in_stream: bool = False


@dataclass
class FakeBackend:
    """Answers from `script` in order, then `default`; records the bodies it was sent and
    how many of its answers were released."""

    id: str
    script: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    bodies: list[bytes] = field(default_factory=list)
    released: int = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, ctx: RequestContext) -> Response:
        self.bodies.append(ctx.request.body)
        reply = self.script.pop(0) if self.script else self.default
        if reply.head_delay:
            await asyncio.sleep(reply.head_delay)
        if reply.error is not None and not reply.error_in_stream:
            raise reply.error

        async def stream() -> AsyncIterator[bytes]:
            if reply.first_chunk_delay == math.inf:
                await asyncio.Event().wait()
            if reply.first_chunk_delay:
                await asyncio.sleep(reply.first_chunk_delay)
            if reply.error is not None:
                raise reply.error
            for chunk in reply.chunks:
                yield chunk

        async def release() -> None:
            self.released += 1

        headers = Headers([("content-type", "application/json"), *reply.headers])
        return Response(reply.status, headers, stream=stream(), release=release, from_backend=True)

    @property
    def calls(self) -> int:
        return len(self.bodies)


def rule(name: str = "r", **fields: Any) -> BreakerRule:
    """A breaker rule from kebab-case fields; `failure-condition` defaults to one 429."""
    fields.setdefault("failure-condition", {"count": 1, "status-code-ranges": [429]})
    return BreakerRule.model_validate({"name": name, **fields})


def guarded(backend: FakeBackend, clock: ManualClock, *rules: BreakerRule) -> GuardedBackend:
    return GuardedBackend(backend, CircuitBreaker(backend.id, rules, clock), clock, "http")


def pool(
    members: Sequence[tuple[GuardedBackend, int, int]],
    clock: ManualClock,
    **settings: Any,
) -> PoolBackend:
    """A pool over (member, priority, weight) with kebab-case pool settings."""
    config = PoolConfig.model_validate(
        {
            "members": [
                {"backend": member.id, "priority": priority, "weight": weight}
                for member, priority, weight in members
            ],
            **settings,
        }
    )
    return PoolBackend("the-pool", config, [member for member, _, _ in members], clock)


def request(body: bytes = b'{"model": "m", "messages": []}', cookie: str | None = None) -> Any:
    ctx = make_ctx(headers=[("cookie", cookie)] if cookie else None)
    ctx.request.body = body
    return ctx


async def body_of(response: Response) -> bytes:
    assert response.stream is not None
    parts = [chunk async for chunk in response.stream]
    await response.aclose()
    return b"".join(parts)


class MemoryStateStore:
    """The shared-state store's contract in a dict, shared by the "replicas" of a test;
    `down` makes every call fail as an unreachable Redis would. TTLs are not modelled."""

    def __init__(self) -> None:
        self.records: dict[str, str] = {}
        self.down = False
        self.publishes = 0

    async def publish(self, key: str, record: str, not_before: float, ttl: float) -> bool:
        self._check()
        self.publishes += 1
        old = SharedRecord.decode(self.records[key]) if key in self.records else None
        if old is not None and old.state == "open" and old.until > not_before:
            return False
        self.records[key] = record
        return True

    async def read(self, keys: Sequence[str]) -> list[str | None]:
        self._check()
        return [self.records.get(key) for key in keys]

    async def close(self) -> None:
        return None

    def _check(self) -> None:
        if self.down:
            raise SharedStateUnavailable("Redis at 127.0.0.1:1 is unavailable: refused")
