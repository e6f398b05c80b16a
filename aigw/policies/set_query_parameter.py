"""`set-query-parameter`: add, replace, append to or delete a query parameter sent upstream.

Several values give repeated parameters (`?a=1&a=2`). Values are kept decoded; the backend
encodes the query when it builds the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aigw.context import RequestContext, Response
from aigw.errors import ExpressionEvaluationFailure
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register
from aigw.policies.values import (
    ExistsAction,
    NamedValues,
    constant_text,
    is_sensitive,
    show_value,
    texts,
)

if TYPE_CHECKING:
    from aigw.expressions import Value
    from aigw.policies.build import BuildContext


class SetQueryParameterConfig(PolicyConfig, NamedValues):
    pass


@dataclass(frozen=True, slots=True)
class QueryEdit:
    name: Value
    fixed_name: str | None
    action: ExistsAction
    values: tuple[Value, ...]

    def apply(self, ctx: RequestContext) -> None:
        name = self.fixed_name if self.fixed_name is not None else self._evaluate_name(ctx)
        query = ctx.request.query
        present = any(key == name for key, _ in query)
        if self.action == "delete" or (self.action == "override" and present):
            new = [] if self.action == "delete" else texts(self.values, ctx)
            ctx.request.query = _replace(query, name, new)
        elif not (self.action == "skip" and present):
            query.extend((name, value) for value in texts(self.values, ctx))

    def _evaluate_name(self, ctx: RequestContext) -> str:
        name = self.name.evaluate(ctx)
        if not isinstance(name, str) or not name:
            raise ExpressionEvaluationFailure(
                f"set-query-parameter: {self.name.source} did not produce a parameter name"
            )
        return name


def _replace(query: list[tuple[str, str]], name: str, values: list[str]) -> list[tuple[str, str]]:
    """Put `values` where `name` first appeared and drop its other occurrences."""
    result: list[tuple[str, str]] = []
    inserted = False
    for key, value in query:
        if key != name:
            result.append((key, value))
        elif not inserted:
            result.extend((name, new) for new in values)
            inserted = True
    return result


@register("set-query-parameter")
class SetQueryParameter(Policy):
    config_model = SetQueryParameterConfig
    sections = frozenset({"inbound", "backend"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, SetQueryParameterConfig)
        super().__init__(config, build)
        name = build.value(config.name, ".name")
        values = config.compile_values(build)
        self.edit = QueryEdit(name, constant_text(name), config.exists_action, values)

    async def apply(self, ctx: RequestContext) -> Response | None:
        self.edit.apply(ctx)
        return None

    def describe(self) -> str:
        edit = self.edit
        name = edit.fixed_name if edit.fixed_name is not None else edit.name.source
        if edit.action == "delete":
            return f"{super().describe()} {name} delete"
        shown = ", ".join(show_value(value, is_sensitive(name)) for value in edit.values)
        return f"{super().describe()} {name} {edit.action} = [{shown}]"
