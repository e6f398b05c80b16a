"""The usage dashboard: one static page, its scripts and its style sheet, on the admin listener.

The files carry no data (the page asks for the admin token and calls `/usage/report` with
it), so these routes are the only ones the admission middleware lets through without the
token. The files are read once when the admin app is built, so a broken install fails at
start rather than on the first visit.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
PAGE = "dashboard.html"
# Only these names are served: `{file}` is looked up here, never joined to a path.
ASSETS = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",  # the page; imports the three below (ES modules)
    "charts.js": "text/javascript",
    "dom.js": "text/javascript",
    "report.js": "text/javascript",
}
# The routes the admission middleware admits without a token (see app.admit).
PUBLIC_ROUTES = frozenset({"dashboard", "dashboard-asset"})

# Everything comes from this listener: no inline script or style, no other origin, no frames.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Dashboard:
    """The dashboard's files, loaded once, and the two routes that serve them."""

    def __init__(self, directory: Path = STATIC) -> None:
        self._page = (directory / PAGE).read_bytes()
        self._assets = {name: (directory / name).read_bytes() for name in ASSETS}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/dashboard", self.page, name="dashboard", allow_head=False),
            web.get("/dashboard/{file}", self.asset, name="dashboard-asset", allow_head=False),
        ]

    async def page(self, request: web.Request) -> web.Response:
        return _response(self._page, "text/html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        body = self._assets.get(name)
        if body is None:
            raise web.HTTPNotFound()
        return _response(body, ASSETS[name])


def _response(body: bytes, content_type: str) -> web.Response:
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)
