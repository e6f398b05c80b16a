"""Path and method → API, operation and matched parameters.

Templates are compiled to regular expressions once; a request tries the APIs whose prefix
matches, longest prefix first, and within an API its operations in declaration order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aigw.context import ApiInfo, OperationInfo

_PARAM = re.compile(r"\{([A-Za-z0-9_.-]+)\}")


@dataclass(frozen=True, slots=True)
class Route:
    api: ApiInfo
    operation: OperationInfo
    method: str  # upper-case, or "*" for any
    pattern: re.Pattern[str]
    param_names: tuple[str, ...]
    json_body: bool
    # Opaque to the router: the runtime stores the compiled chain key and backend here.
    target: Any = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    params: dict[str, str]
    suffix: str


def compile_template(
    template: str, segment: str = "[^/]+"
) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """`/items/{id}` → a regex with one group per parameter, each matching `segment`."""
    names: list[str] = []
    pattern = ""
    position = 0
    for match in _PARAM.finditer(template):
        pattern += re.escape(template[position : match.start()]) + f"({segment})"
        names.append(match.group(1))
        position = match.end()
    pattern += re.escape(template[position:])
    return re.compile(pattern + "/?"), tuple(names)


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        by_prefix: dict[str, list[Route]] = {}
        for route in routes:
            by_prefix.setdefault(route.api.path, []).append(route)
        # Longest prefix first so '/openai/special' wins over '/openai'.
        self._prefixes = sorted(by_prefix.items(), key=lambda item: -len(item[0]))

    def match(self, method: str, path: str) -> RouteMatch | None:
        for prefix, routes in self._prefixes:
            if prefix:
                head = "/" + prefix
                if not path.startswith(head):
                    continue
                suffix = path[len(head) :]
                if suffix and suffix[0] != "/":
                    continue
            else:
                suffix = path
            for route in routes:
                if route.method != method and route.method != "*":
                    continue
                found = route.pattern.fullmatch(suffix)
                if found is not None:
                    params = dict(zip(route.param_names, found.groups(), strict=True))
                    return RouteMatch(route, params, suffix)
        return None

    def routes(self) -> list[Route]:
        return [route for _, routes in self._prefixes for route in routes]
