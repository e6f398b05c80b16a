"""The admin API's aiohttp application and its listener.

Every request is admitted by one middleware (bearer token, actor, the runtime it runs on) and
every failure is rendered by another as `{"statusCode": N, "message": "..."}`: handlers only
raise. The token is read from the runtime serving now, so a reload can rotate it; the listen
address is read once at start.
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from aigw.admin.dashboard import PUBLIC_ROUTES, Dashboard
from aigw.admin.handlers import ACTOR, RUNTIME, routes
from aigw.reload import RuntimeHolder
from aigw.server.listener import Listener
from aigw.subscriptions.service import ServiceError
from aigw.subscriptions.store import StoreError

log = logging.getLogger("aigw.admin")

MAX_BODY_BYTES = 64 * 1024
MAX_ACTOR_CHARS = 100
# In-flight admin requests get this long to finish at shutdown.
SHUTDOWN_TIMEOUT = 5.0

HOLDER = web.AppKey("holder", RuntimeHolder)
Handler = Callable[[web.Request], Awaitable[StreamResponse]]


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"statusCode": status, "message": message}, status=status, headers=headers
    )


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> StreamResponse:
    try:
        response = await handler(request)
    except ServiceError as exc:
        challenge = {"WWW-Authenticate": 'Bearer realm="aigw-admin"'} if exc.status == 401 else None
        response = error_response(exc.status, exc.message, challenge)
    except web.HTTPException as exc:  # aiohttp's own: no route (404), method (405), size (413)
        response = error_response(exc.status, _http_message(exc), _allow(exc))
    except StoreError as exc:  # the service translates the expected ones; this is a backstop
        log.error("subscription store error: %s", exc)
        response = error_response(503, "subscription store error; try again later")
    except Exception:
        log.exception("admin API request failed: %s %s", request.method, request.path)
        response = error_response(500, "internal error; see the gateway log")
    # Create and regenerate answers carry keys: no cache may keep any answer.
    response.headers["Cache-Control"] = "no-store"
    return response


@web.middleware
async def admit(request: web.Request, handler: Handler) -> StreamResponse:
    """Check the token, name the actor, and keep the runtime open until the answer is sent."""
    if request.match_info.route.name in PUBLIC_ROUTES:  # the dashboard's files: no data
        return await handler(request)
    runtime = request.app[HOLDER].current
    token = runtime.config.admin.token
    if token is None:
        raise ServiceError(401, "the admin API is disabled: admin.token is not set")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    ):
        raise ServiceError(401, "missing or invalid admin token")
    request[RUNTIME] = runtime
    request[ACTOR] = _actor(request)
    # A reload closes the old runtime (and its store) only when this reaches zero.
    runtime.in_flight += 1
    try:
        return await handler(request)
    finally:
        runtime.in_flight -= 1


def _actor(request: web.Request) -> str:
    actor = f"admin-api@{request.remote or 'unknown'}"
    named = request.headers.get("X-Aigw-Actor")
    if named is None:
        return actor
    named = named.strip()
    if not named or len(named) > MAX_ACTOR_CHARS or not named.isprintable():
        raise ServiceError(400, f"X-Aigw-Actor must be 1-{MAX_ACTOR_CHARS} printable characters")
    return f"{actor} ({named})"


_MESSAGES = {
    404: "Resource not found",
    405: "Method not allowed",
    413: f"Request body is larger than {MAX_BODY_BYTES} bytes",
}


def _http_message(exc: web.HTTPException) -> str:
    return _MESSAGES.get(exc.status, exc.reason)


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def build_app(holder: RuntimeHolder) -> web.Application:
    app = web.Application(middlewares=[render_errors, admit], client_max_size=MAX_BODY_BYTES)
    app[HOLDER] = holder
    app.add_routes(routes())
    app.add_routes(Dashboard().routes())
    return app


class AccessLog(AbstractAccessLogger):
    """Method, path and status: never a query string or a header (the token, keys)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "admin %s %s %d",
            request.method,
            request.path,
            response.status,
            extra={"duration_ms": round(time * 1000, 2)},
        )


class AdminServer:
    """The admin API on its own listener: `sock` when the supervisor bound it for every
    worker, else `host:port`."""

    def __init__(
        self, holder: RuntimeHolder, host: str, port: int, sock: socket.socket | None = None
    ) -> None:
        self.holder = holder
        self.listener = Listener(
            host,
            port,
            sock,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            log=log,
            started="admin API listening on %s",
        )

    async def start(self) -> None:
        await self.listener.start(
            build_app(self.holder),
            access_log_class=AccessLog,
            access_log=logging.getLogger("aigw.admin.access"),
        )

    async def close(self) -> None:
        await self.listener.close()
