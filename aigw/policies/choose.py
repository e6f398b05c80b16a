"""`choose`: run the statements of the first `when` whose condition holds, else `otherwise`.

Branch statements inherit the enclosing section and run through `run_statements`, so a
response returned inside a branch ends the section just as it would outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from aigw.config.model import kebab
from aigw.context import RequestContext, Response
from aigw.policies.base import Policy, PolicyConfig, run_statements
from aigw.policies.registry import register

if TYPE_CHECKING:
    from aigw.expressions import Value
    from aigw.policies.build import BuildContext


class WhenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=kebab, frozen=True)

    condition: str
    policies: list[Any] = []


class ChooseConfig(PolicyConfig):
    when: list[WhenConfig] = Field(min_length=1)
    otherwise: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    condition: Value
    statements: tuple[Policy, ...]


@register("choose")
class Choose(Policy):
    config_model = ChooseConfig

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, ChooseConfig)
        super().__init__(config, build)
        self.branches = tuple(
            Branch(
                build.condition(when.condition, f".when[{index}].condition"),
                tuple(build.nested(when.policies, f".when[{index}].policies")),
            )
            for index, when in enumerate(config.when)
        )
        self.otherwise = tuple(build.nested(config.otherwise, ".otherwise"))

    async def apply(self, ctx: RequestContext) -> Response | None:
        for branch in self.branches:
            if branch.condition.evaluate(ctx):
                return await run_statements(branch.statements, ctx)
        return await run_statements(self.otherwise, ctx)

    def describe(self) -> str:
        otherwise = " + otherwise" if self.otherwise else ""
        return f"{super().describe()} ({len(self.branches)} when{otherwise})"

    def children(self) -> Sequence[tuple[str, Sequence[Policy]]]:
        labelled: list[tuple[str, Sequence[Policy]]] = [
            (f"when {branch.condition.source}", branch.statements) for branch in self.branches
        ]
        if self.otherwise:
            labelled.append(("otherwise", self.otherwise))
        return labelled
