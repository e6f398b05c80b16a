"""The usage meter: one per request that needs its token usage (limits, metrics).

It is attached by the first policy that asks (`meter_for`), and the pipeline feeds it the
response: the head (`on_response`), each streamed chunk (`on_chunk`), and the end
(`finish`). For a streamed chat completion it asks the backend for usage
(`stream_options.include_usage`) when the client did not, and takes that extra usage event
out of what the client receives, so the client's stream is what it would have been.
Usage comes from the backend when it reports it, else it is counted: the prompt with the
model's tokenizer, the completion from the streamed text (up to a disconnect, too) or from
the text of a JSON answer (`completion`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from aigw.contentcoding import decoded, inflater
from aigw.errors import BackendProtocolError
from aigw.usage.completion import completion_text, has_completion_text
from aigw.usage.extract import usage_and_body
from aigw.usage.model import Usage
from aigw.usage.stream import StreamUsage

if TYPE_CHECKING:
    from aigw.context import RequestContext, Response
    from aigw.tokenizer.encodings import TokenCounter

log = logging.getLogger("aigw.usage")

METERED_OPERATIONS = frozenset({"chat-completions", "completions", "embeddings", "responses"})
# Non-streamed answers are buffered to read their usage; larger ones are passed on unread.
MAX_BUFFERED_BODY = 8 * 2**20
_STREAM_USAGE_OPERATIONS = frozenset({"chat-completions", "completions"})


class UsageMeter:
    def __init__(self, ctx: RequestContext, counter: TokenCounter | None) -> None:
        self.operation = ctx.operation.id
        self.model = ctx.model or ctx.deployment_id
        self.counter = counter
        self.tenant = _tenant(ctx)
        body = ctx.request.json if ctx.request.body else None
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}
        self.streaming = self.body.get("stream") is True
        self.strip_usage = False
        self.tracker: StreamUsage | None = None
        self.usage: Usage | None = None
        self.answer_text = ""  # a JSON answer's completion text, kept when it has no usage
        self.prompt_estimate: int | None = None
        self.responded = False  # a backend response (any status) arrived
        # A compressed stream relayed as it came: a decoded copy is read for the usage.
        self._copy_decoder: Any = None
        self._stream_ended = False  # end_of_stream ran: the stream reached its end
        self.failed = False  # the backend answered with an error status
        self._finished = False
        # Usage is read from the answer, which a compressed answer would hide (clients such
        # as the OpenAI SDKs accept gzip, and the backend's bytes are relayed as they are).
        ctx.request.headers.set("accept-encoding", "identity")
        asking = getattr(ctx.services, "request_stream_usage", True)
        if asking and self.streaming and self.operation in _STREAM_USAGE_OPERATIONS:
            self._ask_for_stream_usage(ctx)

    def _ask_for_stream_usage(self, ctx: RequestContext) -> None:
        options = self.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return  # the client asked: its stream carries the usage event as sent
        if options is not None and not isinstance(options, dict):
            return  # a malformed body: the backend will answer it, we change nothing
        self.body["stream_options"] = {**(options or {}), "include_usage": True}
        ctx.request.mark_json_modified()
        self.strip_usage = True

    async def estimate_prompt(self) -> int:
        """Prompt tokens counted with the model's tokenizer (once per request)."""
        if self.prompt_estimate is None:
            if self.counter is None:
                return 0
            from aigw.tokenizer.prompt import prompt_tokens

            self.prompt_estimate = await prompt_tokens(
                self.counter, self.operation, self.body, self.model, tenant=self.tenant
            )
        return self.prompt_estimate

    async def on_response(self, response: Response) -> Response:
        self.responded = True
        if response.status_code >= 400:
            self.failed = True  # providers do not bill failed calls
            return response
        encoding = (response.headers.get("content-encoding") or "identity").strip().lower()
        compressed = encoding != "identity"
        decoder = inflater(encoding) if compressed else None
        if compressed and decoder is None:
            return response  # br, zstd …: relayed unread, the usage is counted
        content_type = (response.headers.get("content-type") or "").lower()
        if content_type.startswith("text/event-stream"):
            self.tracker = StreamUsage(self.operation, self.strip_usage)
            if self.strip_usage:
                response.headers.delete("content-length")
                if compressed:
                    # Compressed after all: the usage event asked for can only be taken
                    # out of the decoded stream, so the client gets that, uncompressed.
                    response.stream = _decoding(response.stream, decoder)
                    response.headers.delete("content-encoding")
            elif compressed:
                self._copy_decoder = decoder  # read a decoded copy, relay as is
            return response
        if "json" in content_type:
            body = await response.read(MAX_BUFFERED_BODY)  # None: relayed unread, counted
            if body is not None and compressed:
                body = decoded(body, encoding, MAX_BUFFERED_BODY)
            if body is not None:
                self.usage, parsed = usage_and_body(
                    self.operation, body, has_text=has_completion_text(self.operation)
                )
                if self.usage is None and parsed is not None:
                    self.answer_text = completion_text(self.operation, parsed)
        return response

    def on_chunk(self, chunk: bytes) -> bytes:
        if self.tracker is None:
            return chunk
        if self._copy_decoder is not None:
            self._read_copy(self._copy_decoder.decompress, chunk)
            return chunk
        return self.tracker.feed(chunk)

    def end_of_stream(self) -> bytes:
        """Whatever the stream reader held back of an unfinished last event."""
        self._stream_ended = True
        if self.tracker is None:
            return b""
        if self._copy_decoder is not None:
            self._read_copy(self._copy_decoder.flush)
            if self.tracker is not None:
                self.tracker.flush()
            return b""  # the client had every byte as it came
        return self.tracker.flush()

    def _read_copy(self, decode: Callable[..., bytes], *compressed: bytes) -> None:
        try:
            data = decode(*compressed)
        except zlib.error:  # corrupt: nothing more can be read, the usage is counted
            self._copy_decoder = None
            self.tracker = None
            return
        if self.tracker is not None:
            self.tracker.feed(data)

    async def finish(
        self, *, client_left: bool = False, backend_had_request: bool = False
    ) -> Usage | None:
        """The request's usage: None when no backend answered successfully, unless the
        client left while a backend held the request (it bills that prompt); a client that
        left while the request waited for a connection or a retry is charged nothing."""
        if self._finished:
            return self.usage
        self._finished = True
        if self.usage is None and self.tracker is not None:
            if not self._stream_ended:
                # Cut short (the client left, the backend broke off): a last event that
                # lacks only its blank line is still read for usage.
                self.tracker.flush()
            self.usage = self.tracker.usage
        if self.usage is not None or self.failed:
            return self.usage
        if not self.responded and not (backend_had_request and client_left):
            return None
        self.usage = await self._counted()
        return self.usage

    async def _counted(self) -> Usage:
        """No usage from the backend: count the prompt and whatever text was streamed or
        answered as JSON."""
        prompt = await self.estimate_prompt()
        completion = 0
        text = self.tracker.completion_text() if self.tracker is not None else self.answer_text
        if text and self.counter is not None:
            from aigw.tokenizer.encodings import encoding_name_for

            completion = await self.counter.count(encoding_name_for(self.model), text)
        return Usage(prompt, completion, prompt + completion, source="counted")


def _tenant(ctx: RequestContext) -> str:
    """Whose resent texts a count may be looked up among (aigw.tokenizer.recent): the
    subscription, else the authenticated user, else the client's address, so a lookup's
    speed never tells one caller what another sent."""
    if ctx.subscription is not None:
        return "s:" + ctx.subscription.id
    if ctx.user is not None:
        return "u:" + ctx.user.id
    return "ip:" + ctx.request.client_ip


def meter_for(ctx: RequestContext, counter: TokenCounter | None) -> UsageMeter | None:
    """The request's meter, created on first use; None for operations without usage."""
    if ctx.operation.id not in METERED_OPERATIONS or ctx.api.type == "http":
        return None
    if ctx.usage_meter is None:
        ctx.usage_meter = UsageMeter(ctx, counter)
    elif ctx.usage_meter.counter is None:
        ctx.usage_meter.counter = counter
    return ctx.usage_meter


async def _decoding(stream: AsyncIterator[bytes] | None, decoder: Any) -> AsyncIterator[bytes]:
    """A compressed stream, decoded as it passes."""
    assert stream is not None
    try:
        async for chunk in stream:
            if data := decoder.decompress(chunk):
                yield data
        if tail := decoder.flush():
            yield tail
    except zlib.error:
        raise BackendProtocolError(
            "Backend sent a compressed stream that cannot be decoded"
        ) from None
