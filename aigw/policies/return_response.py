"""`return-response`: answer the caller from the gateway, ending the pipeline.

Headers use the same logic as `set-header`, applied to an empty header list. HTTP/1.1 reason
phrases cannot be chosen through ASGI, so `set-status.reason` is accepted for APIM
compatibility but not sent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from aigw.config.model import kebab
from aigw.context import RequestContext, Response
from aigw.headers import Headers
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register
from aigw.policies.set_header import build_edits
from aigw.policies.values import NamedValues, as_text, constant_text, show_value

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

# Statuses that never carry a body (RFC 9110 §6.4.1).
_NO_BODY = frozenset({204, 205, 304})


class SetStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=kebab, frozen=True)

    code: int = Field(default=200, ge=200, le=599)
    reason: str | None = None


class ReturnResponseConfig(PolicyConfig):
    set_status: SetStatus = SetStatus()
    set_header: list[NamedValues] = []
    # A YAML mapping or list is sent as JSON text, so a fixed JSON error body reads naturally.
    set_body: str | dict[str, Any] | list[Any] | None = None


@register("return-response")
class ReturnResponse(Policy):
    config_model = ReturnResponseConfig

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, ReturnResponseConfig)
        super().__init__(config, build)
        self.status_code = config.set_status.code
        self.headers = build_edits(config.set_header, build, ".set-header")
        raw = config.set_body
        if raw is not None and not isinstance(raw, str):
            raw = json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
        self.body = None if raw is None else build.value(raw, ".set-body")
        fixed = None if self.body is None else constant_text(self.body)
        self.fixed_body = None if fixed is None else fixed.encode()
        if fixed and self.status_code in _NO_BODY:
            build.error(f"a {self.status_code} response cannot have a body", ".set-body")

    async def apply(self, ctx: RequestContext) -> Response | None:
        headers = Headers()
        for edit in self.headers:
            edit.apply(ctx, headers)
        return Response(self.status_code, headers, self._body(ctx))

    def _body(self, ctx: RequestContext) -> bytes:
        if self.body is None or self.status_code in _NO_BODY:
            return b""
        if self.fixed_body is not None:
            return self.fixed_body
        result = self.body.evaluate(ctx)
        if isinstance(result, (dict, list)):
            # A JSON object or array (from a variable) is written back as JSON.
            return json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()
        return (as_text(result, self.body) or "").encode()

    def describe(self) -> str:
        parts = [f"{super().describe()} {self.status_code}"]
        parts.extend(f"header {edit.describe()}" for edit in self.headers)
        if self.body is not None:
            parts.append(f"body {show_value(self.body)}")
        return ", ".join(parts)
