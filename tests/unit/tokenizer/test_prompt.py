"""`prompt_tokens`: exact counts on fixed bodies, against the tokenizer plus the overheads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from aigw.tokenizer import CL100K, O200K, TokenCounter, prompt_tokens
from aigw.tokenizer.encodings import LARGE_TEXT_CHARS
from aigw.tokenizer.messages import (
    IMAGE_ESTIMATE,
    IMAGE_LOW_DETAIL,
    MESSAGE_OVERHEAD,
    NAME_OVERHEAD,
    REPLY_PRIMING,
)
from aigw.tokenizer.tools import (
    ENUM_OVERHEAD,
    ENUM_VALUE_OVERHEAD,
    FUNCTION_OVERHEAD,
    FUNCTION_OVERHEAD_CL100K,
    PROPERTIES_OVERHEAD,
    PROPERTY_OVERHEAD,
    TOOLS_OVERHEAD,
)
from tests.unit.tokenizer.conftest import tokens


def test_the_documented_overheads() -> None:
    assert (MESSAGE_OVERHEAD, NAME_OVERHEAD, REPLY_PRIMING) == (3, 1, 3)
    assert (IMAGE_LOW_DETAIL, IMAGE_ESTIMATE) == (85, 765)


def message(encoding: str, role: str, content: str) -> int:
    return MESSAGE_OVERHEAD + tokens(encoding, role) + tokens(encoding, content)


@pytest.mark.parametrize(("model", "encoding"), [("gpt-4o", O200K), ("gpt-4", CL100K)])
async def test_chat_messages(counter: TokenCounter, model: str, encoding: str) -> None:
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "hello world"},
        ],
    }
    expected = (
        message(encoding, "system", "You are a helpful assistant.")
        + MESSAGE_OVERHEAD
        + tokens(encoding, "user")
        + 2  # "hello world"
        + REPLY_PRIMING
    )
    assert await prompt_tokens(counter, "chat-completions", body, model) == expected


async def test_a_name_costs_its_tokens_and_one_more(counter: TokenCounter) -> None:
    plain = {"messages": [{"role": "user", "content": "hello world"}]}
    named = {"messages": [{"role": "user", "name": "example_user", "content": "hello world"}]}
    difference = await prompt_tokens(counter, "chat-completions", named, "gpt-4o") - (
        await prompt_tokens(counter, "chat-completions", plain, "gpt-4o")
    )
    assert difference == NAME_OVERHEAD + tokens(O200K, "example_user")


async def test_content_parts_and_images(counter: TokenCounter) -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these images?"},
                    {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x/b.png", "detail": "high"},
                    },
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    {"type": "text", "text": "hello world"},
                ],
            }
        ]
    }
    expected = (
        MESSAGE_OVERHEAD
        + tokens(O200K, "user")
        + tokens(O200K, "What is in these images?")
        + IMAGE_LOW_DETAIL
        + 2 * IMAGE_ESTIMATE
        + 2
        + REPLY_PRIMING
    )
    assert await prompt_tokens(counter, "chat-completions", body, "gpt-4o-mini") == expected


async def test_tool_calls_and_tool_results(counter: TokenCounter) -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    body = {
        "messages": [
            {"role": "user", "content": "hello world"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"},
        ]
    }
    expected = (
        message(O200K, "user", "hello world")
        + MESSAGE_OVERHEAD
        + tokens(O200K, "assistant")
        + tokens(O200K, "get_weather")
        + tokens(O200K, arguments)
        + message(O200K, "tool", "22 degrees")
        + REPLY_PRIMING
    )
    assert await prompt_tokens(counter, "chat-completions", body, "gpt-4o") == expected


WEATHER_FUNCTION: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the current weather.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city, e.g. Paris."},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
}


def weather_function_tokens(encoding: str) -> int:
    function_overhead = FUNCTION_OVERHEAD_CL100K if encoding == CL100K else FUNCTION_OVERHEAD
    return (
        function_overhead
        + tokens(encoding, "get_weather:Get the current weather")
        + PROPERTIES_OVERHEAD
        + PROPERTY_OVERHEAD
        + tokens(encoding, "city:string:The city, e.g. Paris")
        + PROPERTY_OVERHEAD
        + tokens(encoding, "unit:string:")
        + ENUM_OVERHEAD
        + 2 * ENUM_VALUE_OVERHEAD
        + tokens(encoding, "celsius")
        + tokens(encoding, "fahrenheit")
    )


@pytest.mark.parametrize(("model", "encoding"), [("gpt-4o", O200K), ("gpt-4-turbo", CL100K)])
async def test_tool_definitions(counter: TokenCounter, model: str, encoding: str) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    tools = [{"type": "function", "function": WEATHER_FUNCTION}]
    body = {"messages": messages, "tools": tools}
    expected = (
        message(encoding, "user", "hello world")
        + REPLY_PRIMING
        + weather_function_tokens(encoding)
        + TOOLS_OVERHEAD
    )
    assert await prompt_tokens(counter, "chat-completions", body, model) == expected
    legacy = {"messages": messages, "functions": [WEATHER_FUNCTION]}
    assert await prompt_tokens(counter, "chat-completions", legacy, model) == expected


async def test_nested_tool_parameters_count_too(counter: TokenCounter) -> None:
    nested = {
        "name": "book",
        "parameters": {
            "type": "object",
            "properties": {
                "guest": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                },
                "rooms": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"beds": {"type": "integer"}}},
                },
            },
        },
    }
    expected = (
        FUNCTION_OVERHEAD
        + tokens(O200K, "book:")
        + PROPERTIES_OVERHEAD
        + PROPERTY_OVERHEAD
        + tokens(O200K, "guest:object:")
        + PROPERTIES_OVERHEAD
        + PROPERTY_OVERHEAD
        + tokens(O200K, "name:string:")
        + PROPERTY_OVERHEAD
        + tokens(O200K, "rooms:array:")
        + PROPERTIES_OVERHEAD
        + PROPERTY_OVERHEAD
        + tokens(O200K, "beds:integer:")
        + TOOLS_OVERHEAD
    )
    body = {"tools": [{"type": "function", "function": nested}]}
    assert await prompt_tokens(counter, "chat-completions", body, "gpt-4o") == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("hello world", 2),
        (["hello world", "hello world"], 4),
        ([1, 2, 3], 3),
        ([[1, 2, 3], [4, 5]], 5),
        ([], 0),
    ],
)
async def test_completions_prompt(counter: TokenCounter, prompt: object, expected: int) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt}
    assert await prompt_tokens(counter, "completions", body, body["model"]) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello world", 2),
        (["hello world", "hello world", "hello world"], 6),
        ([15339, 1917], 2),
        ([[15339, 1917], [15339]], 3),
    ],
)
async def test_embeddings_input(counter: TokenCounter, value: object, expected: int) -> None:
    body = {"model": "text-embedding-3-small", "input": value}
    assert await prompt_tokens(counter, "embeddings", body, "text-embedding-3-small") == expected


async def test_responses_string_input_and_instructions(counter: TokenCounter) -> None:
    body = {"model": "gpt-4.1", "instructions": "Answer briefly.", "input": "hello world"}
    expected = (
        message(O200K, "developer", "Answer briefly.")
        + message(O200K, "user", "hello world")
        + REPLY_PRIMING
    )
    assert await prompt_tokens(counter, "responses", body, "gpt-4.1") == expected


async def test_responses_items(counter: TokenCounter) -> None:
    body = {
        "input": [
            {"role": "user", "content": "hello world"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Describe this"},
                    {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
                    {"type": "input_file", "file_id": "file-1"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "found it"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        "tools": [{"type": "function", **WEATHER_FUNCTION}, {"type": "web_search_preview"}],
    }
    expected = (
        message(O200K, "user", "hello world")
        + message(O200K, "user", "Describe this")
        + IMAGE_LOW_DETAIL
        + MESSAGE_OVERHEAD
        + tokens(O200K, "lookup")
        + tokens(O200K, '{"q":1}')
        + MESSAGE_OVERHEAD
        + tokens(O200K, "found it")
        + REPLY_PRIMING
        + weather_function_tokens(O200K)
        + TOOLS_OVERHEAD
    )
    assert await prompt_tokens(counter, "responses", body, "o4-mini") == expected


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("chat-completions", {}),
        ("chat-completions", {"messages": "hello"}),
        ("chat-completions", {"messages": [None, 3, "x", {"role": 5, "content": {"a": 1}}]}),
        ("chat-completions", {"messages": [{"content": [None, {"type": "text", "text": 5}]}]}),
        ("chat-completions", {"messages": [{"role": "assistant", "tool_calls": "x"}]}),
        ("chat-completions", {"messages": [{"role": "assistant", "tool_calls": [1, {"f": 2}]}]}),
        ("chat-completions", {"tools": [None, {"type": "function", "function": 3}]}),
        ("chat-completions", {"tools": [{"function": {"parameters": {"properties": [1]}}}]}),
        ("chat-completions", {"tools": [{"function": {"parameters": {"properties": {"a": 1}}}}]}),
        ("chat-completions", {"tools": [{"function": {"name": 1, "description": ["x"]}}]}),
        ("chat-completions", {"functions": {"name": "f"}}),
        ("completions", {"prompt": None}),
        ("completions", {"prompt": [None, {"x": 1}, 2.5, True, [1, "a", None]]}),
        ("embeddings", {"input": {"text": "a"}}),
        ("responses", {"input": 42, "instructions": ["x"]}),
        ("responses", {"input": [None, {"type": "function_call", "name": 3}, {"role": "user"}]}),
        ("responses", {"input": [{"type": "function_call_output", "output": {"x": 1}}]}),
        ("embeddings", []),  # not even an object
    ],
)
async def test_malformed_bodies_never_raise(
    counter: TokenCounter, operation: str, body: Any
) -> None:
    assert await prompt_tokens(counter, operation, body, "gpt-4o") >= 0


async def test_unknown_operations_count_nothing(counter: TokenCounter) -> None:
    body = {"messages": [{"role": "user", "content": "hello world"}]}
    assert await prompt_tokens(counter, "list-models", body, "gpt-4o") == 0


async def test_deep_tool_schemas_stop_at_the_depth_limit(counter: TokenCounter) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):  # deeper than Python's recursion limit
        schema = {"type": "object", "properties": {"x": schema}}
    body = {"tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}
    assert await prompt_tokens(counter, "chat-completions", body, "gpt-4o") > 0


class ThreadRecordingEncoding:
    def __init__(self) -> None:
        self.threads: list[int] = []

    def count(self, text: str) -> int:
        self.threads.append(threading.get_ident())
        return len(text.split())


async def test_large_prompts_are_counted_off_the_event_loop() -> None:
    encoding = ThreadRecordingEncoding()
    counter = TokenCounter([O200K], loader=lambda name: encoding)
    await counter.start()
    loop_thread = threading.get_ident()

    small = {"messages": [{"role": "user", "content": "a b c"}]}
    await prompt_tokens(counter, "chat-completions", small, None)
    assert set(encoding.threads) == {loop_thread}

    encoding.threads.clear()
    text = "word " * (LARGE_TEXT_CHARS // 5 + 1)
    large = {"messages": [{"role": "user", "content": text}]}
    count = await prompt_tokens(counter, "chat-completions", large, None)
    assert count == MESSAGE_OVERHEAD + 1 + LARGE_TEXT_CHARS // 5 + 1 + REPLY_PRIMING
    assert loop_thread not in encoding.threads
    await counter.close()


async def test_a_body_without_text_does_not_wait_for_a_tokenizer() -> None:
    def never(name: str) -> ThreadRecordingEncoding:
        raise AssertionError("no tokenizer should be loaded")

    counter = TokenCounter((), loader=never)
    body = {"input": [[1, 2, 3], [4]]}
    assert await prompt_tokens(counter, "embeddings", body, "text-embedding-3-large") == 4
