"""`usage_from_body`: the backend's usage, for each operation's shape, and nothing if odd;
`usage_and_body`: the same from bytes, with the parsed body when it had to be parsed."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from aigw.usage.extract import usage_and_body, usage_from_body
from aigw.usage.model import Usage

CHAT_BODY: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi!"},
            "finish_reason": "stop",
            "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
        }
    ],
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    "system_fingerprint": "fp_1",
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 128,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}

RESPONSES_BODY: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi!"}]}],
    "usage": {
        "input_tokens": 40,
        "input_tokens_details": {"cached_tokens": 8},
        "output_tokens": 90,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 130,
    },
}


def test_chat_completions_with_details() -> None:
    assert usage_from_body("chat-completions", CHAT_BODY) == Usage(1200, 300, 1500, 1024, 128)


def test_completions() -> None:
    body = {
        "object": "text_completion",
        "choices": [{"text": "x", "index": 0}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    assert usage_from_body("completions", body) == Usage(5, 7, 12)


def test_embeddings_have_no_completion_tokens() -> None:
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    assert usage_from_body("embeddings", body) == Usage(8, 0, 8)


def test_responses_api() -> None:
    assert usage_from_body("responses", RESPONSES_BODY) == Usage(40, 90, 130, 8, 64)


def test_the_source_is_the_backend() -> None:
    usage = usage_from_body("chat-completions", CHAT_BODY)
    assert usage is not None and usage.source == "backend"


def test_null_or_missing_details_are_zero() -> None:
    body = copy.deepcopy(CHAT_BODY)
    body["usage"]["prompt_tokens_details"] = None
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": None}
    assert usage_from_body("chat-completions", body) == Usage(1200, 300, 1500)
    del body["usage"]["prompt_tokens_details"]
    del body["usage"]["completion_tokens_details"]
    assert usage_from_body("chat-completions", body) == Usage(1200, 300, 1500)


def test_a_missing_total_is_the_sum() -> None:
    body = {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    assert usage_from_body("chat-completions", body) == Usage(3, 4, 7)
    body = {"usage": {"input_tokens": 3, "output_tokens": 4}}
    assert usage_from_body("responses", body) == Usage(3, 4, 7)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("prompt_tokens",), True),
        (("prompt_tokens",), -1),
        (("prompt_tokens",), 1.0),
        (("prompt_tokens",), "12"),
        (("prompt_tokens",), None),
        (("completion_tokens",), False),
        (("completion_tokens",), None),
        (("total_tokens",), 1.5),
        (("total_tokens",), None),
        (("prompt_tokens_details",), 5),
        (("prompt_tokens_details", "cached_tokens"), "8"),
        (("prompt_tokens_details", "cached_tokens"), True),
        (("completion_tokens_details",), []),
        (("completion_tokens_details", "reasoning_tokens"), -3),
    ],
)
def test_odd_values_mean_no_usage(path: tuple[str, ...], value: object) -> None:
    body = copy.deepcopy(CHAT_BODY)
    target = body["usage"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert usage_from_body("chat-completions", body) is None


@pytest.mark.parametrize("key", ["prompt_tokens", "completion_tokens"])
def test_missing_counts_mean_no_usage(key: str) -> None:
    body = copy.deepcopy(CHAT_BODY)
    del body["usage"][key]
    assert usage_from_body("chat-completions", body) is None


def test_embeddings_completion_tokens_are_checked_when_present() -> None:
    body = {"usage": {"prompt_tokens": 8, "completion_tokens": "0", "total_tokens": 8}}
    assert usage_from_body("embeddings", body) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("input_tokens", None),
        ("output_tokens", True),
        ("input_tokens_details", "x"),
        ("output_tokens_details", {"reasoning_tokens": 2.0}),
    ],
)
def test_odd_responses_usage_means_none(key: str, value: object) -> None:
    body = copy.deepcopy(RESPONSES_BODY)
    body["usage"][key] = value
    assert usage_from_body("responses", body) is None


def test_the_shape_must_match_the_operation() -> None:
    assert usage_from_body("responses", CHAT_BODY) is None
    assert usage_from_body("chat-completions", RESPONSES_BODY) is None


@pytest.mark.parametrize("body", [None, [], "usage", 3, {"usage": None}, {"usage": [1, 2]}, {}])
def test_bodies_without_usage(body: object) -> None:
    assert usage_from_body("chat-completions", body) is None


def test_other_operations_have_no_usage() -> None:
    assert usage_from_body("list-models", CHAT_BODY) is None


# --- usage_and_body: bodies are read from their end first -----------------------------------

EMBEDDING = {"object": "embedding", "index": 0, "embedding": [0.0123456789] * 1536}
EMBEDDINGS_USAGE = {"prompt_tokens": 800, "total_tokens": 800}


def large(tail: dict[str, Any], *, head: dict[str, Any] | None = None) -> bytes:
    """An embeddings answer of a few MB, `tail` members last."""
    body = {**(head or {}), "object": "list", "data": [EMBEDDING] * 200, **tail}
    encoded = json.dumps(body).encode()
    assert len(encoded) > 256 << 10
    return encoded


def test_a_large_body_is_read_for_usage_at_its_end_without_parsing_it_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = large({"model": "text-embedding-3-small", "usage": EMBEDDINGS_USAGE})

    def whole(text: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the whole body was parsed")

    monkeypatch.setattr(json, "loads", whole)
    assert usage_and_body("embeddings", body, has_text=False) == (Usage(800, 0, 800), None)
    # Only scalar members after it (OpenAI's service_tier, system_fingerprint): still there.
    body = large({"usage": EMBEDDINGS_USAGE, "service_tier": "default", "n": 1, "x": None})
    assert usage_and_body("embeddings", body, has_text=False) == (Usage(800, 0, 800), None)


@pytest.mark.parametrize(
    "tail",
    [
        {"usage": EMBEDDINGS_USAGE, "metadata": {"usage": {"prompt_tokens": 1}}},
        {"usage": EMBEDDINGS_USAGE, "extra": {"a": 1}},
        {"usage": EMBEDDINGS_USAGE, "note": '", "usage": {"prompt_tokens": 5}}'},
        {"note": 'x", "usage": {"prompt_tokens": 5, "total_tokens": 5}}'},
        {"usage": EMBEDDINGS_USAGE, "nested": [{"usage": {"prompt_tokens": 2}}]},
    ],
    ids=["nested-after", "object-after", "in-a-string-after", "only-in-a-string", "in-a-list"],
)
def test_a_large_body_whose_end_is_not_plain_is_parsed_whole(tail: dict[str, Any]) -> None:
    body = large(tail)
    assert usage_and_body("embeddings", body, has_text=False)[0] == usage_from_body(
        "embeddings", json.loads(body)
    )


def test_a_usage_that_only_looks_top_level_is_not_taken() -> None:
    body = large({}, head={"wrapper": 1})
    nested = body[:-1] + b', "inner": {"usage": {"prompt_tokens": 3}}}'
    assert usage_and_body("embeddings", nested, has_text=False)[0] is None
    array = b"[" + large({"usage": EMBEDDINGS_USAGE}) + b"]"
    assert usage_and_body("embeddings", array, has_text=False)[0] is None


def test_bytes_that_are_not_json_have_no_usage() -> None:
    assert usage_and_body("chat-completions", b"{not json", has_text=True) == (None, None)
    assert usage_and_body("chat-completions", b'{"x": ' + b"[" * 100_000, has_text=True) == (
        None,
        None,
    )
    assert usage_and_body("chat-completions", b"\xff\xfe", has_text=True) == (None, None)


def test_a_body_without_usage_comes_back_parsed_for_its_completion_text() -> None:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}]}
    assert usage_and_body("chat-completions", json.dumps(body).encode(), has_text=True) == (
        None,
        body,
    )
    null = {**body, "usage": None}  # at the end, but no usage: the body is parsed after all
    assert usage_and_body("chat-completions", json.dumps(null).encode(), has_text=True) == (
        None,
        null,
    )


def test_an_odd_usage_at_the_end_comes_back_with_the_body_parsed() -> None:
    body = {**CHAT_BODY, "usage": {"prompt_tokens": -1, "completion_tokens": 2}}
    assert usage_and_body("chat-completions", json.dumps(body).encode(), has_text=True) == (
        None,
        body,
    )


def test_an_odd_usage_at_the_end_of_an_answer_without_text_is_not_parsed_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Embeddings have no completion text to count: a multi-MB body is not parsed for it."""
    body = large({"usage": {"prompt_tokens": -1, "total_tokens": 2}})

    def whole(text: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the whole body was parsed")

    monkeypatch.setattr(json, "loads", whole)
    assert usage_and_body("embeddings", body, has_text=False) == (None, None)
