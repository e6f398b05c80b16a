"""Tokenizer for the policy-expression subset, and the config-time `ExpressionError`.

Positions are 0-based offsets into the whole configured text (including the leading `@(`);
`ExpressionError` reports them 1-based so they can be counted in the quoted text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TokenKind = Literal["string", "number", "ident", "op", "end"]

# Longest first, so "?." wins over "?" and "==" over a stray "=".
_OPERATORS = (
    "?.",
    "?[",
    "??",
    "==",
    "!=",
    "<=",
    ">=",
    "&&",
    "||",
    "?",
    ":",
    ".",
    "(",
    ")",
    "[",
    "]",
    ",",
    "!",
    "<",
    ">",
    "+",
)
_UNSUPPORTED_OPERATORS = frozenset("-*/%^~&|=")
_SIMPLE_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# ASCII only: Python's str.isdigit() accepts other scripts' digits, which int() would then parse.
_DIGITS = frozenset("0123456789")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | _DIGITS
# Far beyond any real constant; int() of a long enough digit run raises a bare ValueError.
MAX_NUMBER_CHARS = 32


class ExpressionError(Exception):
    """A policy expression that cannot be compiled; raised while loading config."""

    def __init__(self, message: str, expression: str, position: int) -> None:
        self.message = message
        self.expression = expression
        self.position = position
        super().__init__(f"{message} at position {position} in expression {expression}")


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    value: object
    pos: int


def tokenize(text: str, start: int) -> list[Token]:
    """Split `text[start:]` into tokens; the list always ends with an "end" token."""
    tokens: list[Token] = []
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            i = _read_string(text, i, tokens)
        elif ch in _DIGITS:
            i = _read_number(text, i, tokens)
        elif ch in _IDENT_START:
            j = i + 1
            while j < n and text[j] in _IDENT_CHARS:
                j += 1
            tokens.append(Token("ident", text[i:j], text[i:j], i))
            i = j
        else:
            i = _read_operator(text, i, tokens)
    tokens.append(Token("end", "", None, n))
    return tokens


def _read_operator(text: str, i: int, tokens: list[Token]) -> int:
    for op in _OPERATORS:
        if text.startswith(op, i):
            tokens.append(Token("op", op, op, i))
            return i + len(op)
    ch = text[i]
    if ch == "'":
        message = "character literals are not supported; use double quotes"
    elif ch in _UNSUPPORTED_OPERATORS:
        message = f'operator "{ch}" is not supported'
    else:
        message = f'unexpected character "{ch}"'
    raise ExpressionError(message, text, i + 1)


def _read_number(text: str, i: int, tokens: list[Token]) -> int:
    j, n = i, len(text)
    while j < n and text[j] in _DIGITS:
        j += 1
    is_decimal = j + 1 < n and text[j] == "." and text[j + 1] in _DIGITS
    if is_decimal:
        j += 1
        while j < n and text[j] in _DIGITS:
            j += 1
    if j - i > MAX_NUMBER_CHARS:
        raise ExpressionError("number literal is too long", text, i + 1)
    if j < n and text[j] in _IDENT_CHARS:
        raise ExpressionError("invalid number literal", text, i + 1)
    literal = text[i:j]
    value: int | float = float(literal) if is_decimal else int(literal)
    tokens.append(Token("number", literal, value, i))
    return j


def _read_string(text: str, start: int, tokens: list[Token]) -> int:
    parts: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            tokens.append(Token("string", text[start : i + 1], "".join(parts), start))
            return i + 1
        if ch in "\r\n":
            raise ExpressionError("newline in string literal", text, i + 1)
        if ch == "\\" and i + 1 < n:
            decoded, i = _read_escape(text, i)
            parts.append(decoded)
        else:
            parts.append(ch)
            i += 1
    raise ExpressionError("unterminated string literal", text, start + 1)


def _read_escape(text: str, i: int) -> tuple[str, int]:
    """Decode the C# escape sequence starting at the backslash `text[i]`."""
    code = text[i + 1 : i + 2]
    if code in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[code], i + 2
    if code == "u":
        digits = text[i + 2 : i + 6]
        if len(digits) == 4 and all(d in _HEX_DIGITS for d in digits):
            return chr(int(digits, 16)), i + 6
        raise ExpressionError(r"invalid \u escape: expected 4 hex digits", text, i + 1)
    raise ExpressionError(f'unrecognized escape sequence "\\{code}"', text, i + 1)
