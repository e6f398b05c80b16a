"""Prompt tokens of chat messages (Chat Completions) and input items (Responses API).

Chat accounting as OpenAI documents it for its chat models: every message costs
`MESSAGE_OVERHEAD` (3) plus the tokens of its role and content, a `name` costs its tokens
plus `NAME_OVERHEAD` (1), and the reply is primed with `REPLY_PRIMING` (3) more. Beyond that:

- content may be a string or a list of parts: text (and refusal) parts are tokenized, images
  cost `IMAGE_LOW_DETAIL` (85) at `detail: low` and `IMAGE_ESTIMATE` (765) otherwise, which is
  what one 1024x1024 image costs at high detail (85 + 4 tiles of 170): the gateway does not
  fetch images to learn their size. Audio and file parts are not counted;
- an assistant message's `tool_calls` (and legacy `function_call`) add the tokens of each
  function name and its arguments text;
- Responses API input is counted with the same rules: a string input is one user message,
  `instructions` one developer message, message items as chat messages, `function_call`
  items as a message holding name and arguments, `function_call_output` items as a message
  holding the output. Other items (reasoning, references, built-in tool calls) add nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aigw.tokenizer.parts import PromptParts
from aigw.tokenizer.tools import add_tools

MESSAGE_OVERHEAD: Final = 3
NAME_OVERHEAD: Final = 1
REPLY_PRIMING: Final = 3
IMAGE_LOW_DETAIL: Final = 85
IMAGE_ESTIMATE: Final = 765

_IMAGE_PARTS: Final = frozenset({"image_url", "input_image"})
_UNCOUNTED_PARTS: Final = frozenset({"input_audio", "file", "input_file", "audio"})


def add_chat(parts: PromptParts, body: Mapping[str, Any]) -> None:
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            add_message(parts, message)
        parts.tokens(REPLY_PRIMING)
    add_tools(parts, body.get("tools"))
    add_tools(parts, body.get("functions"))


def add_message(parts: PromptParts, message: object) -> None:
    if not isinstance(message, Mapping):
        return
    parts.tokens(MESSAGE_OVERHEAD)
    parts.text(message.get("role"))
    name = message.get("name")
    if isinstance(name, str):
        parts.tokens(NAME_OVERHEAD)
        parts.text(name)
    add_content(parts, message.get("content"))
    parts.text(message.get("refusal"))
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if isinstance(call, Mapping):
                _add_call(parts, call.get("function"))
    _add_call(parts, message.get("function_call"))


def add_content(parts: PromptParts, content: object) -> None:
    """A string, or a list of content parts (chat and Responses API part types)."""
    if isinstance(content, str):
        parts.text(content)
        return
    if not isinstance(content, list):
        return
    for part in content:
        if isinstance(part, str):
            parts.text(part)
        elif isinstance(part, Mapping):
            kind = part.get("type")
            if kind in _IMAGE_PARTS:
                parts.tokens(_image_tokens(part))
            elif kind not in _UNCOUNTED_PARTS:
                parts.text(part.get("text"))
                parts.text(part.get("refusal"))


def _image_tokens(part: Mapping[str, Any]) -> int:
    # Chat nests the detail in `image_url`; the Responses API puts it on the part itself.
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, Mapping) else part.get("detail")
    return IMAGE_LOW_DETAIL if detail == "low" else IMAGE_ESTIMATE


def _add_call(parts: PromptParts, function: object) -> None:
    if isinstance(function, Mapping):
        parts.text(function.get("name"))
        parts.text(function.get("arguments"))


def add_responses(parts: PromptParts, body: Mapping[str, Any]) -> None:
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        add_message(parts, {"role": "developer", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        add_message(parts, {"role": "user", "content": items})
    elif isinstance(items, list):
        for item in items:
            _add_item(parts, item)
    if isinstance(items, str | list) or isinstance(instructions, str):
        parts.tokens(REPLY_PRIMING)
    add_tools(parts, body.get("tools"))


def _add_item(parts: PromptParts, item: object) -> None:
    if isinstance(item, str):  # tolerated by some servers as a bare user message
        add_message(parts, {"role": "user", "content": item})
        return
    if not isinstance(item, Mapping):
        return
    kind = item.get("type")
    if kind == "function_call":
        parts.tokens(MESSAGE_OVERHEAD)
        _add_call(parts, item)
    elif kind == "function_call_output":
        parts.tokens(MESSAGE_OVERHEAD)
        add_content(parts, item.get("output"))
    elif kind in (None, "message"):
        add_message(parts, item)
