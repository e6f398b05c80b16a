"""One structured JSON line per request. Never a header value, a query string or a body."""

from __future__ import annotations

import json
import logging

from aigw.context import RequestContext

log = logging.getLogger("aigw.access")


def log_request(
    ctx: RequestContext | None,
    *,
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration: float,
) -> None:
    record: dict[str, object] = {
        "event": "request",
        "request_id": request_id,
        "method": method,
        "path": path[:512],
        "status": status,
        "duration_ms": round(duration * 1000, 3),
    }
    if ctx is not None:
        record["api"] = ctx.api.id
        record["operation"] = ctx.operation.id
        record["backend"] = ctx.backend_id
        if ctx.first_byte_at is not None:
            record["ttfb_ms"] = round((ctx.first_byte_at - ctx.started) * 1000, 3)
        if ctx.last_error is not None:
            record["error_reason"] = ctx.last_error.reason
        if ctx.client_disconnected:
            record["client_disconnected"] = True
    log.info(json.dumps(record, separators=(",", ":")))
