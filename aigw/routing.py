"""Path and method → API, operation and matched parameters.

Templates are compiled to regular expressions once; a request tries the APIs whose prefix
matches, longest prefix first, and within an API its operations in declaration order. As in
APIM, the API prefix and the literal parts of a template match case-insensitively, while
parameter values keep the caller's case.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aigw.config.errors import IssueCollector
from aigw.context import ApiInfo, OperationInfo

# `{name}`, `{*name}` (the rest of the path) or a bare `*` (any remainder, not captured).
_TOKEN = re.compile(r"\{(\*?)([A-Za-z0-9_.-]+)\}|\*")
# Nothing, or `/` and anything after it (slashes and all).
_REMAINDER = r"(?:/|\Z)"
_NEVER = re.compile(r"(?!)")
# str.lower() folds two non-ASCII letters (KELVIN SIGN, dotted I) into ASCII; prefixes are ASCII.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


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
    template: str,
    segment: str = "[^/]+",
    *,
    issues: IssueCollector | None = None,
    path: str = "",
) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """`/items/{id}` → a regex with one group per parameter, each matching `segment`.

    A trailing `/*` matches any remainder (including none); a trailing `/{*rest}` captures it.
    An invalid template raises ValueError, or is reported to `issues` at `path` (the returned
    pattern then never matches).
    """
    try:
        return _compile(template, segment)
    except ValueError as exc:
        if issues is None:
            raise
        issues.add(path, str(exc))
        return _NEVER, ()


def _literal(text: str) -> str:
    # ASCII-only case folding: the template is ASCII, and a path must not match it through
    # Unicode look-alikes.
    return f"(?ai:{re.escape(text)})" if text else ""


def _compile(template: str, segment: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    names: list[str] = []
    pattern = ""
    position = 0
    for token in _TOKEN.finditer(template):
        literal = template[position : token.start()]
        position = token.end()
        wildcard, name = token.group(1), token.group(2)
        if name is not None and not wildcard:
            pattern += _literal(literal) + f"({segment})"
            names.append(name)
            continue
        if position != len(template) or not literal.endswith("/"):
            shown = f"{{*{name}}}" if name else "*"
            raise ValueError(
                f"wildcard '{shown}' in url-template '{template}' must be the whole last "
                f"segment, as in '/files/{shown}'"
            )
        pattern += _literal(literal[:-1]) + _REMAINDER
        if name is not None:
            pattern += "((?s:.*))"
            names.append(name)
        else:
            pattern += "(?s:.*)"
        return re.compile(pattern), tuple(names)
    pattern += _literal(template[position:])
    return re.compile(pattern + "/?"), tuple(names)


def _ascii_lower(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        by_prefix: dict[str, list[Route]] = {}
        for route in routes:
            by_prefix.setdefault(route.api.path.lower(), []).append(route)
        # Longest prefix first so '/openai/special' wins over '/openai'. Each entry holds the
        # lower-case head to compare ("" for the root) and the routes under it.
        self._prefixes = [
            (f"/{prefix}" if prefix else "", tuple(routes))
            for prefix, routes in sorted(by_prefix.items(), key=lambda item: -len(item[0]))
        ]
        self._head_length = max((len(head) for head, _ in self._prefixes), default=0)

    def match(self, method: str, path: str) -> RouteMatch | None:
        # Lower-case only the part of the path that a prefix can cover, once per request.
        head = _ascii_lower(path[: self._head_length]) if self._head_length else ""
        for prefix, routes in self._prefixes:
            if prefix:
                length = len(prefix)
                if not head.startswith(prefix) or (len(path) > length and path[length] != "/"):
                    continue
                suffix = path[length:]
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
