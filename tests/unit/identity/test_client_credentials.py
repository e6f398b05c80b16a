"""The OAuth 2.0 client-credentials provider against local token endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from aigw.identity import TokenUnavailable
from aigw.identity.client_credentials import ClientCredentialsProvider

SECRET = "canary-client-secret-5d1e"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A token endpoint that redirects (307, body kept) to another origin that records forms."""
    received: list[dict[str, str]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        received.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.json_response({"access_token": "stolen", "expires_in": 3600})

    other = web.Application()
    other.router.add_post("/token", elsewhere)
    other_runner = web.AppRunner(other, access_log=None)
    await other_runner.setup()
    await web.TCPSite(other_runner, "127.0.0.1", 0).start()
    other_url = f"http://127.0.0.1:{other_runner.addresses[0][1]}/token"

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(other_url)

    app = web.Application()
    app.router.add_post("/token", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/token", received
    await runner.cleanup()
    await other_runner.cleanup()


async def test_a_redirect_is_not_followed_with_the_client_secret(
    servers: tuple[str, list[dict[str, str]]],
) -> None:
    url, received = servers
    provider = ClientCredentialsProvider(url, "aigw", client_secret=SECRET)
    with pytest.raises(TokenUnavailable, match="answered 307") as failure:
        await provider.token("api://models/.default")
    assert received == []
    assert SECRET not in str(failure.value)
