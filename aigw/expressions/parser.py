"""Recursive-descent parser that compiles an expression straight into closures.

Precedence follows C#, lowest first: `?:`, `??`, `||`, `&&`, `==` `!=`, `<` `<=` `>` `>=`,
`+`, unary `!` and casts, then member access, `?.`, indexers and calls. Members are resolved
against the static type table while parsing, so an unknown member fails at config load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aigw.expressions import operators
from aigw.expressions.lexer import ExpressionError, Token, tokenize
from aigw.expressions.members import BOOL, CONTEXT, NULL, NUMBER, STRING
from aigw.expressions.operators import CASTS, Node, TypeMismatch
from aigw.expressions.postfix import Span, Step, chain, resolve_index, resolve_member

if TYPE_CHECKING:
    from collections.abc import Callable

    from aigw.context import RequestContext

_BINARY_LEVELS = (("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+",))
_POSTFIX = frozenset({".", "?.", "[", "?["})
_KEYWORDS: dict[str, Node] = {
    "true": operators.literal(True, BOOL),
    "false": operators.literal(False, BOOL),
    "null": operators.literal(None, NULL),
}
# Deep enough for any real policy; stops pathological input before Python's recursion limit.
_MAX_DEPTH = 32
# Operators nest closures, so this bounds the evaluation stack as well. Member accesses,
# calls and indexers (C#'s primary operators) count too: each one is a compiled step.
_MAX_OPERATORS = 100
# Bounds the work and memory of compiling one expression at config load.
MAX_SOURCE_CHARS = 4096


def _context_root(ctx: RequestContext) -> Any:
    return ctx


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "end of expression"
    if token.kind == "string":
        return "a string literal"
    return f'"{token.text}"'


class Parser:
    """Parses `text[start:]` as one expression followed by the `)` that closes `@(`."""

    def __init__(self, text: str, start: int) -> None:
        self.text = text
        self.tokens = tokenize(text, start)
        self.index = 0
        self.depth = 0
        self.operators = 0

    def parse_wrapped(self) -> Node:
        node = self.expression()
        self.expect(")")
        trailing = self.peek
        if trailing.kind != "end":
            raise self.error(
                f"unexpected {_describe(trailing)} after the end of the expression", trailing.pos
            )
        return node

    # Token helpers

    @property
    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def accept(self, op: str) -> Token | None:
        token = self.peek
        if token.kind == "op" and token.text == op:
            return self.advance()
        return None

    def expect(self, op: str) -> Token:
        token = self.accept(op)
        if token is None:
            raise self.error(f'expected "{op}" but found {_describe(self.peek)}', self.peek.pos)
        return token

    def error(self, message: str, offset: int) -> ExpressionError:
        return ExpressionError(message, self.text, offset + 1)

    def count(self, at: Token) -> None:
        self.operators += 1
        if self.operators > _MAX_OPERATORS:
            raise self.error(f"expression has more than {_MAX_OPERATORS} operators", at.pos)

    def typed(self, at: Token, build: Callable[..., Node], *args: Any) -> Node:
        """Apply an operator builder, reporting type errors at the operator's position."""
        self.count(at)
        try:
            return build(*args)
        except TypeMismatch as exc:
            raise self.error(exc.message, at.pos) from None

    # Grammar, lowest precedence first

    def enter(self, at: Token) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error("expression is nested too deeply", at.pos)

    def expression(self) -> Node:
        self.enter(self.peek)
        condition = self.coalesce()
        question = self.accept("?")
        if question is not None:
            then = self.expression()
            self.expect(":")
            otherwise = self.expression()
            condition = self.typed(question, operators.conditional, condition, then, otherwise)
        self.depth -= 1
        return condition

    def coalesce(self) -> Node:
        left = self.binary(0)
        token = self.accept("??")
        if token is None:
            return left
        self.enter(token)
        right = self.coalesce()  # right-associative, as in C#
        self.depth -= 1
        return self.typed(token, operators.coalesce, left, right)

    def binary(self, level: int) -> Node:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek.kind == "op" and self.peek.text in _BINARY_LEVELS[level]:
            token = self.advance()
            right = self.binary(level + 1)
            left = self.typed(token, operators.binary, token.text, left, right)
        return left

    def unary(self) -> Node:
        token = self.accept("!")
        if token is not None:
            self.enter(token)
            operand = self.unary()
            self.depth -= 1
            return self.typed(token, operators.logical_not, operand)
        if self._at_cast():
            open_paren = self.advance()
            target = self.advance().text
            self.advance()
            self.enter(open_paren)
            operand = self.unary()
            self.depth -= 1
            return self.typed(open_paren, operators.cast, target, operand)
        return self.postfix()

    def _at_cast(self) -> bool:
        ahead = self.tokens[self.index : self.index + 3]
        return (
            len(ahead) == 3
            and ahead[0].kind == "op"
            and ahead[0].text == "("
            and ahead[1].kind == "ident"
            and ahead[1].text in CASTS
            and ahead[2].text == ")"
        )

    def postfix(self) -> Node:
        start = self.peek.pos
        node = self.primary()
        steps: list[Step] = []
        kind = node.type
        while self.peek.kind == "op" and self.peek.text in _POSTFIX:
            token = self.advance()
            self.count(token)
            # Offsets only: slicing the receiver's text per step made long chains quadratic.
            receiver = Span(self.text, start, token.pos)
            if token.text in (".", "?."):
                step, kind = resolve_member(self, kind, receiver, token)
            else:
                step, kind = resolve_index(self, kind, receiver, token)
            steps.append(step)
        return chain(node, steps, kind)

    def primary(self) -> Node:
        token = self.advance()
        if token.kind == "string":
            return operators.literal(token.value, STRING)
        if token.kind == "number":
            return operators.literal(token.value, NUMBER)
        if token.kind == "ident":
            if token.text in _KEYWORDS:
                return _KEYWORDS[token.text]
            if token.text == "context":
                return Node(_context_root, CONTEXT)
            raise self.error(
                f'unknown identifier "{token.text}"; expressions start with "context"', token.pos
            )
        if token.text == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        raise self.error(f"expected an expression but found {_describe(token)}", token.pos)


def parse(text: str, start: int) -> Node:
    """Compile `text[start:]`: one expression, its closing `)`, then nothing else."""
    if len(text) > MAX_SOURCE_CHARS:
        raise ExpressionError(f"expression is longer than {MAX_SOURCE_CHARS} characters", text, 1)
    return Parser(text, start).parse_wrapped()
