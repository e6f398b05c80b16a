"""Runtime helpers called by compiled expressions: C#-like conversions, equality, string methods.

Failures raise `EvaluationError` with a detail that never contains a runtime value;
`Value.evaluate` turns it into `aigw.errors.ExpressionEvaluationFailure`, with the expression
and the detail for the operator's log only.

Every string an operator or method builds is capped at `MAX_STRING_CHARS`, checked from the
inputs' lengths before building it where that is possible, since the inputs come from clients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

MAX_STRING_CHARS: Final = 64 * 1024


class EvaluationError(Exception):
    """Internal signal from a compiled expression; carries a value-free detail."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


# Returned by indexers for an absent key, since None is a legitimate stored value.
MISSING: Final = _Missing()


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_string(value: object) -> str:
    """C#'s `ToString()` for the values expressions can produce."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, datetime):
        # C# uses the culture's format here; ISO 8601 is unambiguous and sortable.
        return value.isoformat()
    raise EvaluationError(f"a value of type {type(value).__name__} cannot be converted to a string")


def format_double(value: float) -> str:
    """`double.ToString()` of .NET Core 3+: shortest round-trip text, `E` exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
    return text.replace("e", "E")


def check_length(length: int) -> None:
    if length > MAX_STRING_CHARS:
        raise EvaluationError(f"string result longer than {MAX_STRING_CHARS} characters")


def capped(method: Callable[..., str]) -> Callable[..., str]:
    """A string method whose result is checked against the cap after it is built; for
    methods whose result is never much longer than their receiver."""

    def run(*args: Any) -> str:
        result = method(*args)
        check_length(len(result))
        return result

    return run


def concat_operand(value: object) -> str:
    """String concatenation treats null as the empty string, as C# does."""
    return "" if value is None else to_string(value)


def concat(left: object, right: object) -> str:
    first, second = concat_operand(left), concat_operand(right)
    check_length(len(first) + len(second))
    return first + second


def values_equal(left: object, right: object) -> bool:
    """`==` for dynamically typed operands: ordinal strings, numeric numbers, null with anything."""
    if left is None or right is None:
        return left is right
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if is_number(left) and is_number(right):
        return bool(left == right)
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    return type(left) is type(right) and bool(left == right)


def require_bool(value: object, what: str) -> bool:
    if value is True or value is False:
        return value
    raise EvaluationError(f"{what} is null" if value is None else f"{what} is not a boolean")


# String methods: arguments were already checked against the method's parameter kinds.


def str_contains(text: str, part: str) -> bool:
    return part in text


def str_starts_with(text: str, prefix: str) -> bool:
    return text.startswith(prefix)


def str_ends_with(text: str, suffix: str) -> bool:
    return text.endswith(suffix)


def str_equals(text: str, other: str | None) -> bool:
    return text == other


def str_substring(text: str, start: int, length: int | None = None) -> str:
    end = len(text) if length is None else start + length
    if start < 0 or start > len(text) or end < start or end > len(text):
        raise EvaluationError("Substring arguments are out of range")
    return text[start:end]


def str_replace(text: str, old: str, new: str | None) -> str:
    if not old:
        raise EvaluationError("the first argument of Replace is empty")
    new = new or ""
    # The exact result length, known before the string is built: "aaa…".Replace("a", itself)
    # would otherwise build len² characters.
    check_length(len(text) + text.count(old) * (len(new) - len(old)))
    return text.replace(old, new)


def case_mapping(convert: Callable[[str], str]) -> Callable[[str], str]:
    """ToUpper/ToLower: Unicode case mapping never shortens a string but may lengthen it."""

    def run(text: str) -> str:
        check_length(len(text))
        result = convert(text)
        check_length(len(result))
        return result

    return run


def str_split(text: str, separator: str) -> list[str]:
    # C# returns the whole string for an empty separator; Python would raise.
    return text.split(separator) if separator else [text]


def list_item(items: list[Any], index: int) -> Any:
    return items[index] if 0 <= index < len(items) else MISSING
