"""The admin API's endpoints. Each one reads the runtime and the actor that the admission
middleware put on the request, and goes through the SubscriptionService like the CLI does."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from aigw.admin.bodies import (
    CreateBody,
    RegenerateBody,
    StateBody,
    UpdateBody,
    optional_datetime,
    read_body,
)
from aigw.admin.openapi import OPENAPI
from aigw.backends.base import Backend, Inspectable
from aigw.logs import redact
from aigw.runtime import Runtime
from aigw.subscriptions.model import Subscription
from aigw.subscriptions.service import (
    STATE_ACTIONS,
    IssuedKeys,
    ServiceError,
    SubscriptionService,
)

RUNTIME = web.RequestKey("runtime", Runtime)
ACTOR = web.RequestKey("actor", str)


_LIMIT = re.compile(r"^[0-9]{1,6}$")


def routes() -> list[web.RouteDef]:
    from aigw.admin.usage_handlers import usage_routes  # it imports RUNTIME from here

    return [
        web.get("/openapi.json", openapi, allow_head=False),
        web.get("/products", list_products, allow_head=False),
        web.get("/products/{id}", get_product, allow_head=False),
        web.get("/subscriptions", list_subscriptions, allow_head=False),
        web.post("/subscriptions", create_subscription),
        web.get("/subscriptions/{id}", get_subscription, allow_head=False),
        web.patch("/subscriptions/{id}", update_subscription),
        web.post("/subscriptions/{id}/{action:suspend|activate|cancel}", change_state),
        web.post("/subscriptions/{id}/regenerate-key", regenerate_key),
        web.get("/subscriptions/{id}/audit", subscription_audit, allow_head=False),
        web.get("/audit", audit_log, allow_head=False),
        web.get("/backends", list_backends, allow_head=False),
        web.get("/backends/{id}", get_backend, allow_head=False),
        *usage_routes(),
    ]


async def openapi(request: web.Request) -> web.Response:
    _query(request)
    return web.json_response(OPENAPI)


async def list_products(request: web.Request) -> web.Response:
    _query(request)
    products = request[RUNTIME].services.products
    return _listing([product.public() for product in products.values()])


async def get_product(request: web.Request) -> web.Response:
    _query(request)
    product_id = request.match_info["id"]
    product = request[RUNTIME].services.products.get(product_id)
    if product is None:
        raise ServiceError(404, f"product '{product_id}' not found")
    return web.json_response(product.public())


async def list_subscriptions(request: web.Request) -> web.Response:
    query = _query(request, "product", "state")
    found = await _service(request).find(
        product=query.get("product") or None, state=query.get("state") or None
    )
    now = _now(request)
    return _listing([subscription.public(now) for subscription in found])


async def create_subscription(request: web.Request) -> web.Response:
    _query(request)
    body = await read_body(request, CreateBody)
    created, keys = await _service(request).create(
        actor=request[ACTOR],
        display_name=body.display_name,
        scope=body.scope,
        product=body.product,
        subscription_id=body.id,
        owner_id=body.owner_id,
        expires_at=optional_datetime(body.expiration_date),
        state=body.state,
    )
    return _subscription(request, created, keys, status=201)


async def get_subscription(request: web.Request) -> web.Response:
    _query(request)
    return _subscription(request, await _service(request).get(request.match_info["id"]))


async def update_subscription(request: web.Request) -> web.Response:
    _query(request)
    changes = (await read_body(request, UpdateBody)).given()
    if "expiration_date" in changes:
        changes["expires_at"] = optional_datetime(changes.pop("expiration_date"))
    updated = await _service(request).update(
        request.match_info["id"], actor=request[ACTOR], **changes
    )
    return _subscription(request, updated)


async def change_state(request: web.Request) -> web.Response:
    _query(request)
    body = await read_body(request, StateBody, optional=True)
    changed = await _service(request).set_state(
        request.match_info["id"],
        STATE_ACTIONS[request.match_info["action"]],
        actor=request[ACTOR],
        comment=body.comment,
    )
    return _subscription(request, changed)


async def regenerate_key(request: web.Request) -> web.Response:
    _query(request)
    body = await read_body(request, RegenerateBody)
    changed, keys = await _service(request).regenerate_key(
        request.match_info["id"], body.key, actor=request[ACTOR]
    )
    return _subscription(request, changed, keys)


async def subscription_audit(request: web.Request) -> web.Response:
    limit = _limit(_query(request, "limit"))
    service = _service(request)
    subscription = await service.get(request.match_info["id"])  # 404 for an unknown id
    return _listing([entry.public() for entry in await service.audit(subscription.id, limit)])


async def audit_log(request: web.Request) -> web.Response:
    limit = _limit(_query(request, "limit"))
    return _listing([entry.public() for entry in await _service(request).audit(None, limit)])


async def list_backends(request: web.Request) -> web.Response:
    _query(request)
    runtime = request[RUNTIME]
    backends = runtime.services.backends.values()
    return _listing([_backend_status(backend, runtime.loaded.secrets) for backend in backends])


async def get_backend(request: web.Request) -> web.Response:
    _query(request)
    backend_id = request.match_info["id"]
    runtime = request[RUNTIME]
    backend = runtime.services.backends.get(backend_id)
    if backend is None:
        raise ServiceError(404, f"backend '{backend_id}' not found")
    return web.json_response(_backend_status(backend, runtime.loaded.secrets))


# -- helpers ---------------------------------------------------------------------------


def _service(request: web.Request) -> SubscriptionService:
    return request[RUNTIME].services.subscription_service()


def _now(request: web.Request) -> datetime:
    return request[RUNTIME].services.clock.now()


def _subscription(
    request: web.Request,
    subscription: Subscription,
    keys: IssuedKeys | None = None,
    status: int = 200,
) -> web.Response:
    """A subscription; keys only in the one answer that issued them."""
    document = subscription.public(_now(request))
    headers = {"Location": f"/subscriptions/{subscription.id}"} if status == 201 else None
    if keys is not None:
        document.update(keys.public())
    return web.json_response(document, status=status, headers=headers)


def _backend_status(backend: Backend, secrets: frozenset[str]) -> dict[str, Any]:
    # Live state of this process only: breakers are per process (as in APIM).
    if isinstance(backend, Inspectable):
        return {key: _masked(value, secrets) for key, value in backend.status().items()}
    return {"id": backend.id}


def _masked(value: Any, secrets: frozenset[str]) -> Any:
    """`value` with secret named values masked in every string, as the logs do: a URL or
    health-check path may have been built from one."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: _masked(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, secrets) for item in value]
    return value


def _listing(items: list[dict[str, Any]]) -> web.Response:
    # APIM's collection shape.
    return web.json_response({"value": items, "count": len(items)})


def _query(request: web.Request, *allowed: str) -> dict[str, str]:
    """The query parameters, each at most once; an unknown one is an error, not ignored."""
    query = request.query
    for name in query:
        if name not in allowed:
            raise ServiceError(400, f"unknown query parameter '{name[:64]}'")
        if len(query.getall(name)) > 1:
            raise ServiceError(400, f"query parameter '{name}' is given more than once")
    return dict(query)


def _limit(query: dict[str, str]) -> int:
    text = query.get("limit", "100")
    if not _LIMIT.fullmatch(text):
        raise ServiceError(400, "limit must be an integer between 1 and 1000")
    return int(text)
