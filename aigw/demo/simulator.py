"""Pure logic of the demo backend: OpenAI-shaped completions, chunks, embeddings and usage.

Token counts are a deterministic *approximation*, not a real tokenizer: a token is a run of
word characters or a single punctuation mark (``\\w+|[^\\w\\s]``), plus OpenAI's chat overhead
of 3 tokens per message and 3 for priming the reply. Replies are split into pieces of exactly
one token each, so counting the streamed text gives the same number as the reported usage.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import re
import struct
import sys
import time
import uuid
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

JsonObject = dict[str, Any]
FinishReason = Literal["stop", "length"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
# A piece is one token with the whitespace in front of it, so pieces concatenate to the text.
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "elit")
_PROMPT_WORDS = 12  # caps the echoed prompt so replies stay short for any input
_CHAT_PREFIX = "This is a demo reply to"
_MESSAGE_OVERHEAD = 3
_REPLY_PRIMING = 3
DEFAULT_DIMENSIONS = 256  # smaller than OpenAI's 1536 to keep benchmark bodies small
MAX_DIMENSIONS = 3072
MODEL_CREATED = 1_700_000_000


class DemoRequestError(ValueError):
    """The request is invalid; rendered as a 400 in the OpenAI error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def split_tokens(text: str) -> list[str]:
    """Split text into one-token pieces whose concatenation is the text (minus trailing space)."""
    return _PIECE.findall(text)


def error_body(
    message: str, kind: str = "invalid_request_error", param: str | None = None
) -> JsonObject:
    """OpenAI's error shape; `code` stays null as it does for most OpenAI errors."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated choice, already split into one-token pieces."""

    pieces: tuple[str, ...]
    finish_reason: FinishReason

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a response needs, decided once so the JSON and the stream agree."""

    id: str
    created: int
    model: str
    prompt_tokens: int
    choices: tuple[Completion, ...]

    @property
    def completion_tokens(self) -> int:
        return sum(len(choice.pieces) for choice in self.choices)

    def usage(self) -> JsonObject:
        return usage_json(self.prompt_tokens, self.completion_tokens)

    def envelope(self, obj: str, choices: list[JsonObject]) -> JsonObject:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_demo",
            "choices": choices,
        }


def build_reply(
    prefix: str,
    prompt: str,
    *,
    length: int | None = None,
    max_tokens: int | None = None,
) -> Completion:
    """Echo the start of the prompt; pad or cut to `length` pieces, then honour `max_tokens`."""
    snippet = " ".join(prompt.split()[:_PROMPT_WORDS])
    pieces = split_tokens(f"{prefix}: {snippet}" if snippet else f"{prefix}.")
    if length is not None:
        filler = (f" {word}" for word in itertools.cycle(_FILLER))
        pieces = list(itertools.islice(itertools.chain(pieces, filler), length))
    if max_tokens is not None and len(pieces) > max_tokens:
        return Completion(tuple(pieces[:max_tokens]), "length")
    return Completion(tuple(pieces), "stop")


def usage_json(prompt_tokens: int, completion_tokens: int) -> JsonObject:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def content_text(content: object) -> str:
    """Text of a message content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def _int_field(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DemoRequestError(f"'{name}' must be an integer of at least 1.", name)
        return value
    return None


def _model(body: Mapping[str, Any], default: str) -> str:
    model = body.get("model")
    if model is None:
        return default
    if not isinstance(model, str) or not model:
        raise DemoRequestError("'model' must be a non-empty string.", "model")
    return model


def wants_stream(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise DemoRequestError("'stream' must be a boolean.", "stream")
    return stream


def wants_usage_chunk(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _chat_prompt(messages: object) -> tuple[str, int]:
    """The last user message's text and the approximate prompt token count."""
    if not isinstance(messages, list) or not messages:
        raise DemoRequestError("'messages' must be a non-empty array.", "messages")
    tokens, last_user = _REPLY_PRIMING, ""
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise DemoRequestError(f"'messages[{index}]' needs a 'role'.", "messages")
        text = content_text(message.get("content"))
        tokens += _MESSAGE_OVERHEAD + count_tokens(message["role"]) + count_tokens(text)
        if isinstance(message.get("name"), str):
            tokens += 1 + count_tokens(message["name"])
        if message["role"] == "user":
            last_user = text
    return last_user, tokens


def plan_chat(body: Mapping[str, Any], default_model: str, length: int | None) -> Plan:
    prompt, prompt_tokens = _chat_prompt(body.get("messages"))
    max_tokens = _int_field(body, "max_completion_tokens", "max_tokens")
    reply = build_reply(_CHAT_PREFIX, prompt, length=length, max_tokens=max_tokens)
    return Plan(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=_model(body, default_model),
        prompt_tokens=prompt_tokens,
        choices=(reply,),
    )


def chat_completion(plan: Plan) -> JsonObject:
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": choice.text, "refusal": None},
            "logprobs": None,
            "finish_reason": choice.finish_reason,
        }
        for index, choice in enumerate(plan.choices)
    ]
    return {**plan.envelope("chat.completion", choices), "usage": plan.usage()}


def _stream(
    plan: Plan, obj: str, choices: Iterator[JsonObject], include_usage: bool
) -> Iterator[JsonObject]:
    """One chunk per choice delta; with usage requested OpenAI adds `"usage": null` to
    each chunk and ends with a chunk that has no choices, only the usage."""
    extra = {"usage": None} if include_usage else {}
    for choice in choices:
        yield {**plan.envelope(obj, [choice]), **extra}
    if include_usage:
        yield {**plan.envelope(obj, []), "usage": plan.usage()}


def _chat_deltas(plan: Plan) -> Iterator[JsonObject]:
    """A role delta, one delta per token, then an empty delta with the finish reason."""
    for index, completion in enumerate(plan.choices):
        choice = {"index": index, "logprobs": None, "finish_reason": None}
        yield {**choice, "delta": {"role": "assistant", "content": "", "refusal": None}}
        for piece in completion.pieces:
            yield {**choice, "delta": {"content": piece}}
        yield {**choice, "delta": {}, "finish_reason": completion.finish_reason}


def chat_chunks(plan: Plan, include_usage: bool) -> Iterator[JsonObject]:
    return _stream(plan, "chat.completion.chunk", _chat_deltas(plan), include_usage)


def _inputs(value: object, param: str) -> list[tuple[str, int]]:
    """A string, a token array, or a list of either (legacy `prompt`, embedding `input`)."""
    if isinstance(value, str):
        return [(value, count_tokens(value))]
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        return [(" ".join(map(str, value)), len(value))]
    if isinstance(value, list) and value:
        return [item for entry in value for item in _inputs(entry, param)]
    message = f"'{param}' must be a string, a token array, or a list of them."
    raise DemoRequestError(message, param)


def plan_text_completion(body: Mapping[str, Any], default_model: str, length: int | None) -> Plan:
    prompts = _inputs(body.get("prompt"), "prompt")
    max_tokens = _int_field(body, "max_tokens")
    prefix = "This is a demo completion of"
    choices = tuple(
        build_reply(prefix, text, length=length, max_tokens=max_tokens) for text, _ in prompts
    )
    return Plan(
        id=f"cmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=_model(body, default_model),
        prompt_tokens=sum(tokens for _, tokens in prompts),
        choices=choices,
    )


def text_completion(plan: Plan) -> JsonObject:
    choices = [
        {"text": c.text, "index": i, "logprobs": None, "finish_reason": c.finish_reason}
        for i, c in enumerate(plan.choices)
    ]
    return {**plan.envelope("text_completion", choices), "usage": plan.usage()}


def _text_deltas(plan: Plan) -> Iterator[JsonObject]:
    for index, completion in enumerate(plan.choices):
        choice = {"text": "", "index": index, "logprobs": None, "finish_reason": None}
        for piece in completion.pieces:
            yield {**choice, "text": piece}
        yield {**choice, "finish_reason": completion.finish_reason}


def text_completion_chunks(plan: Plan, include_usage: bool) -> Iterator[JsonObject]:
    return _stream(plan, "text_completion", _text_deltas(plan), include_usage)


def embedding_vector(key: str, dimensions: int) -> list[float]:
    """A unit vector derived from a hash of the text, rounded to float32 like the real API."""
    raw = hashlib.shake_256(key.encode("utf-8")).digest(4 * dimensions)
    ints = struct.unpack(f"<{dimensions}I", raw)  # explicit byte order: same on every host
    centred = [value / 2_147_483_648.0 - 1.0 for value in ints]
    norm = math.sqrt(sum(v * v for v in centred)) or 1.0
    return array("f", (v / norm for v in centred)).tolist()


def encode_base64(vector: Sequence[float]) -> str:
    packed = array("f", vector)
    if sys.byteorder == "big":  # the SDK decodes little-endian float32
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def embeddings(body: Mapping[str, Any], default_model: str) -> JsonObject:
    inputs = _inputs(body.get("input"), "input")
    if any(not key for key, _ in inputs):  # OpenAI rejects empty strings here
        raise DemoRequestError("'input' must not contain empty strings.", "input")
    dimensions = _int_field(body, "dimensions") or DEFAULT_DIMENSIONS
    if dimensions > MAX_DIMENSIONS:
        message = f"'dimensions' must be at most {MAX_DIMENSIONS}."
        raise DemoRequestError(message, "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        message = "'encoding_format' must be 'float' or 'base64'."
        raise DemoRequestError(message, "encoding_format")
    data = []
    for index, (key, _) in enumerate(inputs):
        vector = embedding_vector(key, dimensions)
        encoded: object = encode_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(tokens for _, tokens in inputs)
    return {
        "object": "list",
        "data": data,
        "model": _model(body, default_model),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models_list(*models: str) -> JsonObject:
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": "aigw-demo"}
            for model in models
        ],
    }


def _responses_prompt(body: Mapping[str, Any]) -> tuple[str, int]:
    """Responses API `input` (a string or a list of message items) and its token estimate."""
    value, instructions = body.get("input"), body.get("instructions")
    tokens = _REPLY_PRIMING + count_tokens(content_text(instructions))
    if isinstance(value, str):
        return value, tokens + _MESSAGE_OVERHEAD + count_tokens(value)
    if not isinstance(value, list) or not value:
        raise DemoRequestError("'input' must be a string or an array.", "input")
    last_user = ""
    for item in value:
        if not isinstance(item, dict):
            raise DemoRequestError("'input' items must be objects.", "input")
        text = content_text(item.get("content"))
        tokens += _MESSAGE_OVERHEAD + count_tokens(text)
        if item.get("role") == "user":
            last_user = text
    return last_user, tokens


def response_object(body: Mapping[str, Any], default_model: str, length: int | None) -> JsonObject:
    """A minimal, completed (or incomplete on `max_output_tokens`) Responses API object."""
    prompt, input_tokens = _responses_prompt(body)
    max_tokens = _int_field(body, "max_output_tokens")
    reply = build_reply(_CHAT_PREFIX, prompt, length=length, max_tokens=max_tokens)
    cut = reply.finish_reason == "length"
    text = {"type": "output_text", "text": reply.text, "annotations": []}
    status = "incomplete" if cut else "completed"
    message = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": status}
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": max_tokens,
        "model": _model(body, default_model),
        "output": [{**message, "role": "assistant", "content": [text]}],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "metadata": {},
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(reply.pieces),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + len(reply.pieces),
        },
    }
