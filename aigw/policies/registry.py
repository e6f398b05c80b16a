"""Policies register here by their APIM-style name; the builder looks them up by name.

The registry is filled at import time by `aigw.policies.builtin` and never changes after.
"""

from __future__ import annotations

from collections.abc import Callable

from aigw.policies.base import Policy

_POLICIES: dict[str, type[Policy]] = {}


def register(name: str) -> Callable[[type[Policy]], type[Policy]]:
    def decorate(cls: type[Policy]) -> type[Policy]:
        if name in _POLICIES:
            raise RuntimeError(f"policy {name!r} is registered twice")
        cls.name = name
        _POLICIES[name] = cls
        return cls

    return decorate


def lookup(name: str) -> type[Policy] | None:
    return _POLICIES.get(name)


def known_names() -> list[str]:
    return sorted(_POLICIES)
