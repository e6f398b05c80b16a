"""Reading the backend's `usage` object from a response body (or a streamed event).

Two shapes exist: Chat Completions, Completions and Embeddings report `prompt_tokens`,
`completion_tokens` (absent for embeddings), `total_tokens`,
`prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`; the
Responses API reports `input_tokens`, `output_tokens`, `total_tokens` and the same details
under `input_tokens_details` / `output_tokens_details`. Extra fields (Azure adds several)
are ignored. Every count must be an int ≥ 0 (a bool is not one); a missing `total_tokens` is
the sum, a missing or null detail is 0, and anything else odd means no usage (None): a
wrong number is worse than counting ourselves.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from aigw.usage.model import Usage

_CHAT_SHAPED: Final = frozenset({"chat-completions", "completions", "embeddings"})

MAX_COUNT: Final = 2**53
_TAIL_BYTES: Final = 64 << 10
# A key `"usage"` right after `{` or `,` is a key, never text inside a string (a quote in a
# string is escaped). Followed by only scalar members and the body's last `}`, it is a
# member of the top-level object.
_USAGE_KEY: Final = re.compile(rb'"usage"\s*:\s*')
_SPACE: Final = frozenset(b" \t\r\n")
_OPENERS: Final = frozenset(b"{,")
_SCALAR: Final = r'(?:"(?:[^"\\]|\\.)*"|null|true|false|-?[0-9][0-9.eE+-]*)'
_TOP_LEVEL_END: Final = re.compile(r'(?:\s*,\s*"(?:[^"\\]|\\.)*"\s*:\s*' + _SCALAR + r")*\s*\}\s*")
_DECODER: Final = json.JSONDecoder()


def usage_and_body(operation: str, body: bytes, *, has_text: bool) -> tuple[Usage | None, Any]:
    """`usage_from_body` of a JSON body not yet parsed, and the body parsed when it had to
    be (else None): without usage, an answer that `has_text` has its completion text
    counted, so it is parsed once.

    The usage is looked for at the body's end first, where OpenAI and Azure put it: parsing
    the whole body costs ~10 ms per MB (embeddings answers run to several MB) and even a
    small answer's full parse costs more than the rest of the metering. A valid top-level
    `usage` found there is taken without parsing the rest of the body (so is an invalid one
    when there is no text to count); otherwise the body is parsed whole, and (None, None)
    means it is not valid JSON."""
    found = _usage_at_end(body)
    if found is not None:
        usage = usage_from_body(operation, {"usage": found[0]})
        if usage is not None or not has_text:
            return usage, None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    return usage_from_body(operation, parsed), parsed


def _usage_at_end(body: bytes) -> tuple[Any] | None:
    """The top-level `usage` value when it ends the body (or only scalars follow it)."""
    tail = body[-_TAIL_BYTES:]
    at = tail.rfind(b'"usage"')
    while at > 0:
        before = at - 1
        while before > 0 and tail[before] in _SPACE:
            before -= 1
        key = _USAGE_KEY.match(tail, at)
        if key is not None and tail[before] in _OPENERS:
            break
        at = tail.rfind(b'"usage"', 0, at)
    else:
        return None
    try:
        text = tail[key.end() :].decode()
        value, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if _TOP_LEVEL_END.fullmatch(text, end) is None:
        return None
    return (value,)


def usage_from_body(operation: str, body: Any) -> Usage | None:
    """The usage a non-streamed response body reports for `operation`, if valid."""
    if not isinstance(body, dict):  # parsed JSON: an object is a dict
        return None
    if operation == "responses":
        return responses_usage(body.get("usage"))
    if operation in _CHAT_SHAPED:
        return chat_usage(body.get("usage"), completion_required=operation != "embeddings")
    return None


def chat_usage(usage: Any, *, completion_required: bool = True) -> Usage | None:
    """A Chat Completions / Completions / Embeddings `usage` object."""
    return _usage(
        usage,
        ("prompt_tokens", "completion_tokens"),
        ("prompt_tokens_details", "completion_tokens_details"),
        completion_required,
    )


def responses_usage(usage: Any) -> Usage | None:
    """A Responses API `usage` object."""
    return _usage(
        usage,
        ("input_tokens", "output_tokens"),
        ("input_tokens_details", "output_tokens_details"),
        completion_required=True,
    )


def _usage(
    usage: Any,
    keys: tuple[str, str],
    details: tuple[str, str],
    completion_required: bool,
) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get(keys[0]))
    completion = _count(usage.get(keys[1])) if completion_required or keys[1] in usage else 0
    if prompt is None or completion is None:
        return None
    total = _count(usage["total_tokens"]) if "total_tokens" in usage else prompt + completion
    cached = _detail(usage.get(details[0]), "cached_tokens")
    reasoning = _detail(usage.get(details[1]), "reasoning_tokens")
    if total is None or cached is None or reasoning is None:
        return None
    return Usage(prompt, completion, total, cached, reasoning, source="backend")


def _count(value: object) -> int | None:
    # `type(...) is int`: True and False are ints to isinstance, never token counts.
    # Bounded: a count beyond any real request would overflow a BIGINT column downstream.
    return value if type(value) is int and 0 <= value < MAX_COUNT else None


def _detail(details: object, key: str) -> int | None:
    if details is None:
        return 0
    if not isinstance(details, dict):
        return None
    value = details.get(key)
    return 0 if value is None else _count(value)
