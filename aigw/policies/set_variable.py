"""`set-variable`: store a value in `ctx.variables` for later policies and expressions.

An expression keeps its type (a number stays a number); literal text stays a string.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, field_validator

from aigw.context import RequestContext, Response
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register
from aigw.policies.values import is_sensitive, show_value

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext


class SetVariableConfig(PolicyConfig):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    name: str = Field(min_length=1)
    value: str

    @field_validator("value", mode="before")
    @classmethod
    def _bool_as_text(cls, raw: Any) -> Any:
        # YAML turns `value: true` into a bool; APIM would have the string "true".
        return ("true" if raw else "false") if isinstance(raw, bool) else raw


@register("set-variable")
class SetVariable(Policy):
    config_model = SetVariableConfig

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, SetVariableConfig)
        super().__init__(config, build)
        self.variable = config.name
        self.value = build.value(config.value, ".value")

    async def apply(self, ctx: RequestContext) -> Response | None:
        ctx.variables[self.variable] = self.value.evaluate(ctx)
        return None

    def describe(self) -> str:
        shown = show_value(self.value, is_sensitive(self.variable))
        return f"{super().describe()} {self.variable} = {shown}"
