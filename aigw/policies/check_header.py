"""`check-header`: reject a request that lacks a header, or whose header has none of the
allowed values. The caller gets the configured status code and message, as in APIM.

A header sent on several lines, or as a comma-separated list, passes if any value is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, field_validator

from aigw.context import RequestContext, Response
from aigw.errors import GatewayError
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register
from aigw.policies.values import one_or_many

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext


class CheckHeaderConfig(PolicyConfig):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    name: str = Field(min_length=1)
    failed_check_httpcode: int = Field(ge=400, le=599)
    failed_check_error_message: str = Field(min_length=1)
    ignore_case: bool = False
    value: list[str] = []

    _one_or_many = field_validator("value", mode="before")(one_or_many)


@register("check-header")
class CheckHeader(Policy):
    config_model = CheckHeaderConfig
    enforcing = True
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, CheckHeaderConfig)
        super().__init__(config, build)
        self.header = config.name.lower()
        self.status_code = config.failed_check_httpcode
        self.message = config.failed_check_error_message
        self.ignore_case = config.ignore_case
        fold = str.casefold if config.ignore_case else str
        self.allowed = frozenset(fold(value) for value in config.value)

    async def apply(self, ctx: RequestContext) -> Response | None:
        lines = ctx.request.headers.get_all(self.header)
        if not lines:
            raise self._reject("HeaderNotFound")
        if self.allowed and not any(self._allowed(line) for line in lines):
            raise self._reject("HeaderValueNotAllowed")
        return None

    def _allowed(self, line: str) -> bool:
        if self.ignore_case:
            line = line.casefold()
        if line in self.allowed:
            return True
        return "," in line and any(item.strip() in self.allowed for item in line.split(","))

    def _reject(self, reason: str) -> GatewayError:
        return GatewayError(
            self.message, status_code=self.status_code, reason=reason, source="check-header"
        )

    def describe(self) -> str:
        # Allowed values are not printed: a check-header is sometimes a shared-secret check.
        values = f", {len(self.allowed)} allowed values" if self.allowed else ""
        case = ", ignore-case" if self.ignore_case else ""
        return f"{super().describe()} {self.header}{values}{case} -> {self.status_code}"
