"""Reference forwarder: the simplest fast aiohttp proxy, the baseline aigw is measured against.

python bench/reference/aiohttp_forwarder.py --port 9000 --upstream http://127.0.0.1:9001
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from aiohttp import ClientSession, TCPConnector, web

HOP_BY_HOP_NAMES = (
    "connection keep-alive proxy-authenticate proxy-authorization te trailer trailers"
    " transfer-encoding upgrade host content-length"
)
HOP_BY_HOP = frozenset(HOP_BY_HOP_NAMES.split())
SESSION = web.AppKey("session", ClientSession)


def make_app(upstream: str) -> web.Application:
    async def session_context(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = ClientSession(connector=TCPConnector(limit=100), auto_decompress=False)
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        url = upstream + request.path_qs
        async with request.app[SESSION].request(
            request.method, url, headers=headers, data=body
        ) as up:
            response = web.StreamResponse(status=up.status)
            for key, value in up.headers.items():
                if key.lower() not in HOP_BY_HOP or key.lower() == "content-length":
                    response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    ns = parser.parse_args()
    app = make_app(ns.upstream.rstrip("/"))
    web.run_app(app, host="127.0.0.1", port=ns.port, access_log=None, print=None)
