"""`prompt_tokens`: the prompt tokens a request will be billed for, counted before forwarding.

Per operation id:
- `chat-completions`: messages, tools and functions (see `messages` and `tools` for the rules);
- `completions`: `prompt`, a string or a list of strings, token id arrays counted by length;
- `embeddings`: `input`, the same shapes as `prompt` (no overheads: embeddings bill the input
  tokens exactly);
- `responses`: `instructions`, `input` (a string or items) and function tools.
Other operations count 0. A malformed body never raises: what can be counted is counted and
the rest is left to the backend, which rejects it anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aigw.tokenizer.encodings import LARGE_TEXT_CHARS, encoding_name_for
from aigw.tokenizer.messages import add_chat, add_responses
from aigw.tokenizer.parts import PromptParts

if TYPE_CHECKING:
    from aigw.tokenizer.encodings import TokenCounter


def _add_prompt(parts: PromptParts, value: object) -> None:
    """A string, a list of strings, token ids, or a list of token id arrays."""
    if isinstance(value, str):
        parts.text(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                parts.text(item)
            elif type(item) is int:
                parts.tokens(1)
            else:
                parts.token_ids(item)


def _add_completions(parts: PromptParts, body: Mapping[str, Any]) -> None:
    _add_prompt(parts, body.get("prompt"))


def _add_embeddings(parts: PromptParts, body: Mapping[str, Any]) -> None:
    _add_prompt(parts, body.get("input"))


_WALKERS: Final[dict[str, Callable[[PromptParts, Mapping[str, Any]], None]]] = {
    "chat-completions": add_chat,
    "completions": _add_completions,
    "embeddings": _add_embeddings,
    "responses": add_responses,
}


def prompt_parts(operation: str, body: object, encoding: str) -> PromptParts:
    """What `body` contributes to the prompt, not yet tokenized."""
    parts = PromptParts(encoding)
    walker = _WALKERS.get(operation)
    if walker is not None and isinstance(body, Mapping):
        walker(parts, body)
    return parts


async def prompt_tokens(
    counter: TokenCounter,
    operation: str,
    body: Mapping[str, Any],
    model: str | None,
    *,
    tenant: str | None = None,
) -> int:
    """Prompt tokens of `body` for `operation`, with the tokenizer of `model`.

    `model` is the body's `model` when present, else the Azure deployment id. With a
    `tenant` (whose texts they are: see `UsageMeter`), long texts are counted through the
    counter's `recent` counts of that tenant: a resent system prompt or earlier turn is
    looked up, not tokenized again.
    """
    name = encoding_name_for(model)
    parts = prompt_parts(operation, body, name)
    if not parts.texts:
        return max(0, parts.fixed)  # nothing to tokenize: no need to wait for a tokenizer
    encoding = await counter.encoding(name)
    if parts.chars > LARGE_TEXT_CHARS:
        return await asyncio.to_thread(parts.count, encoding)
    if tenant is not None:
        encoding = counter.recent.remembering(encoding, name, tenant)
    return parts.count(encoding)
