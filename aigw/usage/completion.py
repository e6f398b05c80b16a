"""The completion text of a non-streamed answer, counted when the backend reported no usage.

It is what `stream` keeps of a streamed answer, read from whole messages instead of deltas,
so an answer counts the same streamed or not:
- Chat Completions and Completions, per choice: `text`, and the message's
  `reasoning_content`, `content` (a string, or the `text` of its parts), `refusal`, each
  tool call's function `name` and `arguments`, and those of a legacy `function_call`.
- Responses API, per `output` item: a message's `output_text` and `refusal` parts, a function
  call's `name` and `arguments`, a reasoning item's `summary` texts.
- Embeddings (and any other operation): none.

The body comes from a backend: anything of an unexpected type is skipped. The text is kept
up to `MAX_COMPLETION_CHARS`, as a stream's is (logged when cut).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Final

from aigw.usage.stream import MAX_COMPLETION_CHARS

log = logging.getLogger("aigw.usage")


def has_completion_text(operation: str) -> bool:
    """Whether answers to `operation` have a completion text to count (embeddings do not)."""
    return operation in _READERS


def completion_text(operation: str, body: object) -> str:
    """The completion text of `body`, a parsed JSON answer to `operation`."""
    reader = _READERS.get(operation)
    if reader is None or not isinstance(body, dict):
        return ""
    kept: list[str] = []
    room = MAX_COMPLETION_CHARS
    for piece in reader(body):
        if len(piece) > room:
            log.warning(
                "%s answer: the completion text outgrew %d characters",
                operation,
                MAX_COMPLETION_CHARS,
            )
            kept.append(piece[:room])
            break
        kept.append(piece)
        room -= len(piece)
    return "".join(kept)


def _choices_text(body: dict[str, Any]) -> Iterator[str]:
    for choice in _dicts(body.get("choices")):
        yield from _strings(choice.get("text"))
        message = choice.get("message")
        if not isinstance(message, dict):
            continue
        # In the order a stream sends them (choice after choice here: a stream of several
        # choices interleaves them: nearly the same count).
        yield from _strings(message.get("reasoning_content"))
        content = message.get("content")
        if isinstance(content, list):  # content parts, as some compatible servers send
            for part in _dicts(content):
                yield from _strings(part.get("text"))
        else:
            yield from _strings(content)
        yield from _strings(message.get("refusal"))
        for call in _dicts(message.get("tool_calls")):
            yield from _function_text(call.get("function"))
        yield from _function_text(message.get("function_call"))


def _function_text(function: object) -> Iterator[str]:
    if isinstance(function, dict):
        yield from _strings(function.get("name"), function.get("arguments"))


def _responses_text(body: dict[str, Any]) -> Iterator[str]:
    for item in _dicts(body.get("output")):
        kind = item.get("type")
        if kind == "message":
            for part in _dicts(item.get("content")):
                yield from _strings(part.get("text"), part.get("refusal"))
        elif kind == "function_call":
            yield from _strings(item.get("name"), item.get("arguments"))
        elif kind == "reasoning":
            for part in _dicts(item.get("summary")):
                yield from _strings(part.get("text"))


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield item


def _strings(*values: object) -> Iterator[str]:
    for value in values:
        if isinstance(value, str) and value:
            yield value


_READERS: Final[dict[str, Callable[[dict[str, Any]], Iterator[str]]]] = {
    "chat-completions": _choices_text,
    "completions": _choices_text,
    "responses": _responses_text,
}
