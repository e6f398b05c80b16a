"""Edge hardening on a real gateway process: idle sockets, dot segments, the query and the
headers as they cross the proxy, protocol oddities sent over raw sockets, and config errors
(with secrets in them) at start, in `validate` and on reload.

One recording backend answers every API, so what reaches the backend is visible to the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import yaml

from tests.e2e.conftest import AZURE_API_VERSION
from tests.e2e.helpers import (
    CHAT_BODY,
    RawResponse,
    RecordingBackend,
    assert_error,
    base_config,
    raw_connect,
    raw_exchange,
    raw_until_close,
    request_count,
    wait_until,
)
from tests.support import REPO, DemoBackend, Gateway, free_port

SECRET = "not-an-ip-s3cr3t"
SECRET_ENV = "AIGW_TEST_SECRET_IP"


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend, echo_backend: RecordingBackend) -> dict[str, Any]:
    config = base_config(demo_backend.url, **{"header-timeout": 1})
    config["backends"]["echo"] = {"url": echo_backend.url, "timeouts": {"connect": 2, "read": 2}}
    config["apis"]["azure"]["backend"] = "echo"
    config["apis"]["shop"] = {
        "type": "http",
        "subscription-required": False,
        "path": "shop",
        "backend": "echo",
        "operations": {
            "get-item": {"method": "GET", "url-template": "/items/{id}"},
            "post-item": {"method": "POST", "url-template": "/items"},
            "tagged": {
                "method": "GET",
                "url-template": "/tagged/{id}",
                "policies": {
                    "inbound": [{"set-query-parameter": {"name": "via", "value": "aigw"}}]
                },
            },
            "empty": {
                "method": "GET",
                "url-template": "/empty",
                "policies": {"inbound": [{"return-response": {"set-status": {"code": 204}}}]},
            },
        },
    }
    # An operation guarded by its own policy, and a catch-all beside it: `//` must not route
    # a request for the guarded one to the catch-all (a backend that merges slashes would
    # serve the guarded path without the guard).
    config["apis"]["guarded"] = {
        "type": "http",
        "subscription-required": False,
        "path": "guarded",
        "backend": "echo",
        "operations": {
            "admin": {
                "method": "GET",
                "url-template": "/admin",
                "policies": {
                    "inbound": [
                        "base",
                        {"ip-filter": {"action": "allow", "address": ["10.0.0.0/8"]}},
                    ]
                },
            },
            "rest": {"method": "GET", "url-template": "/*"},
        },
    }
    return config


def raw_get(port: int, target: str, *headers: str) -> RawResponse:
    """A GET sent byte for byte (httpx would normalise dot segments and re-quote)."""
    head = "".join(f"{header}\r\n" for header in headers)
    return raw_exchange(port, f"GET {target} HTTP/1.1\r\nHost: gw\r\n{head}\r\n".encode(), 0.5)


def raw_json_error(response: RawResponse, status: int) -> dict[str, Any]:
    assert response.status == status, response
    assert response.headers.get("content-type", "").startswith("application/json"), response
    assert b"Traceback" not in response.body
    body: dict[str, Any] = json.loads(response.body)
    assert body["statusCode"] == status and body["message"], body
    return body


# --- connections and paths ------------------------------------------------------------------


def test_a_connection_that_never_sends_a_byte_is_closed_after_the_header_timeout(
    gateway: Gateway,
) -> None:
    with raw_connect(gateway.port, timeout=5) as sock:
        started = time.monotonic()
        try:
            received = sock.recv(4096)  # EOF (b"") when the gateway closes it
        except ConnectionResetError:
            received = b""
        # A TimeoutError here means the gateway kept the silent socket open for 5 s.
        elapsed = time.monotonic() - started
    assert received == b""
    assert 0.8 < elapsed < 3.0, elapsed


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /shop/items/.. HTTP/1.1\r\nHost: gw\r\n\r\n",
        b"GET /shop/items/%2e%2e/x HTTP/1.1\r\nHost: gw\r\n\r\n",
        (
            f"POST /openai/deployments/../chat/completions?api-version={AZURE_API_VERSION}"
            " HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(json.dumps(CHAT_BODY))}\r\n\r\n{json.dumps(CHAT_BODY)}"
        ).encode(),
    ],
    ids=["trailing-dotdot", "encoded-dotdot", "azure-deployment-dotdot"],
)
def test_dot_segments_are_400_and_never_reach_the_backend(
    gateway: Gateway, echo_backend: RecordingBackend, request_bytes: bytes
) -> None:
    before = request_count(echo_backend)
    body = raw_json_error(raw_exchange(gateway.port, request_bytes, 0.5), 400)
    assert ".." in body["message"], body
    assert request_count(echo_backend) == before


def test_the_guarded_operation_is_guarded(gateway: Gateway, echo_backend: RecordingBackend) -> None:
    before = request_count(echo_backend)
    raw_json_error(raw_get(gateway.port, "/guarded/admin"), 403)
    assert raw_get(gateway.port, "/guarded/other").status == 200  # the catch-all forwards
    assert request_count(echo_backend) == before + 1


@pytest.mark.parametrize(
    "target", ["/guarded//admin", "/guarded/%2F/admin", "/guarded/%2fadmin/", "/guarded/\\admin"]
)
def test_empty_path_segments_are_400_and_never_reach_the_backend(
    gateway: Gateway, echo_backend: RecordingBackend, target: str
) -> None:
    before = request_count(echo_backend)
    body = raw_json_error(raw_get(gateway.port, target), 400)
    assert "empty segments" in body["message"], body
    assert request_count(echo_backend) == before


def test_a_deployment_id_outside_azures_characters_is_404(
    http: httpx.Client, echo_backend: RecordingBackend
) -> None:
    before = request_count(echo_backend)
    response = http.post(
        "/openai/deployments/%E2%82%AC/chat/completions",
        params={"api-version": AZURE_API_VERSION},
        json=CHAT_BODY,
    )
    assert_error(response, 404)
    assert request_count(echo_backend) == before


# --- the query string ---------------------------------------------------------------------


def test_the_query_reaches_the_backend_byte_for_byte(gateway: Gateway) -> None:
    query = "a%20b=1&flag&x=%2F&y=a+b"
    response = raw_get(gateway.port, f"/shop/items/1?{query}")
    assert response.status == 200, response
    seen = json.loads(response.body)
    assert seen["path"] == "/items/1"
    assert seen["raw_query"] == query


def test_a_query_changed_by_a_policy_is_re_encoded_with_percent_20(gateway: Gateway) -> None:
    response = raw_get(gateway.port, "/shop/tagged/1?a%20b=1&flag&x=%2F&y=a+b")
    assert response.status == 200, response
    raw = json.loads(response.body)["raw_query"]
    assert parse_qsl(raw, keep_blank_values=True) == [
        ("a b", "1"),
        ("flag", ""),
        ("x", "/"),
        ("y", "a b"),
        ("via", "aigw"),
    ]
    assert "+" not in raw, raw
    assert raw.startswith("a%20b=1&") and "&y=a%20b&" in raw, raw
    assert "x=%2F" in raw, raw


# --- request headers ------------------------------------------------------------------------


def test_chunked_trailers_never_become_request_headers(
    gateway: Gateway, echo_backend: RecordingBackend
) -> None:
    request = (
        b"POST /shop/items HTTP/1.1\r\nHost: gw\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n"
        b"0\r\nx-trailer: evil\r\nx-request-id: forged\r\n\r\n"
    )
    before = request_count(echo_backend)
    response = raw_exchange(gateway.port, request, 0.5)  # one write: head, body and trailers
    assert response.status == 200, response
    seen = json.loads(response.body)
    assert seen["body"] == "hello world"
    assert "x-trailer" not in seen["headers"], seen["headers"]
    assert seen["headers"].get("x-request-id") != "forged"
    assert response.headers.get("x-request-id") not in (None, "forged")
    assert request_count(echo_backend) == before + 1


def test_a_non_ascii_header_value_is_400_and_the_connection_closed(
    gateway: Gateway, echo_backend: RecordingBackend
) -> None:
    before = request_count(echo_backend)
    request = b"GET /shop/items/1 HTTP/1.1\r\nHost: gw\r\nX-Name: caf\xe9\r\n\r\n"
    response = raw_exchange(gateway.port, request)
    body = raw_json_error(response, 400)
    assert body["message"] == "Header values must be ASCII text"
    assert response.closed
    assert request_count(echo_backend) == before


@pytest.mark.parametrize(
    ("claimed", "forwarded"),
    [("1.2.3.4", "1.2.3.4, 127.0.0.1"), (None, "127.0.0.1")],
    ids=["client-sent-one", "client-sent-none"],
)
def test_x_forwarded_for_gets_the_peer_appended(
    http: httpx.Client, claimed: str | None, forwarded: str
) -> None:
    headers = {"x-forwarded-for": claimed} if claimed else {}
    response = http.get("/shop/items/1", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["headers"]["x-forwarded-for"] == forwarded


# --- response headers and bodies ------------------------------------------------------------


def test_headers_the_backend_lists_in_connection_are_not_relayed(http: httpx.Client) -> None:
    extra = [["Connection", "x-internal"], ["x-internal", "secret"], ["x-public", "yes"]]
    response = http.get("/shop/items/1", headers={"x-echo-response-headers": json.dumps(extra)})
    assert response.status_code == 200, response.text
    assert response.headers.get("x-public") == "yes"  # the echo really sent its extras
    assert "x-internal" not in response.headers


def test_every_response_has_exactly_one_date_header(http: httpx.Client) -> None:
    responses = {
        "recording backend": http.get("/shop/items/1"),
        "demo backend": http.post("/v1/chat/completions", json=CHAT_BODY),
        "demo backend stream": http.post(
            "/v1/chat/completions", json={**CHAT_BODY, "stream": True}
        ),
        "gateway 404": http.get("/no/such/route"),
        "gateway probe": http.get("/readyz"),
    }
    assert responses["gateway 404"].status_code == 404
    for name, response in responses.items():
        assert len(response.headers.get_list("date")) == 1, (name, response.headers)


def test_return_response_204_has_no_content_length_and_no_body(
    gateway: Gateway, echo_backend: RecordingBackend
) -> None:
    before = request_count(echo_backend)
    data = raw_until_close(
        gateway.port, b"GET /shop/empty HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, data
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 204"), data
    names = [line.partition(":")[0].strip().lower() for line in lines[1:]]
    assert "content-length" not in names, head
    assert "transfer-encoding" not in names, head
    assert body == b""
    assert request_count(echo_backend) == before


def test_a_malformed_request_target_is_a_json_400_without_a_traceback(
    gateway: Gateway, http: httpx.Client
) -> None:
    response = raw_exchange(gateway.port, b"GET http://[::1 HTTP/1.1\r\nHost: gw\r\n\r\n")
    raw_json_error(response, 400)
    assert response.closed
    assert http.get("/healthz").status_code == 200  # still serving
    errors = gateway.stderr()
    assert "Traceback" not in errors
    assert "Fatal error" not in errors


# --- config errors: at start, in validate, on reload ---------------------------------------


def aigw(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigw", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **env),
    )


def secret_config(backend_url: str, ip_filter: bool) -> dict[str, Any]:
    """A config with a secret named value: used harmlessly, or where its error quotes it."""
    use: dict[str, Any] = (
        {"ip-filter": {"action": "allow", "address": ["{{secret-ip}}"]}}
        if ip_filter
        else {"set-header": {"name": "x-hidden", "value": "{{secret-ip}}"}}
    )
    return {
        "gateway": {"host": "127.0.0.1"},
        "named-values": {"secret-ip": {"env": SECRET_ENV, "secret": True}},
        "backends": {"b": {"url": backend_url}},
        "apis": {
            "chat": {
                "type": "openai",
                "subscription-required": False,
                "backend": "b",
                "policies": {"inbound": [use]},
            },
        },
    }


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "two-workers"])
def test_serve_refuses_a_config_with_a_policy_error(tmp_path: Path, workers: list[str]) -> None:
    config = base_config("http://127.0.0.1:9")
    config["policies"] = {"inbound": [{"no-such-policy": {}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.monotonic()
    result = aigw("serve", "--config", str(path), "--port", str(free_port()), *workers, timeout=15)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 5
    assert "policies.inbound[0]" in result.stderr
    assert "no-such-policy" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_masks_a_secret_quoted_by_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(secret_config("http://127.0.0.1:9", ip_filter=True)))
    result = aigw("validate", str(path), **{SECRET_ENV: SECRET})
    assert result.returncode == 2, result.stderr
    assert "ip-filter.address[0]" in result.stderr
    assert "***" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_failed_reload_never_logs_a_secret(
    tmp_path: Path, demo_backend: DemoBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)  # the gateway process inherits it
    gw = Gateway(tmp_path, secret_config(demo_backend.url, ip_filter=False))
    try:
        assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT_BODY).status_code == 200
        gw.write_config(secret_config(demo_backend.url, ip_filter=True))
        gw.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload failed" in gw.stderr(), timeout=5), gw.stderr()
        # The issue itself is logged, with the value masked.
        assert "ip-filter.address[0]" in gw.stderr() and "***" in gw.stderr(), gw.stderr()
    finally:
        gw.stop()
    assert SECRET not in gw.stderr() + gw.stdout()
