"""The ASGI application: edge checks, routing, the pipeline, the response, the access log.

It holds a `RuntimeHolder`; each request takes the current runtime once and keeps it to the
end, so a reload swaps the runtime for new requests while in-flight ones finish on the old.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from urllib.parse import quote, unquote

from aigw.accesslog import AccessLog
from aigw.asgi import ConnectionSignals, Receive, Scope, Send
from aigw.body import read_body
from aigw.context import RequestContext, RequestView, Response
from aigw.errors import (
    BadRequest,
    ClientDisconnected,
    DependencyUnavailable,
    GatewayError,
    OperationNotFound,
    PayloadTooLarge,
    RequestTimeout,
    StreamAborted,
)
from aigw.headers import Headers
from aigw.pipeline.errors import error_response
from aigw.pipeline.executor import complete, execute, handle_error
from aigw.relay import send_response
from aigw.reload import RuntimeHolder
from aigw.runtime import OperationTarget, Runtime
from aigw.urlpath import path_problem

log = logging.getLogger("aigw.app")


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# At shutdown, the most a cancelled request's accounting may delay closing the runtime.
SETTLE_SECONDS = 2.0


class RequestIds:
    """Unique ids without a syscall per request: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._next = itertools.count(1).__next__

    def new(self) -> str:
        return f"{self._prefix}{self._next():016x}"


class Gateway:
    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder
        self._ids = RequestIds()
        self.access_log = AccessLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.holder.start()
                except DependencyUnavailable as exc:
                    log.error("cannot start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._requests_settled()
                await self.holder.close()
                self.access_log.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _requests_settled(self, within: float = SETTLE_SECONDS) -> None:
        """Requests cut at the end of the grace period finish their accounting (usage,
        ledger record) once they see their cancellation: wait for that, briefly, before the
        runtime (and its ledger) closes."""
        deadline = time.monotonic() + within
        while self.holder.current.in_flight > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = Headers.from_asgi(scope["headers"])
        incoming_id = headers.get("x-request-id")
        if incoming_id and _REQUEST_ID.match(incoming_id):
            request_id = incoming_id
        else:
            request_id, incoming_id = self._ids.new(), None
            # The backend gets the same id, so its logs can be joined with ours.
            headers.set("x-request-id", request_id)
        path = scope["path"]
        if path in ("/healthz", "/readyz"):
            await self._probe(path, send, request_id)
            return
        runtime = self.holder.current
        runtime.in_flight += 1
        ctx: RequestContext | None = None
        routed: list[RequestContext] = []  # the context, once made (for a cancelled request)
        status = 500
        try:
            ctx, status = await self._handle(
                runtime, scope, headers, receive, send, request_id, routed
            )
        except StreamAborted as aborted:
            ctx, status = aborted.ctx, aborted.status_code
            raise  # the server drops the connection: the client sees a truncated body
        except asyncio.CancelledError:
            status = 503  # cut at the end of the shutdown grace period
            ctx = routed[0] if routed else None  # still metered and in the ledger
            raise
        finally:
            runtime.in_flight -= 1
            duration = time.perf_counter() - started
            telemetry = runtime.services.telemetry
            if ctx is None:
                telemetry.finish_unrouted(status, duration)
            else:
                # The ledger keys on an id of ours: a caller's x-request-id may repeat.
                telemetry.finish(
                    ctx,
                    method=scope["method"],
                    status=status,
                    duration=duration,
                    request_id=request_id if incoming_id is None else self._ids.new(),
                    client_request_id=incoming_id,
                )
            if runtime.config.gateway.access_log:
                self.access_log.write(
                    ctx,
                    request_id=request_id,
                    method=scope["method"],
                    path=path,
                    status=status,
                    duration=duration,
                )

    async def _handle(
        self,
        runtime: Runtime,
        scope: Scope,
        headers: Headers,
        receive: Receive,
        send: Send,
        request_id: str,
        routed: list[RequestContext],
    ) -> tuple[RequestContext | None, int]:
        limits = runtime.config.gateway.limits
        # Our server protocol signals lost connections and enforces the body deadline, so
        # no task or timer per request is needed; on any other ASGI server both fall back.
        signals: ConnectionSignals | None = scope.get("extensions", {}).get("aigw.connection")
        try:
            path = scope["path"]
            problem = path_problem(path)
            if problem is not None:
                # The backend must get the path that was routed (see aigw.urlpath).
                raise BadRequest(problem)
            match = runtime.router.match(scope["method"], path)
            if match is None:
                raise OperationNotFound()
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_body_size:
                raise PayloadTooLarge()
            deadline = None if signals is not None else limits.body_timeout
            body = await read_body(receive, limits.max_body_size, deadline)
        except ClientDisconnected:
            timed_out = signals is not None and signals.body_timed_out
            return None, 408 if timed_out else 499
        except GatewayError as exc:
            response = error_response(exc)
            if isinstance(exc, PayloadTooLarge | RequestTimeout):
                # The rest of the body is never read, so the connection cannot be reused.
                response.headers.set("connection", "close")
            await send_response(send, response, request_id)
            return None, response.status_code
        request = RequestView(
            method=scope["method"],
            scheme=scope.get("scheme", "http"),
            host=headers.get("host") or "",
            path=scope["path"],
            query_string=scope["query_string"].decode("latin-1"),
            headers=headers,
            client_ip=(scope.get("client") or ("", 0))[0],
            body=body,
        )
        request.backend_path = _raw_suffix(scope, match.route.api.path, match.suffix)
        request.matched_parameters = match.params
        ctx = RequestContext(
            request_id, request, match.route.api, match.route.operation, runtime.services.clock
        )
        routed.append(ctx)
        ctx.services = runtime.services
        target: OperationTarget = match.route.target
        ctx.backend_id = target.default_backend
        ctx.deployment_id = match.params.get("deployment-id")
        status = await self._run(
            runtime, target, ctx, match.route.json_body, signals, receive, send
        )
        return ctx, status

    async def _run(
        self,
        runtime: Runtime,
        target: OperationTarget,
        ctx: RequestContext,
        json_body: bool,
        signals: ConnectionSignals | None,
        receive: Receive,
        send: Send,
    ) -> int:
        """Check the key, run the chain and relay the response; a client disconnect cancels
        both."""
        task = asyncio.current_task()
        assert task is not None
        finished = False

        def on_disconnect() -> None:
            if not finished:
                ctx.client_disconnected = True
                task.cancel()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            on_disconnect()

        watcher = None
        if signals is not None:
            signals.on_disconnect(on_disconnect)
        else:  # any other ASGI server: watch `receive` in a task
            watcher = asyncio.create_task(watch_disconnect())
        response = None
        try:
            try:
                target.gate.admit(ctx)
            except GatewayError as exc:  # on-error of the API (no product context) shapes it
                response = await handle_error(target.chain_for(None), ctx, exc)
            else:
                # The body is looked at only once the caller is admitted, as in APIM.
                response = _invalid_body(ctx) if json_body else None
                if response is None:
                    runtime.services.telemetry.begin(ctx)
                    chain = target.chain_for(ctx.product.id if ctx.product else None)
                    response = await execute(chain, ctx, runtime.forward)
            try:
                await send_response(send, response, ctx.request_id, ctx)
            except StreamAborted as aborted:
                # The head already went out with this status: the access log must say so.
                aborted.status_code, aborted.ctx = response.status_code, ctx
                raise
            return response.status_code
        except asyncio.CancelledError:
            if not ctx.client_disconnected:
                raise
            task.uncancel()
            return 499
        finally:
            finished = True
            if watcher is not None:
                watcher.cancel()
            elif signals is not None:
                signals.on_disconnect(None)
            if response is not None:
                await response.aclose()
            if ctx.response is not None and ctx.response is not response:
                await ctx.response.aclose()
            await complete(ctx)

    async def _probe(self, path: str, send: Send, request_id: str) -> None:
        if path == "/healthz":
            status, body = 200, {"status": "live"}
        elif self.holder.ready:
            status, body = 200, {"status": "ready"}
        else:
            status, body = 503, {"status": "not ready", "reason": self.holder.not_ready_reason}
        response = Response(
            status, Headers([("content-type", "application/json")]), json.dumps(body).encode()
        )
        await send_response(send, response, request_id)


def _raw_suffix(scope: Scope, prefix: str, decoded_suffix: str) -> str:
    """The suffix as the client encoded it, so `%2F` in a segment stays one segment upstream."""
    raw = scope.get("raw_path")
    if raw:
        text = raw.decode("latin-1").split("?", 1)[0]
        head = f"/{prefix}" if prefix else ""
        # Prefixes match case-insensitively (ASCII), as the router does.
        if text[: len(head)].lower() == head.lower() and unquote(text) == str(scope["path"]):
            suffix: str = text[len(head) :]
            return suffix
    return quote(decoded_suffix, safe="/:@!$&'()*+,;=-._~")


def _invalid_body(ctx: RequestContext) -> Response | None:
    try:
        _read_model(ctx)
    except BadRequest as exc:
        return error_response(exc)
    return None


def _read_model(ctx: RequestContext) -> None:
    """LLM routes: parse the JSON body strictly up front and note the model it names."""
    body = ctx.request.json
    if body is None:
        raise BadRequest(
            "Request body is required and must be a JSON object", reason="InvalidJsonBody"
        )
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object", reason="InvalidJsonBody")
    model = body.get("model")
    ctx.model = model if isinstance(model, str) else ctx.deployment_id
