"""Config values that may be policy expressions: `compile_value` and `compile_condition`.

A value is either literal text, returned as is, or exactly one `@( ... )` expression compiled
once at load time. `@{ ... }` statement blocks are rejected; nothing is ever `eval`-ed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aigw.errors import ExpressionEvaluationFailure
from aigw.expressions.lexer import ExpressionError
from aigw.expressions.members import BOOL, DYNAMIC
from aigw.expressions.parser import parse
from aigw.expressions.runtime import EvaluationError, require_bool

if TYPE_CHECKING:
    from aigw.context import RequestContext
    from aigw.expressions.operators import Evaluator, Node

# Python errors a compiled expression could still hit on unexpected context data; reported by
# type only, since their text may quote a value.
_UNEXPECTED = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)
CLIENT_MESSAGE = "Policy expression could not be evaluated"


def evaluation_failure(source: str, detail: str) -> ExpressionEvaluationFailure:
    """The client sees only the generic message: named values are substituted into the source
    before it is compiled, so the source (and a detail quoting it) may contain a secret."""
    failure = ExpressionEvaluationFailure(CLIENT_MESSAGE)
    failure.detail = f"Expression {source} failed: {detail}"
    return failure


class Value:
    """A compiled config value: constant text or an expression evaluated per request."""

    __slots__ = ("_fn", "is_constant", "source")

    def __init__(self, source: str, fn: Evaluator, *, is_constant: bool) -> None:
        self.source = source
        self.is_constant = is_constant
        self._fn = fn

    def evaluate(self, ctx: RequestContext) -> Any:
        try:
            return self._fn(ctx)
        except EvaluationError as exc:
            detail = exc.detail
        except _UNEXPECTED as exc:
            detail = f"unexpected {type(exc).__name__}"
        raise evaluation_failure(self.source, detail)

    def __repr__(self) -> str:
        return f"Value({self.source!r})"


def _constant(source: str, value: object) -> Value:
    return Value(source, lambda ctx: value, is_constant=True)


def _expression(text: str) -> Node | None:
    """The compiled expression if `text` is one, None if it is literal text."""
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    if stripped.startswith("@{"):
        raise ExpressionError(
            "multi-statement expressions @{...} are not supported", text, offset + 1
        )
    if not stripped.startswith("@("):
        return None
    return parse(text, offset + 2)


def _start(text: str) -> int:
    """1-based position of the first character inside `@(`."""
    return len(text) - len(text.lstrip()) + 3


def compile_value(text: str) -> Value:
    """Compile literal text (a constant) or one whole `@( ... )` expression."""
    node = _expression(text)
    if node is None:
        return _constant(text, text)
    if node.type.kind == "object":
        raise ExpressionError(
            f"an expression must produce a value, not {node.type.name}", text, _start(text)
        )
    return Value(text, node.fn, is_constant=False)


def compile_condition(text: str) -> Value:
    """Compile `true`, `false` or a boolean `@( ... )` expression."""
    word = text.strip().lower()
    if word in ("true", "false"):
        return _constant(text, word == "true")
    node = _expression(text)
    if node is None:
        raise ExpressionError(
            'a condition must be "true", "false" or an expression @(...)',
            text,
            len(text) - len(text.lstrip()) + 1,
        )
    if node.type is not BOOL and node.type is not DYNAMIC:
        raise ExpressionError(
            f"a condition must be a boolean expression, not {node.type.name}", text, _start(text)
        )
    fn = node.fn
    return Value(text, lambda ctx: require_bool(fn(ctx), "the condition"), is_constant=False)
