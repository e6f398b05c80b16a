"""Chunk hooks see a streamed body as it passes, completion hooks always run once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw.clock import ManualClock
from aigw.context import RequestContext, Response
from aigw.errors import BackendConnectionFailure, BackendTimeout
from aigw.headers import Headers
from aigw.pipeline.chain import Chain
from aigw.pipeline.executor import complete, execute
from aigw.policies.base import Policy, PolicyConfig
from aigw.relay import StreamAborted, send_response
from tests.unit.policies.conftest import make_ctx


class Recorder(Policy):
    """Observes chunks (upper-casing them) and completion; never short-circuits."""

    name = "test-recorder"

    def __init__(self) -> None:
        super().__init__(PolicyConfig(), None)  # type: ignore[arg-type]
        self.chunks: list[bytes] = []
        self.completed = 0

    def on_chunk(self, ctx: RequestContext, chunk: bytes) -> bytes:
        self.chunks.append(chunk)
        return chunk.upper()

    async def on_complete(self, ctx: RequestContext) -> None:
        self.completed += 1


class Rejecter(Policy):
    name = "test-rejecter"

    def __init__(self) -> None:
        super().__init__(PolicyConfig(), None)  # type: ignore[arg-type]

    async def apply(self, ctx: RequestContext) -> Response | None:
        return Response(403, Headers(), b"no")


async def chunks(*parts: bytes, fail: Exception | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail is not None:
        raise fail


def streaming(*parts: bytes, fail: Exception | None = None) -> Response:
    headers = Headers([("content-type", "text/event-stream"), ("content-length", "99")])
    return Response(200, headers, stream=chunks(*parts, fail=fail))


class Sink:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]


async def test_chunk_hook_sees_and_rewrites_each_chunk_without_buffering() -> None:
    recorder = Recorder()
    ctx = make_ctx()
    response = await execute(Chain(inbound=(recorder,)), ctx, lambda c: _ok(streaming(b"a", b"b")))
    sink = Sink()
    await send_response(sink, response, "rid", ctx)
    assert recorder.chunks == [b"a", b"b"]
    # One body message per chunk as it arrived, then the end of the body.
    assert sink.bodies == [b"A", b"B", b""]
    start = sink.messages[0]
    assert (b"content-length", b"99") not in start["headers"]
    assert (b"x-request-id", b"rid") in start["headers"]
    assert ctx.first_byte_at is not None


async def test_broken_stream_aborts_instead_of_ending_cleanly() -> None:
    ctx = make_ctx()
    sink = Sink()
    with pytest.raises(StreamAborted):
        await send_response(sink, streaming(b"a", fail=BackendTimeout()), "rid", ctx)
    assert sink.bodies == [b"a"]  # no final empty body: the client sees a truncated stream
    assert ctx.last_error is not None and ctx.last_error.reason == "Timeout"


async def test_completion_runs_once_after_backend_error() -> None:
    recorder = Recorder()
    ctx = make_ctx()

    async def failing(ctx: RequestContext) -> Response:
        raise BackendConnectionFailure()

    response = await execute(Chain(inbound=(recorder,)), ctx, failing)
    await complete(ctx)
    assert response.status_code == 502
    assert recorder.completed == 1


async def test_completion_runs_for_statements_before_a_short_circuit_only() -> None:
    before, after = Recorder(), Recorder()
    ctx = make_ctx()
    response = await execute(
        Chain(inbound=(before, Rejecter(), after)), ctx, lambda c: _ok(streaming(b"x"))
    )
    await complete(ctx)
    assert response.status_code == 403
    assert (before.completed, after.completed) == (1, 0)


async def test_a_failing_completion_hook_does_not_skip_the_others() -> None:
    class Broken(Recorder):
        async def on_complete(self, ctx: RequestContext) -> None:
            raise RuntimeError("boom")

    healthy = Recorder()
    ctx = make_ctx()
    await execute(Chain(inbound=(Broken(), healthy)), ctx, lambda c: _ok(streaming(b"x")))
    await complete(ctx)
    assert healthy.completed == 1


async def _ok(response: Response) -> Response:
    return response


async def test_request_times_come_from_the_injected_clock() -> None:
    clock = ManualClock()
    template = make_ctx()
    ctx = RequestContext("rid", template.request, template.api, template.operation, clock)
    assert ctx.timestamp == clock.now()
    clock.advance(2.5)
    await send_response(Sink(), streaming(b"a"), "rid", ctx)
    assert ctx.first_byte_at == ctx.started + 2.5
    clock.advance(1.0)
    assert ctx.elapsed == 3.5
