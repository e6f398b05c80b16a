"""Reference forwarder: the simplest fast aiohttp proxy, the baseline aigw is measured against.

python bench/reference/aiohttp_forwarder.py --port 9000 --upstream http://127.0.0.1:9001
"""

from __future__ import annotations

import argparse

from aiohttp import ClientSession, TCPConnector, web

HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    ]
)


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def start_session(app: web.Application) -> None:
        app["session"] = ClientSession(connector=TCPConnector(limit=100), auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        session: ClientSession = app["session"]
        async with session.request(
            request.method, upstream + request.path_qs, headers=headers, data=body
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

    app.on_startup.append(start_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    ns = parser.parse_args()
    web.run_app(
        make_app(ns.upstream.rstrip("/")),
        host="127.0.0.1",
        port=ns.port,
        access_log=None,
        print=None,
    )
