"""The dashboard's routes in process: the files are public, everything else still needs the
token, and the page can only run its own script."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aigw.admin.app import build_app
from aigw.admin.dashboard import ASSETS, PAGE, STATIC
from aigw.config.loader import load_config_text
from aigw.reload import RuntimeHolder
from aigw.runtime import build_runtime

TOKEN = "unit-admin-token-0123456789"
CONFIG = """
store: {url: "sqlite:unit.db"}
admin: {token: "{{admin-token}}"}
named-values:
  admin-token: {env: AIGW_UNIT_ADMIN_TOKEN, secret: true}
backends: {b: {url: "http://127.0.0.1:9"}}
apis: {chat: {type: openai, backend: b, subscription-required: false}}
"""


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Any]:
    monkeypatch.setenv("AIGW_UNIT_ADMIN_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)  # the config comes from a string: its store is in the cwd
    runtime = build_runtime(load_config_text(CONFIG, "<string>"))
    test_client: TestClient[Any, Any] = TestClient(TestServer(build_app(RuntimeHolder(runtime))))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def test_the_page_is_served_without_the_token(client: Any) -> None:
    reply = await client.get("/dashboard")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert reply.headers["Cache-Control"] == "no-store"
    page = await reply.text()
    assert page == (STATIC / "dashboard.html").read_text()
    assert 'id="token"' in page and 'type="password"' in page
    # Nothing inline for the CSP to allow: scripts by src only, no style attributes or blocks.
    assert re.findall(r"<script[^>]*>", page) == [
        '<script type="module" src="dashboard/dashboard.js">'
    ]
    assert "<style" not in page and "style=" not in page
    assert not re.search(r"\son[a-z]+=", page, re.IGNORECASE)  # no inline event handlers


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("dashboard.js", "text/javascript"),
        ("charts.js", "text/javascript"),
        ("dom.js", "text/javascript"),
        ("report.js", "text/javascript"),
        ("dashboard.css", "text/css"),
    ],
)
async def test_assets_have_their_content_type(client: Any, name: str, content_type: str) -> None:
    reply = await client.get(f"/dashboard/{name}")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == f"{content_type}; charset=utf-8"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert await reply.read() == (STATIC / name).read_bytes()


def test_every_static_file_is_served_and_every_import_resolves() -> None:
    assert {path.name for path in STATIC.iterdir()} == {PAGE, *ASSETS}
    for name in ASSETS:
        if name.endswith(".js"):
            imported = re.findall(r"from '\./([^']+)'", (STATIC / name).read_text())
            assert set(imported) <= set(ASSETS), name


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/dashboard.js"])
async def test_a_strict_content_security_policy_is_sent(client: Any, path: str) -> None:
    reply = await client.get(path)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in reply.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["form-action"] == "'none'"  # the token field can never be submitted
    assert policy["frame-ancestors"] == "'none'"


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/unknown.js",
        "/dashboard/dashboard.html",  # the page is served at /dashboard only
        "/dashboard/..%2Fapp.py",
        "/dashboard/.DASHBOARD.JS",
    ],
)
async def test_an_unknown_asset_is_a_json_404(client: Any, path: str) -> None:
    reply = await client.get(path)
    assert reply.status == 404
    assert await reply.json() == {"statusCode": 404, "message": "Resource not found"}


@pytest.mark.parametrize(
    "path", ["/usage/report?group-by=subscription", "/products", "/dashboardx", "/dashboard/a/b"]
)
async def test_everything_else_still_needs_the_token(client: Any, path: str) -> None:
    reply = await client.get(path)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await reply.json())["message"] == "missing or invalid admin token"
    wrong = await client.get(path, headers={"Authorization": "Bearer not-the-admin-token-0000"})
    assert wrong.status == 401


async def test_other_methods_on_the_page_need_the_token(client: Any) -> None:
    reply = await client.post("/dashboard", data=b"x")
    assert reply.status == 401
