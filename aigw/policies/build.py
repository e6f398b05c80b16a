"""What a policy sees while it is being built: config-time helpers that record errors by path."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from aigw.config.errors import IssueCollector, format_loc
from aigw.expressions import ExpressionError, Value, compile_condition, compile_value
from aigw.policies.base import Policy
from aigw.policies.registry import known_names, lookup

BASE = "base"


class Resource(Protocol):
    """Something long-lived a policy needs (a key fetcher, a counter store): started with the
    runtime, closed with it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


R = TypeVar("R", bound=Resource)


@dataclass
class BuildContext:
    """Shared by every policy built from one config; `path` and `section` change per statement."""

    issues: IssueCollector
    backend_ids: frozenset[str]
    section: str = "inbound"
    path: str = ""
    services: Any = None
    # The whole config, for policies that need gateway-wide settings (counter store).
    settings: Any = None
    # One instance per key, shared by every policy that asks for it (e.g. one key fetcher
    # per discovery URL); the runtime starts and closes them.
    resources: dict[Hashable, Resource] = field(default_factory=dict)

    def shared(self, key: Hashable, create: Callable[[], R]) -> R:
        found = self.resources.get(key)
        if found is None:
            found = self.resources[key] = create()
        return found  # type: ignore[return-value]

    def error(self, message: str, suffix: str = "") -> None:
        self.issues.add(self.path + suffix, message)

    def value(self, text: str, suffix: str = "") -> Value:
        try:
            return compile_value(text)
        except ExpressionError as exc:
            self.error(str(exc), suffix)
            return compile_value("")

    def condition(self, text: str, suffix: str = "") -> Value:
        try:
            return compile_condition(text)
        except ExpressionError as exc:
            self.error(str(exc), suffix)
            return compile_condition("false")

    def statements(self, raw: Any, path: str, *, allow_base: bool = False) -> list[Policy | str]:
        """Build a list of policy statements; `base` markers are kept for scope composition."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.issues.add(path, "must be a list of policy statements")
            return []
        built: list[Policy | str] = []
        has_base = False
        for index, item in enumerate(raw):
            statement = self._statement(item, f"{path}[{index}]", allow_base)
            if statement == BASE:
                if has_base:
                    # Composition expands every `base`: a second one would run the parent twice.
                    self.issues.add(f"{path}[{index}]", "'base' may appear only once in a section")
                    continue
                has_base = True
            if statement is not None:
                built.append(statement)
        return built

    def nested(self, raw: Any, suffix: str) -> list[Policy]:
        """Statements nested inside a policy (choose branches); `base` is not allowed there."""
        saved = self.path
        items = self.statements(raw, saved + suffix)
        self.path = saved
        return [item for item in items if isinstance(item, Policy)]

    def _statement(self, item: Any, path: str, allow_base: bool) -> Policy | str | None:
        if item == BASE or (isinstance(item, dict) and list(item) == [BASE]):
            if not allow_base:
                self.issues.add(path, "'base' is only allowed directly in a scope's section")
                return None
            return BASE
        if not isinstance(item, dict) or len(item) != 1:
            self.issues.add(path, "a policy statement is a mapping with exactly one policy name")
            return None
        name, attributes = next(iter(item.items()))
        cls = lookup(str(name))
        if cls is None:
            known = ", ".join(known_names())
            self.issues.add(path, f"unknown policy '{name}' (known: {known})")
            return None
        if self.section not in cls.sections:
            self.issues.add(path, f"policy '{name}' is not allowed in section '{self.section}'")
            return None
        try:
            config = cls.config_model.model_validate(attributes or {})
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                self.issues.add(f"{path}.{name}{format_loc(err['loc'])}", err["msg"])
            return None
        if config.shadow and not cls.enforcing:
            self.issues.add(
                f"{path}.{name}.shadow",
                f"shadow mode applies only to policies that reject requests, not to '{name}'",
            )
            return None
        saved = self.path
        self.path = f"{path}.{name}"
        try:
            return cls(config, self)
        finally:
            self.path = saved
