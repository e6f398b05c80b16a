"""A discovery document and JWKS on loopback (aiohttp in-process), with hit counters and
switchable bad behaviours, for the key-source and policy tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.unit.jwt.minting import signer

KEY_A = signer("RS256", kid="a")
KEY_B = signer("ES256", kid="b")
KEY_C = signer("RS256", kid="c", index=1)


class Provider:
    """Discovery + JWKS on loopback, with hit counters and switchable bad behaviours."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = [KEY_A.public_jwk(), KEY_B.public_jwk()]
        self.discovery_hits = 0
        self.jwks_hits = 0
        self.jwks_delay = 0.0
        # None: serve properly; otherwise a function that answers the JWKS request instead.
        self.jwks_reply: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
        self.discovery_override: dict[str, Any] | None = None
        self.release = asyncio.Event()  # ends handlers that hang
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base + "/tenant"

    @property
    def url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/tenant/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/tenant/keys", self._jwks)
        app.router.add_get("/tenant/other-keys", self._jwks)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        self.discovery_hits += 1
        document = {"issuer": self.issuer, "jwks_uri": self.issuer + "/keys"}
        if self.discovery_override is not None:
            document.update(self.discovery_override)
            document = {k: v for k, v in document.items() if v is not None}
        return web.json_response(document)

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.jwks_hits += 1
        if self.jwks_delay:
            await asyncio.sleep(self.jwks_delay)
        if self.jwks_reply is not None:
            return await self.jwks_reply(request)
        return web.json_response({"keys": self.keys})

    async def hang(self, request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(self.release.wait(), 5)
        return web.json_response({"keys": self.keys})
