"""`completion_text`: what a non-streamed answer's completion is counted from, for each
operation's shape; the same text a stream of that answer gives; nothing from garbage."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from aigw.usage import completion as completion_module
from aigw.usage.completion import completion_text
from aigw.usage.stream import StreamUsage

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":1}'}}


def chat_answer(*messages: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {"index": i, "message": {"role": "assistant", **m}, "finish_reason": "stop"}
        for i, m in enumerate(messages)
    ]
    return {"id": "chatcmpl-1", "object": "chat.completion", "choices": choices}


def test_chat_content_refusal_and_reasoning() -> None:
    answer = chat_answer(
        {"content": "Hi!", "refusal": None, "reasoning_content": "Greet back. "},
        {"content": None, "refusal": "I can't."},
    )
    assert completion_text("chat-completions", answer) == "Greet back. Hi!I can't."


def test_chat_content_parts_count_their_text() -> None:
    parts = [
        {"type": "text", "text": "Hello "},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        "not a part",
        {"type": "text", "text": 5},
        {"type": "text", "text": "world"},
    ]
    assert completion_text("chat-completions", chat_answer({"content": parts})) == "Hello world"


def test_chat_tool_calls_and_a_legacy_function_call() -> None:
    second = {**CALL, "function": {"name": "fetch", "arguments": "{}"}}
    tools = {"content": None, "tool_calls": [CALL, "x", {"type": "function"}, second]}
    legacy = {"content": None, "function_call": {"name": "old", "arguments": '{"a":2}'}}
    text = completion_text("chat-completions", chat_answer(tools, legacy))
    assert text == 'lookup{"q":1}fetch{}old{"a":2}'


def test_completions_choice_text() -> None:
    answer = {"object": "text_completion", "choices": [{"text": "Once "}, {"text": "upon"}]}
    assert completion_text("completions", answer) == "Once upon"


RESPONSES_ANSWER: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Plan."}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Hello", "annotations": []},
                {"type": "refusal", "refusal": " no."},
            ],
        },
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"q":1}'},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        "not an item",
    ],
}


def test_responses_output_items() -> None:
    assert completion_text("responses", RESPONSES_ANSWER) == 'Plan.Hello no.lookup{"q":1}'


def test_embeddings_and_other_operations_have_no_completion() -> None:
    embeddings = {"object": "list", "data": [{"embedding": [0.1]}], "choices": [{"text": "x"}]}
    assert completion_text("embeddings", embeddings) == ""
    assert completion_text("list-models", chat_answer({"content": "Hi"})) == ""


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "Hi",
        3,
        {},
        {"choices": "Hi"},
        {"choices": [None, 1, "Hi", ["Hi"]]},
        {"choices": [{"text": 1, "message": "Hi"}]},
        {"choices": [{"message": {"content": {"text": "Hi"}, "refusal": 1}}]},
        {"choices": [{"message": {"tool_calls": {"function": {"name": "x"}}}}]},
        {"choices": [{"message": {"tool_calls": [{"function": "x"}], "function_call": ["x"]}}]},
        {"choices": [{"message": {"function_call": {"name": None, "arguments": {"a": 1}}}}]},
        {"output": {"type": "message"}},
        {"output": [{"type": "message", "content": "Hi"}, {"type": 1, "text": "Hi"}]},
        {"output": [{"type": "reasoning", "summary": "Hi"}, {"type": "function_call"}]},
    ],
)
def test_garbage_gives_no_text_and_never_raises(body: object) -> None:
    for operation in ("chat-completions", "completions", "responses", "embeddings"):
        assert completion_text(operation, body) == ""


def test_the_text_is_capped_and_the_cut_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(completion_module, "MAX_COMPLETION_CHARS", 10)
    answer = chat_answer({"content": "hello "}, {"content": "wonderful "}, {"content": "world"})
    with caplog.at_level(logging.WARNING, logger="aigw.usage"):
        assert completion_text("chat-completions", answer) == "hello wond"
    assert [r.getMessage() for r in caplog.records] == [
        "chat-completions answer: the completion text outgrew 10 characters"
    ]


# --- the same answer, streamed: the same text -------------------------------------------------


def streamed_text(operation: str, payloads: list[dict[str, Any]]) -> str:
    reader = StreamUsage(operation, strip_usage_chunk=False)
    for payload in payloads:
        reader.feed(b"data: " + json.dumps(payload).encode() + b"\n\n")
    reader.flush()
    return reader.completion_text()


def test_a_chat_answer_counts_as_its_stream_does() -> None:
    def delta(**fields: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": fields}]}

    call = {"index": 0, "id": "call_1", "type": "function"}
    chunks = [
        delta(role="assistant", reasoning_content="Think. "),
        delta(content="Hel"),
        delta(content="lo"),
        delta(refusal=" no"),
        delta(tool_calls=[{**call, "function": {"name": "lookup", "arguments": ""}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"q":'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": "1}"}}]),
    ]
    message = {
        "content": "Hello",
        "refusal": " no",
        "reasoning_content": "Think. ",
        "tool_calls": [CALL],
    }
    text = completion_text("chat-completions", chat_answer(message))
    assert text == streamed_text("chat-completions", chunks) == 'Think. Hello nolookup{"q":1}'


def test_a_responses_answer_counts_as_its_stream_does() -> None:
    function_item = {"type": "function_call", "id": "fc_1", "name": "lookup", "arguments": ""}
    events = [
        {"type": "response.output_item.added", "item": {"type": "reasoning", "summary": []}},
        {"type": "response.reasoning_summary_text.delta", "delta": "Plan."},
        {"type": "response.output_item.added", "item": {"type": "message", "content": []}},
        {"type": "response.output_text.delta", "delta": "Hel"},
        {"type": "response.output_text.delta", "delta": "lo"},
        {"type": "response.refusal.delta", "delta": " no."},
        {"type": "response.output_item.added", "item": function_item},
        {"type": "response.function_call_arguments.delta", "delta": '{"q":1}'},
        {"type": "response.completed", "response": RESPONSES_ANSWER},
    ]
    assert streamed_text("responses", events) == completion_text("responses", RESPONSES_ANSWER)
