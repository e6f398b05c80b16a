"""`rewrite-uri`: rewrite the path (and query) forwarded to the backend.

`{name}` in the path is filled from the operation's matched parameters, percent-encoded so a
value can never add a segment or a `..`; `{*name}` keeps the value's slashes. In the `?query`
part a placeholder is filled from the matched parameters, else from the original query.
Placeholders with no value: empty in the path, and the query parameter is left out (APIM rejects
such templates when saved; we cannot, as a template may serve several operations).
With `copy-unmatched-params` (default true), original query parameters that neither the template
nor the operation's URL template name are kept, as in APIM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_plus

from aigw.context import RequestContext, Response
from aigw.errors import ExpressionEvaluationFailure
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register
from aigw.policies.values import constant_text

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

_PLACEHOLDER = re.compile(r"\{(\*?)([A-Za-z0-9_.\-]+)\}")
_PATH_TEXT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    wildcard: bool = False


Parts = tuple[str | Param, ...]


@dataclass(frozen=True, slots=True)
class UriTemplate:
    path: Parts
    query: tuple[tuple[str, Parts], ...]
    names: frozenset[str]  # query keys and query placeholders: not copied from the original


def _parts(text: str, what: str) -> Parts:
    parts: list[str | Param] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[pos : match.start()])
        parts.append(Param(match.group(2), bool(match.group(1))))
        pos = match.end()
    parts.append(text[pos:])
    if any(isinstance(p, str) and ("{" in p or "}" in p) for p in parts):
        raise ValueError(f"unbalanced or invalid {{placeholder}} in the {what}")
    return tuple(p for p in parts if p != "")


def parse_template(text: str) -> UriTemplate:
    path, _, query = text.partition("?")
    if not path.startswith("/"):
        raise ValueError("the template must start with '/'")
    if "#" in text:
        raise ValueError("the template cannot contain a fragment ('#')")
    path_parts = _parts(path, "path")
    if not all(_PATH_TEXT.fullmatch(p) for p in path_parts if isinstance(p, str)):
        raise ValueError("the template path contains characters that must be percent-encoded")
    pairs: list[tuple[str, Parts]] = []
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        parts = tuple(
            p if isinstance(p, Param) else unquote_plus(p) for p in _parts(value, "query")
        )
        pairs.append((unquote_plus(key), parts))
    names = {key for key, _ in pairs}
    names.update(p.name for _, parts in pairs for p in parts if isinstance(p, Param))
    return UriTemplate(path_parts, tuple(pairs), frozenset(names))


def _encode(value: str, wildcard: bool) -> str:
    segments = value.split("/") if wildcard else [value]
    # `.` and `..` would be resolved as dot-segments by the backend; encode them.
    return "/".join(
        s.replace(".", "%2E") if s in (".", "..") else quote(s, safe=_SEGMENT_SAFE)
        for s in segments
    )


def _operation_query_keys(url_template: str) -> set[str]:
    query = url_template.partition("?")[2]
    return {unquote_plus(item.partition("=")[0]) for item in query.split("&") if item}


def _lookup(ctx: RequestContext, name: str) -> str | None:
    value = ctx.request.matched_parameters.get(name)
    return value if value is not None else ctx.request.query_value(name)


def render(template: UriTemplate, ctx: RequestContext, copy_unmatched: bool) -> None:
    request = ctx.request
    params = request.matched_parameters
    request.backend_path = "".join(
        p if isinstance(p, str) else _encode(params.get(p.name, ""), p.wildcard)
        for p in template.path
    )
    query: list[tuple[str, str]] = []
    for key, parts in template.query:
        values = [p if isinstance(p, str) else _lookup(ctx, p.name) for p in parts]
        if None not in values:
            query.append((key, "".join(v for v in values if v is not None)))
    if copy_unmatched:
        skip = template.names | _operation_query_keys(ctx.operation.url_template)
        query.extend((key, value) for key, value in request.query if key not in skip)
    request.query = query


class RewriteUriConfig(PolicyConfig):
    template: str
    copy_unmatched_params: bool = True


@register("rewrite-uri")
class RewriteUri(Policy):
    config_model = RewriteUriConfig
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, RewriteUriConfig)
        super().__init__(config, build)
        self.copy_unmatched = config.copy_unmatched_params
        self.source = build.value(config.template, ".template")
        self.template: UriTemplate | None = None
        text = constant_text(self.source)
        if text is not None:
            try:
                self.template = parse_template(text)
            except ValueError as exc:
                build.error(str(exc), ".template")

    async def apply(self, ctx: RequestContext) -> Response | None:
        template = self.template
        if template is None:  # an expression: parse what it produced
            text = self.source.evaluate(ctx)
            try:
                template = parse_template(text if isinstance(text, str) else "")
            except ValueError as exc:
                raise ExpressionEvaluationFailure(f"rewrite-uri: {exc}") from None
        render(template, ctx, self.copy_unmatched)
        return None

    def describe(self) -> str:
        copy = "" if self.copy_unmatched else " (unmatched params dropped)"
        return f"{super().describe()} {self.source.source}{copy}"
