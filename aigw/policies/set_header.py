"""`set-header`: add, replace, append to or delete a header.

In inbound/backend it edits the request sent to the backend; in outbound/on-error the response
sent to the client, as in APIM. `HeaderEdit` is also used by `return-response` for its headers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aigw.context import RequestContext, Response
from aigw.errors import ExpressionEvaluationFailure
from aigw.headers import FRAMING, Headers
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

# Values of these may contain commas or dates, so APIM emits one line per value.
SEPARATE_LINES = frozenset(
    {
        "user-agent",
        "www-authenticate",
        "proxy-authenticate",
        "cookie",
        "set-cookie",
        "warning",
        "date",
        "expires",
        "if-modified-since",
        "if-unmodified-since",
        "last-modified",
        "retry-after",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Anything that could split a header line, or change bytes on the way (non-ASCII).
_BAD_VALUE = re.compile(r"[^\t\x20-\x7e]")


def name_problem(name: str) -> str | None:
    if not _TOKEN.fullmatch(name):
        return f"'{name}' is not a valid header name"
    if name.lower() in FRAMING:
        return f"header '{name}' is managed by the server and cannot be set or deleted"
    return None


def value_problem(value: str) -> str | None:
    return (
        "header value contains a line break, a control character or non-ASCII text"
        if _BAD_VALUE.search(value)
        else None
    )


class SetHeaderConfig(PolicyConfig, NamedValues):
    pass


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    name: Value
    fixed_name: str | None  # lower-cased, when the name is a literal
    action: ExistsAction
    values: tuple[Value, ...]
    # The values' text when none is an expression: checked once at build, not per request.
    constant_values: list[str] | None = None

    @classmethod
    def build(cls, config: NamedValues, build: BuildContext, prefix: str = "") -> HeaderEdit:
        name = build.value(config.name, f"{prefix}.name")
        fixed = constant_text(name)
        if fixed is not None and (problem := name_problem(fixed)):
            build.error(problem, f"{prefix}.name")
        values = config.compile_values(build, prefix)
        for index, value in enumerate(values):
            text = constant_text(value)
            if text is not None and (problem := value_problem(text)):
                build.error(problem, f"{prefix}.value[{index}]")
        fixed = fixed.lower() if fixed is not None else None
        texts_ = [constant_text(value) for value in values]
        constant = [t for t in texts_ if t is not None] if None not in texts_ else None
        return cls(name, fixed, config.exists_action, values, constant)

    def apply(self, ctx: RequestContext, headers: Headers) -> None:
        name = self.fixed_name or self._evaluate_name(ctx)
        if self.action == "delete":
            headers.delete(name)
            return
        if self.action == "skip" and name in headers:
            return
        if self.constant_values is not None:
            values = list(self.constant_values)
        else:
            values = texts(self.values, ctx)
        if self.constant_values is None and any(_BAD_VALUE.search(v) for v in values):
            # The message names the header, never the offending runtime value.
            raise ExpressionEvaluationFailure(
                f"set-header {name}: a value contains a line break, a control character "
                "or non-ASCII text"
            )
        if self.action == "append":
            if not values:
                return
            values = headers.get_all(name) + values
        # An override whose values are all null removes the header, so a caller-sent value
        # never survives a policy that meant to replace it.
        headers.delete(name)
        if values:
            for line in values if name in SEPARATE_LINES else [", ".join(values)]:
                headers.add(name, line)

    def _evaluate_name(self, ctx: RequestContext) -> str:
        name = self.name.evaluate(ctx)
        if not isinstance(name, str) or name_problem(name):
            raise ExpressionEvaluationFailure(
                f"set-header: {self.name.source} did not produce a header name that may be set"
            )
        return name.lower()

    def describe(self) -> str:
        name = self.fixed_name or self.name.source
        if self.action == "delete":
            return f"{name} delete"
        secret = is_sensitive(name)
        shown = ", ".join(show_value(value, secret) for value in self.values)
        return f"{name} {self.action} = [{shown}]"


@register("set-header")
class SetHeader(Policy):
    config_model = SetHeaderConfig

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, SetHeaderConfig)
        super().__init__(config, build)
        self.edit = HeaderEdit.build(config, build)
        self.edits_response = build.section in ("outbound", "on-error")

    async def apply(self, ctx: RequestContext) -> Response | None:
        if not self.edits_response:
            self.edit.apply(ctx, ctx.request.headers)
        elif ctx.response is not None:  # on-error before any response exists
            self.edit.apply(ctx, ctx.response.headers)
        return None

    def describe(self) -> str:
        return f"{super().describe()} {self.edit.describe()}"


def build_edits(
    items: Sequence[NamedValues], build: BuildContext, prefix: str
) -> tuple[HeaderEdit, ...]:
    """Header edits listed inside another policy (`return-response`)."""
    return tuple(HeaderEdit.build(item, build, f"{prefix}[{i}]") for i, item in enumerate(items))
