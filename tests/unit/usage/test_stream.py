"""`StreamUsage`: the same stream, split every way, gives the same usage, text and bytes."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pytest

from aigw.usage import stream as stream_module
from aigw.usage.model import Usage
from aigw.usage.stream import MAX_EVENT_BYTES, MAX_HELD_BYTES, StreamUsage

EOLS = [b"\n", b"\r\n", b"\r"]


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


CHAT_USAGE = {
    "prompt_tokens": 9,
    "completion_tokens": 12,
    "total_tokens": 21,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
AZURE_FIRST = {  # Azure's first chunk: no choices, no usage; it must reach the client
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [],
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
}
USAGE_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": CHAT_USAGE,
}
CALL = {"index": 0, "id": "call_1", "type": "function"}


@dataclass
class Stream:
    blocks: list[bytes]  # one per event, its blank line included
    usage_block: int | None  # the index of the usage-only event

    @property
    def data(self) -> bytes:
        return b"".join(self.blocks)

    @property
    def stripped(self) -> bytes:
        """What a client that did not ask for usage gets: no usage event, and none of the
        `"usage": null` members the backend adds to every chunk once usage is asked for."""
        kept = b"".join(b for i, b in enumerate(self.blocks) if i != self.usage_block)
        return without_null_usage(kept)


def without_null_usage(data: bytes) -> bytes:
    """Chunks as a client that did not ask for usage would get them from the backend."""
    return re.sub(rb', "usage": null\}(?=\r|\n|\Z)', b"}", data)


def block(lines: Iterable[str], eol: bytes) -> bytes:
    return b"".join(line.encode() + eol for line in lines) + eol


def data(payload: object) -> str:
    return "data: " + json.dumps(payload)


def chat_stream(eol: bytes, with_usage: bool = True) -> Stream:
    blocks = [
        block([": ping"], eol),
        block([data(AZURE_FIRST)], eol),
        block([data(chunk({"role": "assistant", "content": ""}))], eol),
        block(["id: 2", data(chunk({"content": "Hello"}))], eol),
        block([": keep-alive", data(chunk({"content": " wörld"}))], eol),
        block([data(chunk({"tool_calls": [{**CALL, "function": {"name": "get_weather"}}]}))], eol),
        block(
            [data(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}))],
            eol,
        ),
        # One event in two data lines: joined with a newline, still the same JSON.
        block(
            [
                "retry: 1000",
                'data: {"choices": [{"index": 0, "delta": {"tool_calls":',
                'data: [{"index": 0, "function": {"arguments": "\\"Paris\\"}"}}]}}]}',
            ],
            eol,
        ),
        block([data(chunk({}, finish="stop"))], eol),
    ]
    usage_block = None
    if with_usage:
        usage_block = len(blocks)
        blocks.append(block([data(USAGE_CHUNK)], eol))
    blocks.append(block(["data: [DONE]"], eol))
    return Stream(blocks, usage_block)


CHAT_TEXT = 'Hello wörldget_weather{"city":"Paris"}'
CHAT_EXPECTED_USAGE = Usage(9, 12, 21)


def run(reader: StreamUsage, pieces: Iterable[bytes]) -> bytes:
    return b"".join(reader.feed(piece) for piece in pieces) + reader.flush()


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def check(
    stream: Stream, pieces: list[bytes], strip: bool, operation: str = "chat-completions"
) -> StreamUsage:
    reader = StreamUsage(operation, strip_usage_chunk=strip)
    out = run(reader, pieces)
    assert out == (stream.stripped if strip else stream.data)
    return reader


def splits(data: bytes) -> Iterable[list[bytes]]:
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield split_at(data, [cut])
    rng = random.Random(20240601)
    for _ in range(200):
        count = rng.randint(2, 40)
        yield split_at(data, sorted(rng.sample(range(1, len(data)), count)))


@pytest.mark.parametrize("strip", [False, True], ids=["pass-through", "strip"])
@pytest.mark.parametrize("eol", EOLS, ids=["LF", "CRLF", "CR"])
def test_every_split_gives_the_same_result(eol: bytes, strip: bool) -> None:
    stream = chat_stream(eol)
    for pieces in splits(stream.data):
        reader = check(stream, pieces, strip)
        assert reader.usage == CHAT_EXPECTED_USAGE, pieces
        assert reader.completion_text() == CHAT_TEXT, pieces
        assert reader.done


def test_pass_through_returns_the_very_same_bytes() -> None:
    stream = chat_stream(b"\n")
    reader = StreamUsage("chat-completions", strip_usage_chunk=False)
    for piece in split_at(stream.data, [7, 100, 101, 500]):
        assert reader.feed(piece) is piece
    assert reader.flush() == b""
    assert reader.usage == CHAT_EXPECTED_USAGE


def test_complete_events_are_never_held_back() -> None:
    stream = chat_stream(b"\r\n")
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    for i, event in enumerate(stream.blocks):
        # Each event sent alone comes out at once: in full, or not at all for the usage one.
        expected = b"" if i == stream.usage_block else without_null_usage(event)
        assert reader.feed(event) == expected


def test_mixed_line_endings() -> None:
    lines = [
        data(chunk({"content": "a"})).encode() + b"\r\n\r\n",
        data(chunk({"content": "b"})).encode() + b"\n\n",
        data(chunk({"content": "c"})).encode() + b"\r\r",
        data(USAGE_CHUNK).encode() + b"\r\n\r",
        b"data: [DONE]\n\n",
    ]
    stream = Stream(lines, usage_block=3)
    for pieces in splits(stream.data):
        reader = check(stream, pieces, strip=True)
        assert reader.usage == CHAT_EXPECTED_USAGE
        assert reader.completion_text() == "abc"


@pytest.mark.parametrize("eol", EOLS, ids=["LF", "CRLF", "CR"])
def test_a_stream_without_usage(eol: bytes) -> None:
    stream = chat_stream(eol, with_usage=False)
    for strip in (False, True):
        reader = check(stream, [stream.data[:50], stream.data[50:]], strip)
        assert reader.usage is None
        assert reader.completion_text() == CHAT_TEXT
        assert reader.done


def member_json(members: list[tuple[str, object]], spaced: bool) -> bytes:
    """A JSON object written member by member, compact or spaced, keeping their order."""
    colon, comma = (": ", ", ") if spaced else (":", ",")
    dump = (lambda v: json.dumps(v)) if spaced else (lambda v: json.dumps(v, separators=(",", ":")))
    return ("{" + comma.join(f"{json.dumps(k)}{colon}{dump(v)}" for k, v in members) + "}").encode()


USAGE_ON_LAST_CHUNK = [  # some OpenAI-compatible servers put the usage on the last chunk
    ("id", "chatcmpl-1"),
    ("object", "chat.completion.chunk"),
    ("choices", [{"index": 0, "delta": {"content": "last"}, "finish_reason": "stop"}]),
]


@pytest.mark.parametrize("eol", EOLS, ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
@pytest.mark.parametrize("at", [0, 2, 3], ids=["first", "middle", "last"])
def test_a_chunk_with_choices_and_usage_loses_only_the_usage(
    at: int, spaced: bool, eol: bytes
) -> None:
    members: list[tuple[str, object]] = list(USAGE_ON_LAST_CHUNK)
    with_usage = member_json([*members[:at], ("usage", CHAT_USAGE), *members[at:]], spaced)
    first = block([data(chunk({"content": "a"}))], eol)
    done = block(["data: [DONE]"], eol)
    sent = first + b"id: 7" + eol + b"data: " + with_usage + eol + eol + done
    # The client gets the chunk byte for byte as the backend would have sent it unasked.
    expected = without_null_usage(first) + b"id: 7" + eol
    expected += b"data: " + member_json(members, spaced) + eol + eol + done
    for pieces in splits(sent):
        reader = StreamUsage("chat-completions", strip_usage_chunk=True)
        assert run(reader, pieces) == expected, pieces
        assert reader.usage == CHAT_EXPECTED_USAGE  # still read and counted
        assert reader.completion_text() == "alast"
    # A client that asked for usage gets it, unchanged.
    reader = StreamUsage("chat-completions", strip_usage_chunk=False)
    assert run(reader, [sent]) == sent
    assert reader.usage == CHAT_EXPECTED_USAGE


def test_the_usage_on_a_chunk_is_removed_on_the_fast_path() -> None:
    sent = (
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}\n\n'
    )
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    assert reader.feed(sent) == (
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    )
    assert reader.usage == Usage(5, 3, 8)
    assert StreamUsage("chat-completions", strip_usage_chunk=False).feed(sent) is sent
    completions = StreamUsage("completions", strip_usage_chunk=True)
    text = b'data: {"choices":[{"text":"x"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'
    assert completions.feed(text + b"\n\n") == b'data: {"choices":[{"text":"x"}]}\n\n'


def test_only_the_top_level_usage_is_removed() -> None:
    # "usage" as text and as a nested key stays; so does a spaced-out layout.
    sent = (
        b'data: { "choices" : [ {"delta": {"content": "\\"usage\\": {}"}, "usage": {"a": 1}} ]'
        b' ,\t"usage" : { "prompt_tokens": 9, "completion_tokens": 12 } ,'
        b' "x": [1, {"y": "}"}] }\n\n'
    )
    expected = (
        b'data: { "choices" : [ {"delta": {"content": "\\"usage\\": {}"}, "usage": {"a": 1}} ]'
        b' ,\t"x": [1, {"y": "}"}] }\n\n'
    )
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    assert reader.feed(sent) == expected
    assert reader.usage == Usage(9, 12, 21)
    assert reader.completion_text() == '"usage": {}'


def test_a_usage_the_text_cannot_be_cut_from_is_written_again_without_it() -> None:
    # A key named twice, or a payload over several data lines: the event is re-serialized.
    twice = (
        b'data: {"choices": [{"delta": {"content": "\xc3\xa9"}}], "usage": {},'
        b' "usage": {"prompt_tokens": 2, "completion_tokens": 1}}'
    )
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    assert reader.feed(twice + b"\r\n\r\n") == (
        b'data: {"choices":[{"delta":{"content":"\\u00e9"}}]}\r\n\r\n'
    )
    assert reader.usage == Usage(2, 1, 3)
    lines = (
        b'id: 3\ndata: {"choices": [{"delta": {"content": "x"}}],\n'
        b': note\ndata: "usage": {"prompt_tokens": 2, "completion_tokens": 1}}\n\n'
    )
    for pieces in splits(lines):
        reader = StreamUsage("chat-completions", strip_usage_chunk=True)
        assert run(reader, pieces) == (
            b'id: 3\ndata: {"choices":[{"delta":{"content":"x"}}]}\n: note\n\n'
        )
        assert reader.usage == Usage(2, 1, 3)


def test_a_null_usage_anywhere_at_the_top_level_is_removed() -> None:
    sent = b'data: {"usage": null, "choices": [{"delta": {"content": "a"}}]}\n\n'
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    assert reader.feed(sent) == b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
    assert reader.completion_text() == "a"


def test_an_invalid_usage_is_still_removed_but_not_read() -> None:
    bad = {"choices": [], "usage": {"prompt_tokens": "9", "completion_tokens": 1}}
    stream = Stream([block([data(bad)], b"\n"), block(["data: [DONE]"], b"\n")], 0)
    reader = check(stream, [stream.data], strip=True)
    assert reader.usage is None


def test_junk_events_pass_and_are_ignored() -> None:
    blocks = [
        block(["data: {not json"], b"\n"),
        block(["data: [1, 2]"], b"\n"),
        block(["data: " + "[" * 100_000], b"\n"),  # deeper than the recursion limit
        block(["event: ping", "data"], b"\n"),
        block(["\ufeffnonsense"], b"\n"),
        b"\n\n",  # stray blank lines
        block([data(USAGE_CHUNK)], b"\n"),
    ]
    stream = Stream(blocks, usage_block=6)
    reader = check(stream, [stream.data], strip=True)
    assert reader.usage == CHAT_EXPECTED_USAGE
    assert not reader.done


def test_completions_stream() -> None:
    def text_chunk(text: str) -> dict[str, Any]:
        return {"object": "text_completion", "choices": [{"index": 0, "text": text}], "usage": None}

    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    blocks = [
        block([data(text_chunk("Once"))], b"\n"),
        block([data(text_chunk(" upon"))], b"\n"),
        block([data({"object": "text_completion", "choices": [], "usage": usage})], b"\n"),
        block(["data: [DONE]"], b"\n"),
    ]
    stream = Stream(blocks, usage_block=2)
    for pieces in splits(stream.data):
        reader = check(stream, pieces, strip=True, operation="completions")
        assert reader.usage == Usage(4, 2, 6)
        assert reader.completion_text() == "Once upon"


def responses_stream(eol: bytes) -> Stream:
    def event(kind: str, **fields: Any) -> bytes:
        return block([f"event: {kind}", data({"type": kind, **fields})], eol)

    usage = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 8},
        "total_tokens": 32,
    }
    blocks = [
        event(
            "response.created", response={"id": "resp_1", "status": "in_progress", "usage": None}
        ),
        event("response.reasoning_summary_text.delta", item_id="rs_1", delta="Hm. "),
        event("response.output_item.added", item={"type": "message", "id": "msg_1"}),
        event("response.output_text.delta", item_id="msg_1", delta="Hel"),
        event("response.output_text.delta", item_id="msg_1", delta="lo"),
        event("response.output_item.added", item={"type": "function_call", "name": "f"}),
        event("response.function_call_arguments.delta", item_id="fc_1", delta='{"a":1}'),
        event("response.output_text.done", item_id="msg_1", text="Hello"),
        event(
            "response.completed",
            response={"id": "resp_1", "status": "completed", "output": [], "usage": usage},
        ),
    ]
    return Stream(blocks, usage_block=None)


@pytest.mark.parametrize("eol", EOLS, ids=["LF", "CRLF", "CR"])
def test_responses_api_events(eol: bytes) -> None:
    stream = responses_stream(eol)
    for pieces in splits(stream.data):
        # Stripping never applies to the Responses API: `response.completed` is the answer.
        reader = check(stream, pieces, strip=True, operation="responses")
        assert reader.usage == Usage(12, 20, 32, cached_tokens=4, reasoning_tokens=8)
        assert reader.completion_text() == 'Hm. Hellof{"a":1}'
        assert reader.done


def test_responses_incomplete_is_terminal_and_billed() -> None:
    usage = {"input_tokens": 5, "output_tokens": 16, "total_tokens": 21}
    payload = {"type": "response.incomplete", "response": {"status": "incomplete", "usage": usage}}
    reader = StreamUsage("responses", strip_usage_chunk=False)
    reader.feed(block([data(payload)], b"\n"))
    assert reader.done and reader.usage == Usage(5, 16, 21)


def test_flush_returns_an_unterminated_last_event() -> None:
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    first = block([data(chunk({"content": "a"}))], b"\n")
    tail = data(chunk({"content": "b"})).encode()
    assert reader.feed(first + tail) == without_null_usage(first)
    assert reader.flush() == without_null_usage(tail)  # without its `"usage": null` too
    assert reader.completion_text() == "ab"


def test_flush_removes_the_usage_from_an_unterminated_chunk_with_choices() -> None:
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    members: list[tuple[str, object]] = list(USAGE_ON_LAST_CHUNK)
    tail = b"data: " + member_json([*members, ("usage", CHAT_USAGE)], spaced=True) + b"\r\n"
    assert reader.feed(tail) == b""
    assert reader.flush() == b"data: " + member_json(members, spaced=True) + b"\r\n"
    assert reader.usage == CHAT_EXPECTED_USAGE


def test_flush_drops_an_unterminated_usage_event_when_stripping() -> None:
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    assert reader.feed(data(USAGE_CHUNK).encode() + b"\n") == b""
    assert reader.flush() == b""
    assert reader.usage == CHAT_EXPECTED_USAGE


def test_a_huge_unterminated_event_stops_stripping(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aigw.usage")
    reader = StreamUsage("chat-completions", strip_usage_chunk=True)
    head = block([data(chunk({"content": "a"}))], b"\n")
    piece = b"x" * 65536
    start = head + b'data: {"choices": [], "note": "'
    sent = [reader.feed(start)]
    # the complete event goes, the incomplete one is held
    assert sent[0] == without_null_usage(head)
    total_in = bytearray(without_null_usage(head) + start[len(head) :])
    for _ in range((MAX_EVENT_BYTES + MAX_HELD_BYTES) // len(piece) + 4):
        sent.append(reader.feed(piece))
        total_in += piece
        assert reader.buffered_bytes <= MAX_EVENT_BYTES + len(piece)
    # Past both caps: the held bytes went out and the event is no longer kept at all.
    assert reader.buffered_bytes == 0
    end = b'", "usage": ' + json.dumps(CHAT_USAGE).encode() + b"}\n\n"
    sent.append(reader.feed(end))
    after = block([data(USAGE_CHUNK)], b"\n")
    sent.append(reader.feed(after))  # no longer removed: stripping stopped at the cap
    sent.append(reader.flush())
    assert b"".join(sent) == total_in + end + after
    assert reader.usage == CHAT_EXPECTED_USAGE  # read from the later, normal event
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # one for the held tail, one for the unread event
    assert all("chat-completions stream" in message for message in warnings)


def test_the_completion_text_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "MAX_COMPLETION_CHARS", 10)
    reader = StreamUsage("chat-completions", strip_usage_chunk=False)
    for word in ("hello ", "wonderful ", "world"):
        reader.feed(block([data(chunk({"content": word}))], b"\n"))
    assert reader.completion_text() == "hello wond"


def test_a_passed_through_stream_is_read_for_usage_from_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = chat_stream(b"\n")
    reader = StreamUsage("chat-completions", strip_usage_chunk=False)
    assert run(reader, split_at(stream.data, [7, 300, 301])) == stream.data
    parsed: list[bytes] = []
    real_loads = json.loads

    def counting(text: Any, *args: Any, **kwargs: Any) -> Any:
        parsed.append(text)
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(stream_module.json, "loads", counting)
    assert reader.usage == CHAT_EXPECTED_USAGE
    assert len(parsed) == 1, "only the usage event is parsed"
    # The text is still there when it is asked for (a backend that reported no usage).
    assert reader.completion_text() == CHAT_TEXT


def test_a_later_usage_word_does_not_hide_the_real_usage() -> None:
    stream = chat_stream(b"\n")
    later = block([data(chunk({"content": "usage"}))], b"\n")  # "usage" as text, after it
    body = stream.data.replace(b"data: [DONE]", later + b"data: [DONE]")
    reader = StreamUsage("chat-completions", strip_usage_chunk=False)
    run(reader, [body])
    assert reader.usage == CHAT_EXPECTED_USAGE
    assert reader.completion_text() == CHAT_TEXT + "usage"
