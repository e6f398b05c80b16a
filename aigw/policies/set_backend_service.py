"""`set-backend-service`: choose the backend (or pool) the request is forwarded to.

A literal `backend-id` is checked against the configured backends when the config is built;
an expression can only be checked per request, and an unknown id then fails with a 500.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from aigw.context import RequestContext, Response
from aigw.errors import GatewayError
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register
from aigw.policies.values import constant_text

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext


class SetBackendServiceConfig(PolicyConfig):
    backend_id: str = Field(min_length=1)


class BackendNotFound(GatewayError):
    status_code = 500
    reason = "BackendNotFound"
    default_message = "Backend not found"
    source = "set-backend-service"


@register("set-backend-service")
class SetBackendService(Policy):
    config_model = SetBackendServiceConfig
    sections = frozenset({"inbound", "backend"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, SetBackendServiceConfig)
        super().__init__(config, build)
        self.backend = build.value(config.backend_id, ".backend-id")
        self.fixed = constant_text(self.backend)
        self.known = build.backend_ids
        if self.fixed is not None and self.fixed not in self.known:
            build.error(f'backend "{self.fixed}" is not defined')

    async def apply(self, ctx: RequestContext) -> Response | None:
        if self.fixed is not None:
            ctx.backend_id = self.fixed
            return None
        backend_id = self.backend.evaluate(ctx)
        if not isinstance(backend_id, str) or backend_id not in self.known:
            raise BackendNotFound()
        ctx.backend_id = backend_id
        return None

    def describe(self) -> str:
        return f"{super().describe()} {self.fixed or self.backend.source}"
