"""Member access, null-conditional access, indexers and method calls: the postfix chain.

A chain such as `context.Subscription?.Name.ToUpper()` compiles to a base evaluator plus a
tuple of steps. As in C#, a `?.` or `?[` that meets null makes the rest of the chain null,
while `.` or `[` on null fails with the receiver's text (never its value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from aigw.expressions.members import DYNAMIC, NULL, NUMBER, STRING, ExprType, Method, ParamKind
from aigw.expressions.operators import Evaluator, Node
from aigw.expressions.runtime import MISSING, EvaluationError

if TYPE_CHECKING:
    from aigw.context import RequestContext
    from aigw.expressions.lexer import Token
    from aigw.expressions.parser import Parser

Apply = Callable[[Any, "RequestContext"], Any]


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of the expression source kept as offsets; sliced only to word an error."""

    text: str
    start: int
    end: int

    def __str__(self) -> str:
        return self.text[self.start : self.end].strip()


class Step(NamedTuple):
    conditional: bool  # reached through ?. or ?[
    apply: Apply
    receiver: Span  # named in the failure when the receiver is null and the step is not ?. or ?[


def chain(base: Node, steps: list[Step], kind: ExprType) -> Node:
    if not steps:
        return base
    base_fn, frozen = base.fn, tuple(steps)

    def run(ctx: RequestContext) -> Any:
        value = base_fn(ctx)
        for conditional, apply, receiver in frozen:
            if value is None:
                if conditional:
                    return None
                raise EvaluationError(f"{receiver} is null")
            value = apply(value, ctx)
        return value

    return Node(run, kind)


def resolve_member(
    parser: Parser, receiver_type: ExprType, receiver: Span, dot: Token
) -> tuple[Step, ExprType]:
    name_token = parser.advance()
    if name_token.kind != "ident":
        raise parser.error(f'expected a member name after "{dot.text}"', name_token.pos)
    name = name_token.text
    if name in receiver_type.unsupported:
        raise parser.error(receiver_type.unsupported[name], name_token.pos)
    if parser.peek.text == "(" and parser.peek.kind == "op":
        method = receiver_type.methods.get(name)
        if method is None:
            raise parser.error(_unknown(receiver_type, name, receiver, "method"), name_token.pos)
        apply = _call(parser, method, name_token)
        kind, requires_str = method.result, method.requires_str
    else:
        prop = receiver_type.properties.get(name)
        if prop is None:
            raise parser.error(_unknown(receiver_type, name, receiver, "member"), name_token.pos)
        get = prop.get
        apply, kind, requires_str = (lambda value, ctx: get(value)), prop.type, prop.requires_str
    if receiver_type is DYNAMIC and requires_str:
        apply = _string_receiver(apply, receiver)
    return Step(dot.text == "?.", apply, receiver), kind


def _unknown(receiver_type: ExprType, name: str, receiver: Span, what: str) -> str:
    if what == "method" and name in receiver_type.properties:
        return f'"{name}" of {receiver_type.name} is a property, not a method'
    if what == "member" and name in receiver_type.methods:
        return f'method "{name}" of {receiver_type.name} must be called with "()"'
    if receiver_type is DYNAMIC:
        return f'unknown {what} "{name}" of {receiver}; a variable value allows only string members'
    return f'unknown {what} "{name}" of {receiver_type.name}'


def _string_receiver(apply: Apply, receiver: Span) -> Apply:
    def checked(value: Any, ctx: RequestContext) -> Any:
        if not isinstance(value, str):
            raise EvaluationError(f"{receiver} is not a string")
        return apply(value, ctx)

    return checked


def _call(parser: Parser, method: Method, name_token: Token) -> Apply:
    parser.expect("(")
    args: list[Evaluator] = []
    if parser.accept(")") is None:
        while True:
            start = parser.peek.pos
            arg = parser.expression()
            if len(args) < len(method.params):
                label = f"argument {len(args) + 1} of {name_token.text}"
                args.append(_argument(parser, method.params[len(args)], arg, label, start))
            else:
                args.append(arg.fn)
            if parser.accept(",") is None:
                break
        parser.expect(")")
    if not method.min_args <= len(args) <= len(method.params):
        raise parser.error(_arity(method, name_token.text, len(args)), name_token.pos)
    call = method.call
    if not args:
        return lambda value, ctx: call(value)
    if len(args) == 1:
        (first,) = args
        return lambda value, ctx: call(value, first(ctx))
    frozen = tuple(args)
    return lambda value, ctx: call(value, *[arg(ctx) for arg in frozen])


def _arity(method: Method, name: str, given: int) -> str:
    low, high = method.min_args, len(method.params)
    if high == 0:
        expected = "no arguments"
    elif low == high:
        expected = f"{high} argument" + ("s" if high > 1 else "")
    else:
        expected = f"{low} to {high} arguments" if high - low > 1 else f"{low} or {high} arguments"
    return f'method "{name}" takes {expected}, got {given}'


_PARAM_TYPES: dict[str, tuple[tuple[ExprType, ...], str]] = {
    "string": ((STRING, DYNAMIC), "a string"),
    "string?": ((STRING, DYNAMIC, NULL), "a string or null"),
    "int": ((NUMBER, DYNAMIC), "an integer"),
}


def _argument(parser: Parser, kind: ParamKind, arg: Node, label: str, start: int) -> Evaluator:
    """Check an argument's static type now and, unless it is a suitable literal, at runtime."""
    if kind == "any":
        if arg.type.kind == "object":
            raise parser.error(f"{label} must be a value, not {arg.type.name}", start)
        return arg.fn
    allowed, expected = _PARAM_TYPES[kind]
    if arg.type is NULL and kind == "string":
        raise parser.error(f"{label} must not be null", start)
    if arg.type not in allowed:
        raise parser.error(f"{label} must be {expected}, not {arg.type.name}", start)
    accepts = _ACCEPTS[kind]
    if arg.is_literal:
        if not accepts(arg.value):
            raise parser.error(f"{label} must be {expected}", start)
        return arg.fn
    fn, null_detail, type_detail = arg.fn, f"{label} is null", f"{label} is not {expected}"

    def checked(ctx: RequestContext) -> Any:
        value = fn(ctx)
        if accepts(value):
            return value
        raise EvaluationError(null_detail if value is None else type_detail)

    return checked


_ACCEPTS: dict[str, Callable[[Any], bool]] = {
    "string": lambda value: isinstance(value, str),
    "string?": lambda value: value is None or isinstance(value, str),
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
}


def resolve_index(
    parser: Parser, receiver_type: ExprType, receiver: Span, bracket: Token
) -> tuple[Step, ExprType]:
    indexer = receiver_type.indexer
    if indexer is None:
        raise parser.error(f"{receiver} cannot be indexed", bracket.pos)
    start = parser.peek.pos
    key = parser.expression()
    close = parser.expect("]")
    key_fn = _argument(parser, indexer.key, key, "the index", start)
    shown: str | Span
    if key.is_literal:
        shown = f'"{key.value}"' if isinstance(key.value, str) else str(key.value)
    else:
        shown = Span(parser.text, start, close.pos)  # the key's text, never its value
    missing, get = indexer.missing, indexer.get

    def apply(value: Any, ctx: RequestContext) -> Any:
        found = get(value, key_fn(ctx))
        if found is MISSING:
            key_text = shown if isinstance(shown, str) else f"({shown})"
            raise EvaluationError(missing.replace("{key}", key_text))
        return found

    return Step(bracket.text == "?[", apply, receiver), indexer.result
