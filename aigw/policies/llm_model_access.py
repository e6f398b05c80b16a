"""`llm-model-access` (ours): which callers may use which model deployments or models,
decided by a claim of the token `validate-jwt` admitted.

Rules map claim values (e.g. role `ProdWorkload`, or `*` for any validated caller) to model
patterns (`gpt-4o-prod`, `gpt-4.1-*`, `*`), matched case-insensitively against the routed
deployment id (Azure OpenAI routes) or the request's `model`. A request no rule allows gets
403 — the caller is authenticated, just not permitted — and so does a request without a
validated token, or to an operation that names no deployment or model. The built-in model
list of an LLM API (`GET …/models`) is not refused but filtered: the backend's list (asked
for uncompressed, decoded if it comes gzip/deflate anyway) keeps what the caller may use,
whatever the status it comes with. An `http` API's own operation named `models`, or another
method, is checked like any other operation.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aigw.catalog import BUILTIN_OPERATIONS
from aigw.config.model import kebab
from aigw.contentcoding import decoded
from aigw.context import RequestContext, Response
from aigw.errors import BackendProtocolError, GatewayError
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register
from aigw.policies.values import one_or_many

if TYPE_CHECKING:
    from aigw.jwt.validator import Jwt
    from aigw.policies.build import BuildContext

DENIED = "Access to this model is not allowed."
MAX_MODEL_LIST_BYTES = 4 * 2**20
MODEL_LIST = "models"
# The API types whose built-in operations include the model list (see aigw.catalog).
_MODEL_LIST_APIS = frozenset(
    api_type
    for api_type, operations in BUILTIN_OPERATIONS.items()
    if any(operation.id == MODEL_LIST for operation in operations)
)


class ModelRule(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=kebab, populate_by_name=True, frozen=True
    )

    claim_values: list[str] = Field(min_length=1)
    models: list[str] = Field(min_length=1)

    _many = field_validator("claim_values", "models", mode="before")(one_or_many)


class ModelAccessConfig(PolicyConfig):
    claim: str = Field("roles", min_length=1)
    separator: str | None = Field(None, min_length=1)
    rules: list[ModelRule] = Field(min_length=1)


@register("llm-model-access")
class ModelAccess(Policy):
    config_model = ModelAccessConfig
    enforcing = True
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, ModelAccessConfig)
        super().__init__(config, build)
        self.claim = config.claim
        self.separator = config.separator
        self.rules = tuple(
            (frozenset(rule.claim_values), tuple(model.lower() for model in rule.models))
            for rule in config.rules
        )

    def allows(self, jwt: Jwt | None, model: str | None) -> bool:
        if jwt is None or not model:
            return False
        held = set(jwt.values(self.claim, self.separator))
        name = model.lower()
        return any(
            ("*" in values or not values.isdisjoint(held))
            and any(fnmatchcase(name, pattern) for pattern in patterns)
            for values, patterns in self.rules
        )

    async def apply(self, ctx: RequestContext) -> Response | None:
        if _is_model_list(ctx) and ctx.request.method == "GET":
            # The list is read to be filtered: ask for it uncompressed (no header would mean
            # any coding is fine, RFC 9110 §12.5.3).
            ctx.request.headers.set("accept-encoding", "identity")
            return None
        # Any other operation (an `http` API's own too) is decided by its routed deployment
        # or model; one without either is refused, never let through unchecked.
        if not self.allows(ctx.jwt, ctx.deployment_id or ctx.model):
            raise GatewayError(
                DENIED,
                status_code=403,
                reason="ModelAccessDenied",
                source=self.name,
                detail=f"model {ctx.deployment_id or ctx.model!r}"
                + ("" if ctx.jwt else " without a validated token"),
            )
        return None

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        if self.shadow or not _is_model_list(ctx):
            return response
        encoding = (response.headers.get("content-encoding") or "identity").strip().lower()
        body = await response.read(MAX_MODEL_LIST_BYTES)
        listing = _model_list(body, encoding)
        if listing is None:
            if 200 <= response.status_code < 300:
                # What cannot be filtered is not shown: the list could name forbidden models.
                raise BackendProtocolError("Backend sent a model list that could not be filtered")
            return response  # an error answer (401, 429, 5xx …), relayed as the backend sent it
        if encoding != "identity":
            response.headers.delete("content-encoding")
        listing["data"] = [
            item
            for item in listing["data"]
            if isinstance(item, dict) and self.allows(ctx.jwt, str(item.get("id", "")))
        ]
        response.body = json.dumps(listing).encode()
        return response

    def describe(self) -> str:
        return f"{super().describe()} by claim {self.claim!r}, {len(self.rules)} rules"


def _is_model_list(ctx: RequestContext) -> bool:
    """The built-in model list of an LLM API; an `http` API may name its own operation
    `models` too, and that one lists nothing the policy knows how to filter."""
    return ctx.operation.id == MODEL_LIST and ctx.api.type in _MODEL_LIST_APIS


def _model_list(body: bytes | None, encoding: str) -> dict[str, Any] | None:
    """The body as a model list (`{"data": [...]}`), decoded; None if it is not one."""
    if body is not None and encoding != "identity":
        body = decoded(body, encoding, MAX_MODEL_LIST_BYTES)
    if body is None:
        return None
    try:
        listing = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        return None
    return listing
