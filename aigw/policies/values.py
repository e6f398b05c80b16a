"""Helpers shared by the policies that take names and values (set-header, set-query-parameter,
set-variable, return-response …): evaluation to text, config shapes, and safe printing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aigw.config.model import kebab
from aigw.context import RequestContext
from aigw.errors import ExpressionEvaluationFailure
from aigw.expressions.runtime import EvaluationError, to_string

if TYPE_CHECKING:
    from aigw.expressions import Value
    from aigw.policies.build import BuildContext

ExistsAction = Literal["override", "skip", "append", "delete"]


def constant_text(value: Value) -> str | None:
    """The literal text of a value that is not an expression."""
    return value.source if value.is_constant else None


def as_text(result: object, value: Value) -> str | None:
    """An evaluated value as text, converted as the expression language does; null stays None."""
    if result is None or isinstance(result, str):
        return result
    try:
        return to_string(result)
    except EvaluationError as exc:
        raise ExpressionEvaluationFailure(
            f"Expression {value.source} failed: {exc.detail}"
        ) from None


def text_of(value: Value, ctx: RequestContext) -> str | None:
    return as_text(value.evaluate(ctx), value)


def texts(values: Sequence[Value], ctx: RequestContext) -> list[str]:
    """Evaluated values, null ones left out."""
    return [text for value in values if (text := text_of(value, ctx)) is not None]


def show_value(value: Value, secret: bool = False) -> str:
    """For `describe()`: an expression's source, a literal only when short and not secret."""
    if not value.is_constant:
        return value.source
    if secret or len(value.source) > 24:
        return f"<{len(value.source)} chars>"
    return repr(value.source)


def one_or_many(raw: Any) -> Any:
    """Lets a config say `value: x` for `value: [x]`."""
    return [raw] if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else raw


class NamedValues(BaseModel):
    """`name` + `exists-action` + `value`: set-header, set-query-parameter, return-response."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=kebab,
        populate_by_name=True,
        frozen=True,
        coerce_numbers_to_str=True,
    )

    name: str = Field(min_length=1)
    exists_action: ExistsAction = "override"
    value: list[str] = []

    _one_or_many = field_validator("value", mode="before")(one_or_many)

    def compile_values(self, build: BuildContext, prefix: str = "") -> tuple[Value, ...]:
        if self.exists_action == "delete":
            if self.value:
                build.error("exists-action 'delete' takes no value", f"{prefix}.value")
            return ()
        if not self.value:
            build.error("at least one value is required", f"{prefix}.value")
        return tuple(build.value(v, f"{prefix}.value[{i}]") for i, v in enumerate(self.value))


_SENSITIVE_PARTS = ("authorization", "key", "token", "secret", "password", "cookie", "signature")


def is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SENSITIVE_PARTS)
