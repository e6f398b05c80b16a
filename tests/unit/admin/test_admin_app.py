"""The admin application in process, for what a real store will not do on demand: fail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aigw.admin.app import build_app
from aigw.config.loader import load_config_text
from aigw.reload import RuntimeHolder
from aigw.runtime import Runtime, build_runtime
from aigw.subscriptions.directory import SubscriptionDirectory
from aigw.subscriptions.store import StoreUnavailable

TOKEN = "unit-admin-token-0123456789"
CONFIG = """
store: {url: "sqlite:unit.db"}
admin: {token: "{{admin-token}}"}
named-values:
  admin-token: {env: AIGW_UNIT_ADMIN_TOKEN, secret: true}
backends: {b: {url: "http://127.0.0.1:9"}}
products: {starter: {apis: [chat]}}
apis: {chat: {type: openai, backend: b}}
"""


class BrokenStore:
    """A store whose every call fails the way the caller is told to expect, or not."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


def runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, token: str = TOKEN, config: str = CONFIG
) -> Runtime:
    monkeypatch.setenv("AIGW_UNIT_ADMIN_TOKEN", token)
    monkeypatch.chdir(tmp_path)  # the config comes from a string: its store is in the cwd
    return build_runtime(load_config_text(config, "<string>"))


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[TestClient[Any, Any]] = []

    async def make(holder: RuntimeHolder) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(holder)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (StoreUnavailable("database is locked"), 503, "subscription store unavailable"),
        (RuntimeError("bug with a secret inside"), 500, "internal error"),
    ],
)
async def test_a_failing_store_is_a_clean_json_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    client_for: Any,
    error: Exception,
    status: int,
    message: str,
) -> None:
    current = runtime(monkeypatch, tmp_path)
    current.services.subscriptions = SubscriptionDirectory(BrokenStore(error))  # type: ignore[arg-type]
    client = await client_for(RuntimeHolder(current))
    for method, path, body in [
        ("GET", "/subscriptions", None),
        ("GET", "/subscriptions/x", None),
        ("POST", "/subscriptions", {"displayName": "x", "product": "starter"}),
        ("POST", "/subscriptions/x/suspend", None),
        ("GET", "/audit", None),
    ]:
        reply = await client.request(method, path, json=body, headers=AUTH)
        assert reply.status == status
        document = await reply.json()
        assert document["statusCode"] == status
        assert message in document["message"]
        assert "secret" not in document["message"] and "Traceback" not in document["message"]
    assert current.in_flight == 0  # counted while running, released after


async def test_the_token_is_read_from_the_runtime_serving_now(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any
) -> None:
    holder = RuntimeHolder(runtime(monkeypatch, tmp_path))
    client = await client_for(holder)
    assert (await client.get("/products", headers=AUTH)).status == 200
    holder.current = runtime(monkeypatch, tmp_path, token="rotated-admin-token-0123456789")
    assert (await client.get("/products", headers=AUTH)).status == 401
    rotated = {"Authorization": "Bearer rotated-admin-token-0123456789"}
    assert (await client.get("/products", headers=rotated)).status == 200


async def test_non_ascii_credentials_are_refused_not_crashed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any
) -> None:
    client = await client_for(RuntimeHolder(runtime(monkeypatch, tmp_path)))
    reply = await client.get("/products", headers={"Authorization": "Bearer tökén-ünïcode"})
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


async def test_an_id_ending_in_a_newline_is_refused_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any
) -> None:
    current = runtime(monkeypatch, tmp_path)
    await current.start()
    try:
        client = await client_for(RuntimeHolder(current))
        body = {"displayName": "x", "product": "starter", "id": "team-a\n"}
        reply = await client.post("/subscriptions", json=body, headers=AUTH)
        assert reply.status == 400
        assert "id must" in (await reply.json())["message"]
        assert await current.services.subscriptions.store.list_all() == []
    finally:
        await current.close()


FUNCTION_KEY = "fn-key-0123456789abcdef"
SECRET_BACKEND = CONFIG.replace(
    'backends: {b: {url: "http://127.0.0.1:9"}}',
    """  fn-key: {env: AIGW_UNIT_FUNCTION_KEY, secret: true}
backends:
  b:
    url: "https://fn-prod.example:8443/api/{{fn-key}}/openai"
    health-check: {path: "/health?code={{fn-key}}"}""",
)


async def test_backend_status_never_shows_a_secret_named_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client_for: Any
) -> None:
    monkeypatch.setenv("AIGW_UNIT_FUNCTION_KEY", FUNCTION_KEY)
    current = runtime(monkeypatch, tmp_path, config=SECRET_BACKEND)
    client = await client_for(RuntimeHolder(current))
    for path in ("/backends", "/backends/b"):
        reply = await client.get(path, headers=AUTH)
        assert reply.status == 200
        assert FUNCTION_KEY not in await reply.text()
    shown = await (await client.get("/backends/b", headers=AUTH)).json()
    assert shown["url"] == "https://fn-prod.example:8443/api/***/openai"
    assert shown["healthCheck"]["path"] == "/health?code=***"
