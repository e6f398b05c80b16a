"""The operations listener: `/metrics` for Prometheus, `/healthz` and `/readyz` for probes.

It has a listener of its own (config `operations`), so metrics, which name subscriptions and
products, are never reachable through the API port. Under several workers the supervisor
binds its socket once and every worker serves it; whichever answers a scrape reads every
worker's series, so each scrape shows the whole gateway.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from aigw.backends.guarded import GuardedBackend
from aigw.backends.pool import PoolBackend
from aigw.reload import RuntimeHolder
from aigw.server.listener import Listener
from aigw.telemetry.prometheus import CONTENT_TYPE, PrometheusMetrics

log = logging.getLogger("aigw.operations")

SHUTDOWN_TIMEOUT = 2.0
# How often each worker writes its backends' breaker state for the others' scrapes.
PUBLISH_INTERVAL = 1.0
HOLDER = web.AppKey("holder", RuntimeHolder)
METRICS = web.AppKey("metrics", PrometheusMetrics)


def publish_state(registry: PrometheusMetrics, holder: RuntimeHolder) -> None:
    """This worker's view of every backend (pool members included), and its ledger buffer,
    as gauges."""
    services = holder.current.services
    if services.ledger is not None:
        registry.ledger_buffered(services.ledger.buffered)
    seen: dict[str, GuardedBackend] = {}
    for backend in services.backends.values():
        members = backend.members if isinstance(backend, PoolBackend) else [backend]
        for member in members:
            if isinstance(member, GuardedBackend):
                seen.setdefault(member.id, member)
    for backend_id, guarded in seen.items():
        breaker = guarded.breaker
        registry.backend_state(
            backend_id, breaker.state, breaker.in_flight, breaker.requests, breaker.failures
        )


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    publish_state(registry, request.app[HOLDER])
    registry.flush()
    # Reading every worker's files takes a few milliseconds: not on the event loop.
    body = await asyncio.to_thread(registry.exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "live"})


async def readyz(request: web.Request) -> web.Response:
    holder = request.app[HOLDER]
    if holder.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready", "reason": holder.not_ready_reason}, status=503)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        body = {"statusCode": exc.status, "message": exc.reason}
        return web.json_response(body, status=exc.status)


def build_app(holder: RuntimeHolder, registry: PrometheusMetrics) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[HOLDER] = holder
    app[METRICS] = registry
    app.add_routes(
        [web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)]
    )
    return app


class OperationsServer:
    def __init__(
        self,
        holder: RuntimeHolder,
        registry: PrometheusMetrics,
        host: str,
        port: int,
        sock: socket.socket | None = None,
    ) -> None:
        self.holder, self.registry = holder, registry
        self.listener = Listener(
            host,
            port,
            sock,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            log=log,
            started="operations listener (metrics, probes) on %s",
        )
        self._publisher: asyncio.Task[None] | None = None

    async def _publish(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL)
            try:
                publish_state(self.registry, self.holder)
            except Exception:  # never let the publisher die silently and stay stale
                log.exception("publishing backend state failed")
            try:
                self.registry.flush()  # this second's counts, for the other workers' scrapes
            except Exception:
                log.exception("writing metrics to the shared files failed")

    async def start(self) -> None:
        await self.listener.start(build_app(self.holder, self.registry), access_log=None)
        self._publisher = asyncio.get_running_loop().create_task(self._publish())

    async def close(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
            self._publisher = None
            self.registry.flush()  # the last counts, before the process goes
        await self.listener.close()
