"""Compiled nodes and the operators that combine them, type-checked when the expression loads.

Builders raise `TypeMismatch` for operand types C# would reject; the parser adds the position.
Nullable results (from `?.`) are handled at runtime with C#'s lifted semantics: a comparison
with null is false, numeric `+` with null is null, and `!`/`&&`/`||` reject null.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aigw.expressions.members import BOOL, DYNAMIC, NULL, NUMBER, STRING, ExprType
from aigw.expressions.runtime import (
    EvaluationError,
    concat,
    is_number,
    require_bool,
    values_equal,
)

if TYPE_CHECKING:
    from aigw.context import RequestContext

Evaluator = Callable[["RequestContext"], Any]


class TypeMismatch(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Node:
    fn: Evaluator
    type: ExprType
    is_literal: bool = False
    value: object = None  # the literal's value when is_literal


def literal(value: object, kind: ExprType) -> Node:
    return Node(lambda ctx: value, kind, is_literal=True, value=value)


def _require_type(node: Node, allowed: tuple[ExprType, ...], what: str, expected: str) -> None:
    if node.type not in allowed:
        raise TypeMismatch(f"{what} must be {expected}, not {node.type.name}")


def logical_not(operand: Node) -> Node:
    _require_type(operand, (BOOL, DYNAMIC), 'the operand of "!"', "a boolean")
    fn = operand.fn
    return Node(lambda ctx: not require_bool(fn(ctx), 'the operand of "!"'), BOOL)


def binary(op: str, left: Node, right: Node) -> Node:
    if op in ("&&", "||"):
        return _logical(op, left, right)
    if op in ("==", "!="):
        return _equality(op, left, right)
    if op == "+":
        return _add(left, right)
    return _relational(op, left, right)


def _logical(op: str, left: Node, right: Node) -> Node:
    what = f'an operand of "{op}"'
    _require_type(left, (BOOL, DYNAMIC), what, "a boolean")
    _require_type(right, (BOOL, DYNAMIC), what, "a boolean")
    lf, rf = left.fn, right.fn
    if op == "&&":
        return Node(lambda ctx: require_bool(lf(ctx), what) and require_bool(rf(ctx), what), BOOL)
    return Node(lambda ctx: require_bool(lf(ctx), what) or require_bool(rf(ctx), what), BOOL)


def _equality(op: str, left: Node, right: Node) -> Node:
    lt, rt = left.type, right.type
    comparable = NULL in (lt, rt) or DYNAMIC in (lt, rt) or (lt is rt and lt.kind == "scalar")
    if not comparable:
        raise TypeMismatch(f'operator "{op}" cannot compare {lt.name} with {rt.name}')
    fn = _equality_fn(lt, rt, left.fn, right.fn)
    if op == "!=":
        return Node(lambda ctx: not fn(ctx), BOOL)
    return Node(fn, BOOL)


def _equality_fn(lt: ExprType, rt: ExprType, lf: Evaluator, rf: Evaluator) -> Evaluator:
    if rt is NULL:
        return lambda ctx: lf(ctx) is None
    if lt is NULL:
        return lambda ctx: rf(ctx) is None
    if lt is rt and lt in (STRING, NUMBER, BOOL):
        # Same static type: Python's == is ordinal for str and numeric for int/float.
        return lambda ctx: bool(lf(ctx) == rf(ctx))
    return lambda ctx: values_equal(lf(ctx), rf(ctx))


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _relational(op: str, left: Node, right: Node) -> Node:
    what = f'an operand of "{op}"'
    _require_type(left, (NUMBER, DYNAMIC), what, "a number")
    _require_type(right, (NUMBER, DYNAMIC), what, "a number")
    lf, rf, compare = left.fn, right.fn, _COMPARISONS[op]
    detail = f'operator "{op}" requires numbers'

    def run(ctx: RequestContext) -> bool:
        a, b = lf(ctx), rf(ctx)
        if a is None or b is None:
            return False
        if not (is_number(a) and is_number(b)):
            raise EvaluationError(detail)
        return compare(a, b)

    return Node(run, BOOL)


def _add(left: Node, right: Node) -> Node:
    lt, rt = left.type, right.type
    lf, rf = left.fn, right.fn
    if STRING in (lt, rt):
        if lt.kind != "scalar" or rt.kind != "scalar":
            raise TypeMismatch(f'operator "+" cannot be applied to {lt.name} and {rt.name}')
        return Node(lambda ctx: concat(lf(ctx), rf(ctx)), STRING)
    numeric = (NUMBER, DYNAMIC, NULL)
    if lt not in numeric or rt not in numeric:
        raise TypeMismatch(f'operator "+" cannot be applied to {lt.name} and {rt.name}')
    kind = NUMBER if lt is NUMBER and rt is NUMBER else DYNAMIC
    return Node(lambda ctx: dynamic_add(lf(ctx), rf(ctx)), kind)


def dynamic_add(a: Any, b: Any) -> Any:
    if isinstance(a, str) or isinstance(b, str):
        return concat(a, b)
    if a is None or b is None:
        return None
    if is_number(a) and is_number(b):
        return a + b
    raise EvaluationError(
        f'operator "+" cannot be applied to {type(a).__name__} and {type(b).__name__}'
    )


def _merge(op: str, first: ExprType, second: ExprType) -> ExprType:
    """The static type of `a ?? b` or `c ? a : b`."""
    if first is second or second is NULL:
        return first
    if first is NULL:
        return second
    if first.kind == "scalar" and second.kind == "scalar":
        return DYNAMIC
    raise TypeMismatch(
        f'the operands of "{op}" have incompatible types {first.name} and {second.name}'
    )


def coalesce(left: Node, right: Node) -> Node:
    kind = _merge("??", left.type, right.type)
    lf, rf = left.fn, right.fn

    def run(ctx: RequestContext) -> Any:
        value = lf(ctx)
        return rf(ctx) if value is None else value

    return Node(run, kind)


def conditional(condition: Node, then: Node, otherwise: Node) -> Node:
    what = 'the condition of "?:"'
    _require_type(condition, (BOOL, DYNAMIC), what, "a boolean")
    kind = _merge("?:", then.type, otherwise.type)
    cf, tf, of = condition.fn, then.fn, otherwise.fn
    return Node(lambda ctx: tf(ctx) if require_bool(cf(ctx), what) else of(ctx), kind)


def _cast_converter(target: str) -> Callable[[Any], Any]:
    def to_int(value: Any) -> Any:
        # An explicit numeric cast truncates toward zero, as C#'s (int)double does.
        return math.trunc(value) if isinstance(value, float) and math.isfinite(value) else value

    converters: dict[str, Callable[[Any], Any]] = {
        "string": lambda value: value,
        "bool": lambda value: value,
        "int": to_int,
        "long": to_int,
        "double": float,
    }
    return converters[target]


# C# cast target → (result type, accepted static source types, runtime check).
CASTS: dict[str, tuple[ExprType, tuple[ExprType, ...], Callable[[Any], bool]]] = {
    "string": (STRING, (STRING, DYNAMIC, NULL), lambda v: v is None or isinstance(v, str)),
    "bool": (BOOL, (BOOL, DYNAMIC), lambda v: isinstance(v, bool)),
    "int": (NUMBER, (NUMBER, DYNAMIC), lambda v: is_number(v) and math.isfinite(v)),
    "long": (NUMBER, (NUMBER, DYNAMIC), lambda v: is_number(v) and math.isfinite(v)),
    "double": (NUMBER, (NUMBER, DYNAMIC), is_number),
}


def cast(target: str, operand: Node) -> Node:
    kind, sources, accepts = CASTS[target]
    if operand.type not in sources:
        raise TypeMismatch(f"cannot cast {operand.type.name} to {target}")
    fn, convert = operand.fn, _cast_converter(target)
    null_detail = f"cannot cast null to {target}"
    type_detail = f"cannot cast the value to {target}"

    def run(ctx: RequestContext) -> Any:
        value = fn(ctx)
        if accepts(value):
            return convert(value)
        raise EvaluationError(null_detail if value is None else type_detail)

    return Node(run, kind)
