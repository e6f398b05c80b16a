"""Reference forwarder: a raw ASGI app on granian, one shared aiohttp session, streamed body.

python bench/reference/granian_forwarder.py --port 9000 --upstream http://127.0.0.1:9001
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, TCPConnector

HOP_BY_HOP_NAMES = (
    b"connection keep-alive proxy-authenticate proxy-authorization te trailer trailers"
    b" transfer-encoding upgrade host content-length"
)
HOP_BY_HOP = frozenset(HOP_BY_HOP_NAMES.split())


class Forwarder:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: ClientSession | None = None  # created on the worker's own event loop

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self.session is None:
            self.session = ClientSession(connector=TCPConnector(limit=100), auto_decompress=False)
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        query = "?" + scope["query_string"].decode() if scope["query_string"] else ""
        url = self.upstream + scope["raw_path"].decode() + query
        async with self.session.request(scope["method"], url, headers=headers, data=body) as up:
            keep = HOP_BY_HOP - {b"content-length"}
            out = [(k, v) for k, v in up.raw_headers if k.lower() not in keep]
            await send({"type": "http.response.start", "status": up.status, "headers": out})
            async for chunk in up.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


app = Forwarder(os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8001").rstrip("/"))

if __name__ == "__main__":
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    ns = parser.parse_args()
    os.environ["BENCH_UPSTREAM"] = ns.upstream  # the worker process imports `app` afresh
    here = Path(__file__).resolve().parent
    Server(
        "granian_forwarder:app",
        address="127.0.0.1",
        port=ns.port,
        workers=1,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        working_dir=here,
    ).serve()
