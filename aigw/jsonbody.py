"""Strict JSON for request bodies.

A policy and the backend must see the same document, so bodies with duplicate keys, NaN or
Infinity, numbers out of range or absurdly long, or absurd nesting are refused instead of
being read one way here and another way upstream.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aigw.errors import BadRequest

MAX_NUMBER_CHARS = 64


class InvalidJsonBody(BadRequest):
    reason = "InvalidJsonBody"


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # in C; only a length mismatch needs a closer look
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJsonBody(f"Request body is not valid JSON: duplicate key '{key[:64]}'")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise InvalidJsonBody(f"Request body is not valid JSON: {name} is not allowed")


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise InvalidJsonBody("Request body is not valid JSON: number is too long")
    value = float(text)
    if not math.isfinite(value):  # 1e999 would come back out as Infinity, not JSON
        raise InvalidJsonBody("Request body is not valid JSON: number is out of range")
    return value


# Built once: json.loads with hooks would construct a new decoder on every call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates,
    parse_constant=_reject_constant,
    parse_float=_parse_float,
)


def parse_strict_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJsonBody("Request body is not valid JSON: it is not UTF-8 text") from None
    try:
        value = _DECODER.decode(text)
    except InvalidJsonBody:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidJsonBody(
            f"Request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        # The C decoder counts its own nesting and stops at Python's recursion limit
        # (about 1,000 levels), in linear time, without a Python-level scan of the body.
        raise InvalidJsonBody("Request body is not valid JSON: nested too deeply") from None
    except ValueError:
        # Also integers over Python's 4,300-digit limit, refused by the decoder itself.
        raise InvalidJsonBody("Request body is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(text) and not _encodes_as_utf8(value):
        raise InvalidJsonBody("Request body is not valid JSON: unpaired surrogate in a string")
    return value


# A `\uD800`-style escape: only then can a decoded string hold a lone surrogate, which no
# UTF-8 text (and so no backend, header or URL) can carry.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodes_as_utf8(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def serialize_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
