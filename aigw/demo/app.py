"""A raw ASGI 3 application that serves the demo backend in the OpenAI wire format.

It routes by the path *suffix*, so it answers under any mount point: ``/v1/chat/completions``,
Azure's ``/openai/deployments/{id}/chat/completions?api-version=...`` and ``/openai/v1/...``.
Operations: ``POST .../chat/completions``, ``.../completions``, ``.../embeddings``,
``.../responses`` (non-streaming only) and ``GET .../models``. Anything else is a 404.

Request headers that steer a single request (for tests and benchmarks):

- ``x-demo-latency-ms``: delay before the response starts (overrides ``latency_ms``).
- ``x-demo-chunk-delay-ms``: delay between streamed events (overrides ``chunk_delay_ms``).
- ``x-demo-status``: answer with this status and an OpenAI-shaped error body; a 429 carries
  ``Retry-After``/``retry-after-ms`` from ``x-demo-retry-after`` (seconds) or the settings.
- ``x-demo-chunks``: make the reply exactly this many tokens, i.e. content chunks when streamed.
- ``x-demo-malformed: 1``: answer 200 ``application/json`` with a body that is not JSON.
- ``x-demo-stall-ms``: sleep this long after sending the headers, before the first body byte.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from aigw.demo.simulator import (
    DemoRequestError,
    JsonObject,
    chat_chunks,
    chat_completion,
    embeddings,
    error_body,
    models_list,
    plan_chat,
    plan_text_completion,
    response_object,
    text_completion,
    text_completion_chunks,
    wants_stream,
    wants_usage_chunk,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Operation = Literal["chat", "completions", "embeddings", "responses", "models"]

_MAX_CHUNKS = 100_000
_MALFORMED = b'{"id": "chatcmpl-broken", "choices": [ this is not JSON'
_POST_SUFFIXES: dict[str, Operation] = {
    "completions": "completions",
    "embeddings": "embeddings",
    "responses": "responses",
}


@dataclass(frozen=True)
class DemoSettings:
    latency_ms: float = 0.0  # delay before the first byte
    chunk_delay_ms: float = 0.0  # delay between streamed chunks
    error_rate: float = 0.0  # fraction of requests that fail, drawn from Random(seed)
    error_status: int = 429
    retry_after_seconds: int = 1  # sent as Retry-After (and retry-after-ms) on 429
    seed: int = 0
    model: str = "demo-model"  # default model name when the request has none
    # Further model names listed by /models (every name is answered anyway).
    extra_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0 or not 400 <= self.error_status <= 599:
            raise ValueError("error_rate must be in [0, 1] and error_status a 4xx/5xx")
        if min(self.latency_ms, self.chunk_delay_ms, self.retry_after_seconds) < 0:
            raise ValueError("delays and retry_after_seconds must not be negative")


def _number(headers: Mapping[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise DemoRequestError(f"Header '{name}' must be a number.") from None
    if not 0 <= value < float("inf"):
        raise DemoRequestError(f"Header '{name}' must be a non-negative number.")
    return value


@dataclass(frozen=True, slots=True)
class _Knobs:
    """Per-request knobs: the settings, overridden by the ``x-demo-*`` headers."""

    latency_ms: float
    chunk_delay_ms: float
    status: int | None
    retry_after: int
    chunks: int | None
    malformed: bool
    stall_ms: float

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], settings: DemoSettings) -> _Knobs:
        status = int(_number(headers, "x-demo-status", 0)) or None
        if status is not None and not 400 <= status <= 599:
            raise DemoRequestError("Header 'x-demo-status' must be 4xx or 5xx.")
        chunks = int(_number(headers, "x-demo-chunks", 0)) or None
        if chunks is not None and chunks > _MAX_CHUNKS:
            raise DemoRequestError(f"Header 'x-demo-chunks' exceeds {_MAX_CHUNKS}.")
        retry_after = _number(headers, "x-demo-retry-after", settings.retry_after_seconds)
        malformed = headers.get("x-demo-malformed", "").strip().lower()
        return cls(
            latency_ms=_number(headers, "x-demo-latency-ms", settings.latency_ms),
            chunk_delay_ms=_number(headers, "x-demo-chunk-delay-ms", settings.chunk_delay_ms),
            status=status,
            retry_after=int(retry_after),
            chunks=chunks,
            malformed=malformed in ("1", "true", "yes"),
            stall_ms=_number(headers, "x-demo-stall-ms", 0.0),
        )


def route(method: str, path: str) -> Operation | None:
    """Match on the path suffix so any mount point (OpenAI, Azure, Azure v1) works."""
    segments = [segment for segment in path.split("/") if segment]
    if method == "GET":
        return "models" if segments[-1:] == ["models"] else None
    if method != "POST" or not segments:
        return None
    if segments[-2:] == ["chat", "completions"]:
        return "chat"
    return _POST_SUFFIXES.get(segments[-1])


def deployment_id(path: str) -> str | None:
    """The Azure deployment in ``.../deployments/{id}/...``, used when the body has no model."""
    segments = [segment for segment in path.split("/") if segment]
    if "deployments" in segments[:-1]:
        return segments[segments.index("deployments") + 1]
    return None


def _failure(status: int, retry_after: int) -> tuple[JsonObject, list[tuple[str, str]]]:
    """The OpenAI-shaped body and headers of a simulated failure."""
    if status == 429:
        wait = [
            ("retry-after", str(retry_after)),
            ("retry-after-ms", str(retry_after * 1000)),
        ]
        return error_body("Rate limit reached (simulated).", "requests"), wait
    if status >= 500:
        return error_body("The server had an error (simulated).", "server_error"), []
    return error_body(f"Request failed with status {status} (simulated)."), []


def _sse(chunk: JsonObject) -> bytes:
    return b"data: " + json.dumps(chunk).encode("utf-8") + b"\n\n"


def _body(data: bytes, more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def _sleep_ms(delay_ms: float) -> None:
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return b"".join(chunks)


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Responder:
    """Sends one HTTP response with the headers a real service would add."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._started = time.perf_counter()

    async def _start(self, status: int, headers: list[tuple[str, str]]) -> None:
        elapsed_ms = int((time.perf_counter() - self._started) * 1000)
        headers = [
            *headers,
            ("x-request-id", f"req_{uuid.uuid4().hex}"),
            ("openai-processing-ms", str(elapsed_ms)),
            ("x-ms-region", "demo"),
        ]
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def json(
        self,
        status: int,
        data: JsonObject | bytes,
        stall_ms: float = 0.0,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        payload = data if isinstance(data, bytes) else json.dumps(data).encode("utf-8")
        length = str(len(payload))
        content = [("content-type", "application/json"), ("content-length", length)]
        await self._start(status, content + (headers or []))
        await _sleep_ms(stall_ms)  # headers are out; the body is held back
        await self._send(_body(payload))

    async def error(self, status: int, exc: DemoRequestError) -> None:
        await self.json(status, error_body(exc.message, param=exc.param))

    async def stream(self, chunks: Iterator[JsonObject], knobs: _Knobs, receive: Receive) -> None:
        """One ASGI body message per event so clients see chunks arrive as they are made."""
        disconnected = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, disconnected))
        try:
            sse = [("content-type", "text/event-stream; charset=utf-8")]
            await self._start(200, [*sse, ("cache-control", "no-cache")])
            await _sleep_ms(knobs.stall_ms)
            events = itertools.chain(map(_sse, chunks), [b"data: [DONE]\n\n"])
            for index, event in enumerate(events):
                if index:
                    await _sleep_ms(knobs.chunk_delay_ms)
                if disconnected.is_set():  # the client left; stop generating
                    return
                await self._send(_body(event, more=True))
            await self._send(_body(b""))
        finally:
            watcher.cancel()


class DemoApp:
    """The demo backend; its state (the failure RNG) lives on the instance."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        # Seeded on purpose: the same seed gives the same failures (not for security).
        self._random = random.Random(settings.seed)  # noqa: S311

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._handle(scope, receive, send)

    def _failure_status(self, knobs: _Knobs) -> int | None:
        if knobs.status is not None:
            return knobs.status
        rate = self.settings.error_rate
        if rate > 0 and self._random.random() < rate:
            return self.settings.error_status
        return None

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        responder = _Responder(send)
        method, path = scope["method"], scope["path"]
        raw_headers = scope["headers"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
        raw_body = await _read_body(receive)
        operation = route(method, path)
        if operation is None:
            not_found = DemoRequestError(f"Invalid URL ({method} {path})")
            return await responder.error(404, not_found)
        try:
            knobs = _Knobs.from_headers(headers, self.settings)
        except DemoRequestError as exc:
            return await responder.error(400, exc)
        await _sleep_ms(knobs.latency_ms)
        status = self._failure_status(knobs)
        if status is not None:
            body, extra = _failure(status, knobs.retry_after)
            return await responder.json(status, body, headers=extra)
        if knobs.malformed:
            return await responder.json(200, _MALFORMED, knobs.stall_ms)
        try:
            result = self._dispatch(operation, raw_body, path, knobs.chunks)
        except DemoRequestError as exc:
            return await responder.error(400, exc)
        if isinstance(result, dict):
            return await responder.json(200, result, knobs.stall_ms)
        await responder.stream(result, knobs, receive)

    def _dispatch(
        self, operation: Operation, raw_body: bytes, path: str, length: int | None
    ) -> JsonObject | Iterator[JsonObject]:
        if operation == "models":
            return models_list(self.settings.model, *self.settings.extra_models)
        body = _parse_json(raw_body)
        model = deployment_id(path) or self.settings.model
        if operation == "embeddings":
            return embeddings(body, model)
        stream = wants_stream(body)
        if operation == "responses":
            if stream:
                message = "Streaming responses are not supported by the demo backend."
                raise DemoRequestError(message, "stream")
            return response_object(body, model, length)
        usage = wants_usage_chunk(body)
        if operation == "chat":
            plan = plan_chat(body, model, length)
            return chat_chunks(plan, usage) if stream else chat_completion(plan)
        plan = plan_text_completion(body, model, length)
        return text_completion_chunks(plan, usage) if stream else text_completion(plan)


def _parse_json(raw: bytes) -> JsonObject:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        message = "We could not parse the JSON body of your request."
        raise DemoRequestError(message) from None
    if not isinstance(body, dict):
        raise DemoRequestError("The request body must be a JSON object.")
    return body


def create_demo_app(settings: DemoSettings | None = None) -> ASGIApp:
    """Build the demo backend's ASGI app; each call has its own seeded failure RNG."""
    return DemoApp(settings or DemoSettings())
