"""Strict JSON for request bodies.

A policy and the backend must see the same document, so bodies with duplicate keys, NaN or
Infinity, absurd numbers or absurd nesting are refused instead of being read one way here and
another way upstream.
"""

from __future__ import annotations

import json
from typing import Any

from aigw.errors import BadRequest

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 64


class InvalidJsonBody(BadRequest):
    reason = "InvalidJsonBody"


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJsonBody(f"Request body is not valid JSON: duplicate key '{key[:64]}'")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise InvalidJsonBody(f"Request body is not valid JSON: {name} is not allowed")


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise InvalidJsonBody("Request body is not valid JSON: number is too long")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise InvalidJsonBody("Request body is not valid JSON: number is too long")
    return float(text)


def _check_depth(data: bytes) -> None:
    """Cheap bracket count; strings may contain brackets, which only makes this stricter
    when they are unbalanced, so a tight limit is not applied to string content."""
    depth = 0
    deepest = 0
    in_string = False
    escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    raise InvalidJsonBody(
                        f"Request body is not valid JSON: nested deeper than {MAX_DEPTH} levels"
                    )
        elif byte in (0x5D, 0x7D):
            depth -= 1


# Built once: json.loads with hooks would construct a new decoder on every call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates,
    parse_constant=_reject_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
)


def parse_strict_json(data: bytes) -> Any:
    # The depth scan is linear but in Python; only pay for it when nesting chars are many.
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH:
        _check_depth(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJsonBody("Request body is not valid JSON: it is not UTF-8 text") from None
    try:
        return _DECODER.decode(text)
    except InvalidJsonBody:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidJsonBody(
            f"Request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (RecursionError, ValueError):
        raise InvalidJsonBody("Request body is not valid JSON") from None


def serialize_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
