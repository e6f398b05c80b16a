"""The in-process backend behaves like a remote one: streaming, flow control, timeouts, errors."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from aigw.backends.factory import build_backend
from aigw.backends.inprocess import QUEUE_SIZE, InProcessBackend, Message, Receive, Send
from aigw.config.model import BackendConfig
from aigw.context import Response
from aigw.demo import create_demo_app
from aigw.errors import BackendProtocolError, BackendTimeout
from tests.unit.policies.conftest import make_ctx

HEAD: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")],
}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "Hello there, model!"}]}
Script = Callable[[Send], Awaitable[None]]


def chunk(data: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


class Probe:
    """A tiny ASGI app running `script`; records how many messages it sent and if cancelled."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sent = 0
        self.cancelled = asyncio.Event()

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        async def counting(message: Message) -> None:
            await send(message)
            self.sent += 1

        try:
            await self.script(counting)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class LoopErrors:
    """Collects what asyncio reports to the loop's exception handler (never-retrieved …)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self) -> None:
        gc.collect()  # a task's un-retrieved exception is reported when it is collected
        assert self.messages == []


@pytest.fixture
async def loop_errors() -> AsyncIterator[LoopErrors]:
    loop = asyncio.get_running_loop()
    errors = LoopErrors()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.messages.append(context["message"]))
    yield errors
    gc.collect()
    loop.set_exception_handler(previous)


async def read_all(response: Response) -> list[bytes]:
    assert response.stream is not None
    return [part async for part in response.stream]


async def sleep_before_head(send: Send) -> None:
    await asyncio.sleep(10)
    await send(HEAD)


async def stall_after_first_chunk(send: Send) -> None:
    await send(HEAD)
    await send(chunk(b"a"))
    await asyncio.sleep(10)
    await send(chunk(b"b", more=False))


async def test_demo_app_answers_json() -> None:
    ctx = make_ctx()
    ctx.request.body = json.dumps(CHAT).encode()
    response = await InProcessBackend("demo", create_demo_app(), 5.0).send(ctx)
    assert response.status_code == 200
    assert response.headers.get("content-type") == "application/json"
    body = json.loads(b"".join(await read_all(response)))
    assert body["object"] == "chat.completion"
    await response.aclose()


async def test_demo_app_streams_server_sent_events(loop_errors: LoopErrors) -> None:
    ctx = make_ctx(headers=[("x-demo-chunks", "5")])
    ctx.request.body = json.dumps({**CHAT, "stream": True}).encode()
    response = await InProcessBackend("demo", create_demo_app(), 5.0).send(ctx)
    assert response.headers.get("content-type", "").startswith("text/event-stream")
    events = await read_all(response)
    assert all(event.startswith(b"data: ") for event in events)
    assert events[-1] == b"data: [DONE]\n\n"
    assert len(events) >= 7  # role chunk, 5 content chunks, finish chunk, [DONE]
    await response.aclose()
    del response
    loop_errors.check()


async def test_hop_by_hop_response_headers_are_dropped() -> None:
    async def script(send: Send) -> None:
        await send(HEAD)
        await send(chunk(b"ok", more=False))

    response = await InProcessBackend("t", Probe(script), 5.0).send(make_ctx())
    assert response.headers.get("connection") is None
    assert response.headers.get("content-type") == "text/plain"
    assert await read_all(response) == [b"ok"]


async def test_caller_cancelled_before_head_cancels_the_app() -> None:
    probe = Probe(sleep_before_head)
    waiting = asyncio.create_task(InProcessBackend("t", probe, 5.0).send(make_ctx()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(probe.cancelled.wait(), 1)


async def test_app_raising_before_head_is_a_502(
    loop_errors: LoopErrors, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(send: Send) -> None:
        raise RuntimeError("boom before head")

    with pytest.raises(BackendProtocolError) as caught:
        await InProcessBackend("t", Probe(script), 5.0).send(make_ctx())
    assert caught.value.status_code == 502
    del caught
    await asyncio.sleep(0)
    loop_errors.check()
    assert "boom before head" in caplog.text


async def test_body_before_head_is_a_502() -> None:
    async def script(send: Send) -> None:
        await send(chunk(b"no head", more=False))

    with pytest.raises(BackendProtocolError):
        await InProcessBackend("t", Probe(script), 5.0).send(make_ctx())


@pytest.mark.parametrize("fails", [True, False], ids=["raises", "returns"])
async def test_app_ending_mid_stream_is_a_truncated_response(
    fails: bool, loop_errors: LoopErrors
) -> None:
    async def script(send: Send) -> None:
        await send(HEAD)
        await send(chunk(b"a"))
        if fails:
            raise RuntimeError("boom mid-stream")

    response = await InProcessBackend("t", Probe(script), 5.0).send(make_ctx())
    assert response.stream is not None
    assert await anext(response.stream) == b"a"
    with pytest.raises(BackendProtocolError, match="truncated") as caught:
        await anext(response.stream)
    assert caught.value.status_code == 502
    await response.aclose()
    del response, caught
    await asyncio.sleep(0)
    loop_errors.check()


async def test_fast_app_waits_for_a_slow_reader() -> None:
    async def script(send: Send) -> None:
        await send(HEAD)
        for index in range(1000):
            await send(chunk(b"%d," % index))
        await send(chunk(b"", more=False))

    probe = Probe(script)
    response = await InProcessBackend("t", probe, 5.0).send(make_ctx())
    for _ in range(20):
        await asyncio.sleep(0)
    assert probe.sent <= QUEUE_SIZE + 2  # the head, a full queue, one blocked in `send`
    body = b"".join(await read_all(response))
    assert body == b"".join(b"%d," % index for index in range(1000))
    assert probe.sent == 1002


async def test_slow_reader_is_not_a_backend_timeout() -> None:
    async def script(send: Send) -> None:
        await send(HEAD)
        for part in (b"a", b"b", b"c"):
            await send(chunk(part))
        await send(chunk(b"", more=False))

    response = await InProcessBackend("t", Probe(script), 0.02).send(make_ctx())
    assert response.stream is not None
    parts = []
    async for part in response.stream:
        parts.append(part)
        await asyncio.sleep(0.05)  # longer than the read timeout; the app is not late
    assert parts == [b"a", b"b", b"c"]


async def test_head_not_arriving_in_time_is_a_504() -> None:
    probe = Probe(sleep_before_head)
    with pytest.raises(BackendTimeout) as caught:
        await InProcessBackend("t", probe, 0.05).send(make_ctx())
    assert caught.value.status_code == 504
    assert caught.value.message == BackendTimeout.default_message
    await asyncio.wait_for(probe.cancelled.wait(), 1)


async def test_stall_between_chunks_is_a_504() -> None:
    probe = Probe(stall_after_first_chunk)
    response = await InProcessBackend("t", probe, 0.05).send(make_ctx())
    assert response.stream is not None
    assert await anext(response.stream) == b"a"
    with pytest.raises(BackendTimeout, match="stopped sending the response"):
        await anext(response.stream)
    await response.aclose()
    await asyncio.wait_for(probe.cancelled.wait(), 1)


async def test_release_cancels_a_running_app() -> None:
    probe = Probe(stall_after_first_chunk)
    response = await InProcessBackend("t", probe, 5.0).send(make_ctx())
    assert response.stream is not None
    assert await anext(response.stream) == b"a"
    await response.aclose()
    await asyncio.wait_for(probe.cancelled.wait(), 1)


async def test_release_retrieves_an_error_raised_on_cancel(loop_errors: LoopErrors) -> None:
    async def script(send: Send) -> None:
        await send(HEAD)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    probe = Probe(script)
    response = await InProcessBackend("t", probe, 5.0).send(make_ctx())
    await response.aclose()
    for _ in range(3):
        await asyncio.sleep(0)
    del response
    loop_errors.check()


def test_factory_passes_the_read_timeout() -> None:
    config = BackendConfig.model_validate({"type": "demo", "timeouts": {"read": 7}})
    backend = build_backend("demo", config)
    assert isinstance(backend, InProcessBackend)
    assert backend.read_timeout == 7
