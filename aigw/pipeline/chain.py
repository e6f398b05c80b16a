"""Scope composition: global → product → API → operation, with `base` as the insertion point."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aigw.policies.base import SECTIONS, Policy
from aigw.policies.build import BASE

# A scope's built statements per section; None means the section was not declared, which
# behaves like a section holding only `base`.
ScopeStatements = Mapping[str, Sequence[Policy | str] | None]


@dataclass(frozen=True, slots=True)
class Chain:
    """The effective statements of one operation (in one product context), per section."""

    inbound: tuple[Policy, ...] = ()
    backend: tuple[Policy, ...] = ()
    outbound: tuple[Policy, ...] = ()
    on_error: tuple[Policy, ...] = ()

    def section(self, name: str) -> tuple[Policy, ...]:
        return getattr(self, name.replace("-", "_"))  # type: ignore[no-any-return]


def compose(scopes: Sequence[ScopeStatements]) -> Chain:
    """`scopes` go from broadest (global) to narrowest (operation)."""
    sections: dict[str, tuple[Policy, ...]] = {}
    for section in SECTIONS:
        inherited: list[Policy] = []
        for scope in scopes:
            statements = scope.get(section)
            if statements is None:
                continue  # not declared: inherit unchanged
            own: list[Policy] = []
            for statement in statements:
                if statement == BASE:
                    own.extend(inherited)
                elif isinstance(statement, Policy):
                    own.append(statement)
            inherited = own
        sections[section.replace("-", "_")] = tuple(inherited)
    return Chain(**sections)
