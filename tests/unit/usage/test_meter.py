"""`UsageMeter`: what it asks of the backend, that reading usage never costs the client a
byte of its answer, and what an answer without usage is charged (counted, with the real
tokenizer)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from aigw.context import ApiInfo, OperationInfo, RequestContext, RequestView, Response
from aigw.headers import Headers
from aigw.tokenizer import O200K, TokenCounter, prompt_tokens
from aigw.usage import extract as extract_module
from aigw.usage.meter import MAX_BUFFERED_BODY, UsageMeter
from aigw.usage.model import Usage
from tests.unit.tokenizer.conftest import tokens

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def context(body: dict[str, Any], operation: str = "chat-completions") -> RequestContext:
    request = RequestView(
        method="POST",
        scheme="http",
        host="gw.example",
        path=f"/openai/{operation}",
        query_string="",
        headers=Headers([("accept-encoding", "gzip, deflate, br, zstd")]),
        client_ip="203.0.113.7",
        body=json.dumps(body).encode(),
    )
    api = ApiInfo(id="chat", name="Chat", path="openai", type="openai")
    return RequestContext("req-1", request, api, OperationInfo(operation, "op", "POST", "/"))


def streamed(pieces: list[bytes], headers: list[tuple[str, str]]) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    return Response(200, Headers(headers), stream=chunks())


async def relayed(response: Response) -> bytes:
    if response.stream is None:
        return response.body
    return b"".join([chunk async for chunk in response.stream])


def test_the_backend_is_asked_for_an_uncompressed_answer() -> None:
    """A gzip (or br …) answer cannot be read for usage, nor its usage event removed."""
    ctx = context({"model": "gpt-4o", "messages": []})
    UsageMeter(ctx, None)
    assert ctx.request.headers.get("accept-encoding") == "identity"


USAGE_EVENT = b'data: {"choices":[],"usage":' + json.dumps(USAGE).encode() + b"}\n\n"
CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'


async def sent_to_client(meter: UsageMeter, response: Response) -> bytes:
    response = await meter.on_response(response)
    sent = b"".join([meter.on_chunk(chunk) async for chunk in response.stream or ()])
    return sent + meter.end_of_stream()


async def test_a_gzip_stream_is_decoded_so_the_usage_asked_for_is_read_and_removed() -> None:
    """A backend that compresses anyway: the client gets the decoded stream without the
    usage event it did not ask for, and the backend's usage is charged."""
    ctx = context({"model": "gpt-4o", "messages": [], "stream": True})
    meter = UsageMeter(ctx, None)
    raw = gzip.compress(CONTENT + USAGE_EVENT + b"data: [DONE]\n\n")
    headers = [("content-type", "text/event-stream"), ("content-encoding", "gzip")]
    response = streamed([raw[:10], raw[10:]], headers)
    assert await sent_to_client(meter, response) == CONTENT + b"data: [DONE]\n\n"
    assert "content-encoding" not in response.headers
    usage = await meter.finish()
    assert usage is not None and (usage.total_tokens, usage.source) == (7, "backend")


async def test_a_gzip_stream_whose_client_asked_for_usage_is_relayed_as_it_came() -> None:
    body = {"model": "gpt-4o", "messages": [], "stream": True}
    ctx = context({**body, "stream_options": {"include_usage": True}})
    meter = UsageMeter(ctx, None)
    raw = gzip.compress(CONTENT + USAGE_EVENT + b"data: [DONE]\n\n")
    headers = [("content-type", "text/event-stream"), ("content-encoding", "gzip")]
    assert await sent_to_client(meter, streamed([raw[:7], raw[7:]], headers)) == raw
    usage = await meter.finish()
    assert usage is not None and (usage.total_tokens, usage.source) == (7, "backend")


async def test_a_gzip_json_answer_is_read_for_its_usage_and_relayed_as_it_came() -> None:
    meter = UsageMeter(context({"model": "gpt-4o", "messages": []}), None)
    raw = gzip.compress(json.dumps({"choices": [], "usage": USAGE}).encode())
    headers = [("content-type", "application/json"), ("content-encoding", "gzip")]
    response = await meter.on_response(streamed([raw], headers))
    assert await relayed(response) == raw
    usage = await meter.finish()
    assert usage is not None and (usage.total_tokens, usage.source) == (7, "backend")


async def test_a_stream_in_a_coding_it_cannot_decode_is_relayed_untouched_and_counted() -> None:
    ctx = context({"model": "gpt-4o", "messages": [], "stream": True})
    meter = UsageMeter(ctx, None)
    raw = b"\x0b\x05\x80not really brotli"
    headers = [("content-type", "text/event-stream"), ("content-encoding", "br")]
    assert await sent_to_client(meter, streamed([raw], headers)) == raw
    usage = await meter.finish()
    assert usage is not None and usage.source == "counted"


async def test_an_answer_too_large_to_read_for_usage_is_still_relayed_whole() -> None:
    ctx = context({"model": "text-embedding-3-small", "input": ["x"]}, "embeddings")
    meter = UsageMeter(ctx, None)
    piece = b" " * (1 << 20)
    pieces = [b'{"data": [', *[piece] * 9, b'], "usage": ' + json.dumps(USAGE).encode() + b"}"]
    length = str(sum(map(len, pieces)))
    response = streamed(pieces, [("content-type", "application/json"), ("content-length", length)])
    response = await meter.on_response(response)
    assert sum(map(len, pieces)) > MAX_BUFFERED_BODY
    assert await relayed(response) == b"".join(pieces)
    assert response.headers.get("content-length") == length


async def test_a_small_answer_is_read_for_its_usage() -> None:
    ctx = context({"model": "gpt-4o", "messages": []})
    meter = UsageMeter(ctx, None)
    body = json.dumps({"choices": [], "usage": USAGE}).encode()
    response = await meter.on_response(streamed([body], [("content-type", "application/json")]))
    assert await relayed(response) == body
    usage = await meter.finish()
    assert usage is not None and (usage.total_tokens, usage.source) == (7, "backend")


async def test_an_answer_nested_too_deep_to_parse_is_relayed_and_counted() -> None:
    ctx = context({"model": "gpt-4o", "messages": []})
    meter = UsageMeter(ctx, None)
    body = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await meter.on_response(streamed([body], [("content-type", "application/json")]))
    assert await relayed(response) == body
    usage = await meter.finish()
    assert usage is not None and usage.source == "counted"


async def test_a_client_that_left_before_a_backend_had_its_request_is_charged_nothing() -> None:
    """Waiting for a free connection or for a retry is no work a backend bills."""
    meter = UsageMeter(context({"model": "gpt-4o", "messages": []}), None)
    assert await meter.finish(client_left=True, backend_had_request=False) is None


async def test_a_client_that_left_while_a_backend_had_its_request_is_charged_the_prompt() -> None:
    meter = UsageMeter(context({"model": "gpt-4o", "messages": []}), None)
    usage = await meter.finish(client_left=True, backend_had_request=True)
    assert usage is not None and usage.source == "counted"


async def test_a_stream_cut_short_is_read_to_its_last_event_for_the_usage() -> None:
    """The client left (or the backend broke off) after a usage event that lacks only its
    blank line: that usage is charged, not a count of the streamed text."""
    for asked in (False, True):
        body: dict[str, Any] = {"model": "gpt-4o", "messages": [], "stream": True}
        if asked:
            body["stream_options"] = {"include_usage": True}
        meter = UsageMeter(context(body), None)
        response = streamed([CONTENT, USAGE_EVENT[:-2]], [("content-type", "text/event-stream")])
        response = await meter.on_response(response)
        async for chunk in response.stream or ():
            meter.on_chunk(chunk)
        usage = await meter.finish(client_left=True, backend_had_request=True)
        assert usage is not None and (usage.total_tokens, usage.source) == (7, "backend"), asked


# --- a JSON answer without usage: its completion is counted from its text ---------------------


@pytest.fixture
async def counter() -> AsyncIterator[TokenCounter]:
    counter = TokenCounter([O200K])
    await counter.start()
    yield counter
    await counter.close()


async def charged(
    counter: TokenCounter,
    answer: dict[str, Any],
    operation: str = "chat-completions",
    status: int = 200,
) -> tuple[Usage | None, int]:
    """What a JSON answer is charged, and the prompt as the tokenizer counts it."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}
    if operation == "responses":
        body = {"model": "gpt-4o", "input": "Hello"}
    meter = UsageMeter(context(body, operation), counter)
    raw = json.dumps(answer).encode()
    response = Response(status, Headers([("content-type", "application/json")]), body=raw)
    assert await relayed(await meter.on_response(response)) == raw
    prompt = await prompt_tokens(counter, operation, body, "gpt-4o")
    return await meter.finish(), prompt


async def test_a_json_answer_without_usage_is_charged_its_counted_completion(
    counter: TokenCounter,
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":1}'}}
    message = {"role": "assistant", "content": "Hi there!", "tool_calls": [call]}
    answer = {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
    usage, prompt = await charged(counter, answer)
    completion = tokens(O200K, 'Hi there!lookup{"q":1}')
    assert prompt > 0 and completion > 0
    assert usage == Usage(prompt, completion, prompt + completion, source="counted")
    # `"usage": null` (some servers send it) is no usage either.
    usage, _ = await charged(counter, {**answer, "usage": None})
    assert usage == Usage(prompt, completion, prompt + completion, source="counted")


async def test_a_responses_answer_without_usage_is_charged_its_counted_output(
    counter: TokenCounter,
) -> None:
    content = [{"type": "output_text", "text": "Hello back", "annotations": []}]
    answer = {"object": "response", "output": [{"type": "message", "content": content}]}
    usage, prompt = await charged(counter, answer, "responses")
    completion = tokens(O200K, "Hello back")
    assert usage == Usage(prompt, completion, prompt + completion, source="counted")


async def test_a_json_answer_with_usage_is_charged_that_usage_without_a_full_parse(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def whole(text: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the whole body was parsed")

    # Only the usage reader's parser is replaced: the rest of the path parses as it likes.
    monkeypatch.setattr(extract_module, "json", SimpleNamespace(loads=whole))
    message = {"role": "assistant", "content": "Hi there!"}
    answer = {"choices": [{"index": 0, "message": message}], "usage": USAGE}
    usage, _ = await charged(counter, answer)
    assert usage == Usage(3, 4, 7)


async def test_an_odd_usage_is_replaced_by_the_counted_text(counter: TokenCounter) -> None:
    message = {"role": "assistant", "content": "Hi there!"}
    answer = {"choices": [{"message": message}], "usage": {**USAGE, "prompt_tokens": -1}}
    usage, prompt = await charged(counter, answer)
    completion = tokens(O200K, "Hi there!")
    assert usage == Usage(prompt, completion, prompt + completion, source="counted")


async def test_a_failed_json_answer_has_no_usage(counter: TokenCounter) -> None:
    answer = {"error": {"message": "Bad request", "type": "invalid_request_error"}}
    assert (await charged(counter, answer, status=400))[0] is None


async def test_a_gzip_json_answer_without_usage_is_counted_from_its_text(
    counter: TokenCounter,
) -> None:
    ctx = context({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]})
    meter = UsageMeter(ctx, counter)
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}}]}
    raw = gzip.compress(json.dumps(answer).encode())
    headers = [("content-type", "application/json"), ("content-encoding", "gzip")]
    assert await relayed(await meter.on_response(streamed([raw], headers))) == raw
    usage = await meter.finish()
    assert usage is not None and usage.source == "counted"
    assert usage.completion_tokens == tokens(O200K, "Hi!")
