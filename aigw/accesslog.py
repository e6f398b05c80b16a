"""One structured JSON line per request. Never a header value, a query string or a body.

Lines are written straight to stdout, batched per event-loop iteration: the `logging` module
and a flush per line cost more than the rest of the gateway's request path together.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TextIO

from aigw.context import RequestContext

_encode = json.JSONEncoder(separators=(",", ":")).encode


class AccessLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pending: list[str] = []

    def write(
        self,
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
            if ctx.subscription is not None:
                record["subscription"] = ctx.subscription.id
            if ctx.product is not None:
                record["product"] = ctx.product.id
            if ctx.first_byte_at is not None:
                record["ttfb_ms"] = round((ctx.first_byte_at - ctx.started) * 1000, 3)
            if ctx.last_error is not None:
                record["error_reason"] = ctx.last_error.reason
            if ctx.client_disconnected:
                record["client_disconnected"] = True
            if ctx.shadow_rejections:
                record["shadow_rejections"] = ctx.shadow_rejections
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (tests calling directly): write at once
                self._pending.append(_encode(record) + "\n")
                self.flush()
                return
        self._pending.append(_encode(record) + "\n")

    def flush(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        stream = self._stream or sys.stdout
        try:
            stream.write("".join(lines))
            stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed or full: never fail a request for its log line
