"""Request bodies of the admin API: strict JSON, typed with pydantic, unknown fields refused.

Types are checked here; what the values may be (id syntax, name length, dates in the future,
state transitions) is the SubscriptionService's job, so the CLI gets the same rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from aigw.jsonbody import InvalidJsonBody, parse_strict_json
from aigw.subscriptions.service import ServiceError, parse_datetime

B = TypeVar("B", bound="Body")
_MAX_ERRORS = 5


class Body(BaseModel):
    # camelCase only, as in APIM's REST API; strict so "true" is not a bool nor 1 a string.
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=False
    )

    def given(self) -> dict[str, Any]:
        """The fields the caller sent (PATCH: an absent field is left alone, null clears)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class CreateBody(Body):
    display_name: str
    scope: str | None = None
    product: str | None = None
    id: str | None = None
    owner_id: str | None = None
    expiration_date: str | None = None
    state: Literal["active", "submitted"] = "active"


class UpdateBody(Body):
    display_name: str = ""
    owner_id: str | None = None
    expiration_date: str | None = None
    state: str = ""
    state_comment: str | None = None


class StateBody(Body):
    comment: str | None = None


class RegenerateBody(Body):
    key: Literal["primary", "secondary"]


async def read_body(request: web.Request, model: type[B], *, optional: bool = False) -> B:
    data = await request.read()  # aiohttp enforces the application's client_max_size (413)
    if not data.strip():
        if optional:
            return model()
        raise ServiceError(400, "a JSON object body is required")
    try:
        document = parse_strict_json(data)
    except InvalidJsonBody as exc:
        raise ServiceError(400, exc.message) from None
    if not isinstance(document, dict):
        raise ServiceError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ServiceError(400, _describe(exc)) from None


def optional_datetime(text: str | None) -> datetime | None:
    return None if text is None else parse_datetime(text)


def _describe(exc: ValidationError) -> str:
    """Field names and pydantic's reasons; never the rejected values, which may be long."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_ERRORS]:
        field = ".".join(str(part)[:64] for part in error["loc"]) or "body"
        reason = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{field}: {reason}")
    more = exc.error_count() - _MAX_ERRORS
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
