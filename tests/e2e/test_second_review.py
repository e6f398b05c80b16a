"""Fixes from the second review, on a real gateway process: expression failures that must not
leak a secret, pipelined and stalled clients, idle CRLFs, unknown routes with a huge body,
invalid backend responses, dot segments (fed by the body model or hidden behind backslashes)
and JSON bodies with lone surrogates.

A recording backend (echo and slow SSE) and a scripted raw-socket backend (a 50 MB body and
invalid responses) stand behind the gateway, so what reaches them is visible to the test.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import (
    BIG_BODY_BYTES,
    CHAT_BODY,
    MODEL,
    RawResponse,
    RecordingBackend,
    ScriptedBackend,
    access_record,
    assert_error,
    base_config,
    raw_connect,
    raw_exchange,
    read_raw_response,
    request_count,
    wait_until,
)
from tests.support import DemoBackend, Gateway

SECRET = "expr-s3cr3t-value-8841"
SECRET_ENV = "AIGW_TEST_SECOND_REVIEW_KEY"
SECRET_EXPRESSION = '@(context.Request.Headers["x-key"] == "{{key}}" ? "a" : "b")'
HEADER_TIMEOUT = 1.0
SEND_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def scripted_backend() -> Iterator[ScriptedBackend]:
    backend = ScriptedBackend()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def secret_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_ENV, SECRET)  # the gateway process inherits it
        yield


@pytest.fixture(scope="module")
def gateway_config(
    secret_env: None,
    demo_backend: DemoBackend,
    echo_backend: RecordingBackend,
    scripted_backend: ScriptedBackend,
) -> dict[str, Any]:
    config = base_config(
        demo_backend.url,
        **{"header-timeout": HEADER_TIMEOUT, "send-timeout": SEND_TIMEOUT},
    )
    config["named-values"] = {"key": {"env": SECRET_ENV, "secret": True}}
    config["backends"]["echo"] = {"url": echo_backend.url, "timeouts": {"connect": 2, "read": 2}}
    config["backends"]["scripted"] = {
        "url": scripted_backend.url,
        "timeouts": {"connect": 2, "read": 5, "pool": 8},
        "max-connections": 1,
    }
    config["apis"]["echoai"] = {
        "type": "openai",
        "subscription-required": False,
        "path": "echo",
        "backend": "echo",
    }
    config["apis"]["rewritten"] = {
        "type": "openai",
        "subscription-required": False,
        "path": "rw",
        "backend": "echo",
        "policies": {
            "inbound": [
                {"rewrite-uri": {"template": '@("/v1/" + context.Deployment.Model + "/x")'}}
            ]
        },
    }
    config["apis"]["shop"] = {
        "type": "http",
        "subscription-required": False,
        "path": "shop",
        "backend": "echo",
        "operations": {
            "get-item": {"method": "GET", "url-template": "/items/{id}"},
            "stream": {"method": "GET", "url-template": "/stream"},
            "keyed": {
                "method": "GET",
                "url-template": "/keyed",
                "policies": {
                    "inbound": [{"set-header": {"name": "x-check", "value": SECRET_EXPRESSION}}]
                },
            },
        },
    }
    config["apis"]["scripted"] = {
        "type": "http",
        "subscription-required": False,
        "path": "raw",
        "backend": "scripted",
        "operations": {"any": {"method": "GET", "url-template": "/{name}"}},
    }
    return config


def stderr_from(gateway: Gateway, offset: int) -> str:
    return gateway.stderr()[offset:]


def raw_json_error(response: RawResponse, status: int) -> dict[str, Any]:
    assert response.status == status, response
    assert response.headers.get("content-type", "").startswith("application/json"), response
    assert b"Traceback" not in response.body
    body: dict[str, Any] = json.loads(response.body)
    assert set(body) == {"statusCode", "message"}, body
    assert body["statusCode"] == status and body["message"], body
    return body


def recv_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}: {data[-300:]!r}")
        data += chunk
    return data


def seconds_until_eof(
    sock: socket.socket, limit: float, send: bytes = b"", every: float = 0.5
) -> float | None:
    """Seconds until the server closes `sock` (None if it is still open after `limit`),
    sending `send` every `every` seconds meanwhile; whatever arrives is read and dropped."""
    started = time.monotonic()
    next_send = started
    sock.settimeout(0.05)
    while (elapsed := time.monotonic() - started) < limit:
        if send and time.monotonic() >= next_send:
            try:
                sock.sendall(send)
            except OSError:  # reset: the server has closed it
                return elapsed
            next_send += every
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


# --- 1. an expression failure keeps its secret to the log ------------------------------------


def test_a_failing_expression_is_a_generic_500_and_the_log_masks_the_secret(
    http: httpx.Client, gateway: Gateway, echo_backend: RecordingBackend
) -> None:
    before, offset = request_count(echo_backend), len(gateway.stderr())
    assert http.get("/shop/keyed", headers={"x-key": "k"}).status_code == 200  # control

    response = http.get("/shop/keyed")  # no x-key: the indexer fails at run time

    assert response.status_code == 500, response.text
    assert response.headers.get("content-type", "").startswith("application/json")
    assert response.content == (
        b'{"statusCode": 500, "message": "Policy expression could not be evaluated"}'
    )
    assert SECRET not in response.text and "x-key" not in response.text
    assert request_count(echo_backend) == before + 1  # only the control request went through
    assert wait_until(lambda: "***" in stderr_from(gateway, offset), timeout=3), gateway.stderr()
    errors = stderr_from(gateway, offset)
    assert "x-key" in errors, errors  # the detail names the failing expression
    assert SECRET not in errors + gateway.stdout()
    assert "Traceback" not in errors


# --- 2. a pipelined stream is cancelled when the client goes ----------------------------------


def test_a_pipelined_stream_is_cancelled_upstream_when_the_client_closes(
    gateway: Gateway, echo_backend: RecordingBackend
) -> None:
    streams_before, offset = len(echo_backend.recorder.streams), len(gateway.stderr())
    request = (
        b"GET /shop/items/1 HTTP/1.1\r\nHost: gw\r\nx-request-id: pipelined-fast\r\n\r\n"
        b"GET /shop/stream HTTP/1.1\r\nHost: gw\r\nx-request-id: pipelined-stream\r\n"
        b"x-echo-sse-events: 50\r\nx-echo-sse-delay-ms: 100\r\n\r\n"  # 5 s if nobody hangs up
    )
    with raw_connect(gateway.port) as sock:
        sock.sendall(request)
        first = recv_until(sock, b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200"), first
        recv_until(sock, b"data: ", first)  # the second request's stream has started
    # Closed with the stream running.

    assert wait_until(lambda: len(echo_backend.recorder.streams) > streams_before, timeout=4)
    upstream = echo_backend.recorder.streams[streams_before]
    assert upstream["outcome"] == "client-gone", upstream
    assert upstream["sent"] < 50 and upstream["seconds"] < 3.5, upstream

    assert access_record(gateway.stdout, "pipelined-fast")["status"] == 200
    record = access_record(gateway.stdout, "pipelined-stream")
    assert record["status"] == 499, record
    assert record.get("client_disconnected") is True, record
    assert "Traceback" not in stderr_from(gateway, offset)


# --- 3. and 4. connections that must not stay open -------------------------------------------


def test_bare_crlfs_on_a_keep_alive_connection_are_cut_at_the_header_timeout(
    gateway: Gateway,
) -> None:
    with raw_connect(gateway.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        response = read_raw_response(sock, wait_close=0.2)
        assert response.status == 200 and not response.closed, response
        # Each CRLF is an empty line before a request line: never a request, never idle.
        elapsed = seconds_until_eof(sock, limit=HEADER_TIMEOUT + 4, send=b"\r\n", every=0.5)
    assert elapsed is not None, "still open after 5 s of bare CRLFs"
    assert elapsed < HEADER_TIMEOUT + 1.0, elapsed


def test_an_unknown_route_with_a_huge_body_gets_its_404_and_the_connection_closed(
    gateway: Gateway,
) -> None:
    with raw_connect(gateway.port) as sock:
        sock.sendall(
            b"POST /nope HTTP/1.1\r\nHost: gw\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000000000\r\n\r\nabc"
        )
        head = recv_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), head
        elapsed = seconds_until_eof(sock, limit=4, send=b"x", every=0.2)  # keeps trickling
    assert elapsed is not None, "the connection stayed open after the 404"
    assert elapsed < 1.0, elapsed


# --- 5. a client that never reads --------------------------------------------------------------


def test_a_client_that_stops_reading_is_cut_and_the_backend_connection_freed(
    gateway: Gateway, scripted_backend: ScriptedBackend
) -> None:
    big_before = len(scripted_backend.big)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # set before connect to stick
    sock.settimeout(5)
    with sock:
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(b"GET /raw/big HTTP/1.1\r\nHost: gw\r\nx-request-id: never-reads\r\n\r\n")
        head = recv_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        stalled_at = time.monotonic()

        # The backend allows one connection, held by the stalled download: this request waits
        # (pool timeout 8 s) until the gateway gives that connection up.
        other: dict[str, Any] = {}

        def fetch() -> None:
            try:
                other["status"] = httpx.get(gateway.url + "/raw/hello", timeout=15).status_code
            except httpx.HTTPError as exc:
                other["error"] = repr(exc)
            other["at"] = time.monotonic()

        fetcher = threading.Thread(target=fetch, daemon=True)
        fetcher.start()

        assert wait_until(
            lambda: len(scripted_backend.big) > big_before, timeout=SEND_TIMEOUT + 7
        ), "the backend is still sending: the gateway neither read nor closed"
        upstream = scripted_backend.big[big_before]
        assert upstream["outcome"] == "aborted", upstream
        assert upstream["sent"] < BIG_BODY_BYTES, upstream
        assert upstream["at"] - stalled_at < SEND_TIMEOUT + 4, upstream["at"] - stalled_at

        fetcher.join(15)
        assert other.get("status") == 200, other
        assert other["at"] - stalled_at < SEND_TIMEOUT + 5, other["at"] - stalled_at

        # What the gateway had already sent is still in the buffers; then the connection ends.
        received = len(head)
        sock.settimeout(3)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        # A TimeoutError here means the gateway kept the stalled connection open.
    assert received < BIG_BODY_BYTES


# --- 6. to 9. requests and responses that are refused -----------------------------------------


def test_a_model_with_dot_segments_cannot_steer_rewrite_uri(
    http: httpx.Client, echo_backend: RecordingBackend
) -> None:
    before = request_count(echo_backend)
    good = http.post("/rw/v1/chat/completions", json=CHAT_BODY)  # control: the rewrite works
    assert good.status_code == 200, good.text
    assert good.json()["path"] == f"/v1/{MODEL}/x"

    response = http.post("/rw/v1/chat/completions", json={**CHAT_BODY, "model": "../../admin"})

    assert_error(response, 400, "..")
    assert request_count(echo_backend) == before + 1


@pytest.mark.parametrize(
    "name", ["status600", "ctrl-header"], ids=["status-600", "control-char-in-header"]
)
def test_an_invalid_backend_response_is_a_json_502(
    http: httpx.Client, gateway: Gateway, scripted_backend: ScriptedBackend, name: str
) -> None:
    before, offset = len(scripted_backend.requests), len(gateway.stderr())
    response = http.get(f"/raw/{name}")
    assert len(scripted_backend.requests) == before + 1  # the backend really answered
    assert_error(response, 502)
    assert http.get("/raw/hello").status_code == 200  # the backend is still usable
    assert "Traceback" not in stderr_from(gateway, offset)


def post_raw_json(port: int, path: str, body: bytes) -> RawResponse:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return raw_exchange(port, request, 0.2)


def test_a_lone_surrogate_escape_in_a_json_body_is_400(
    gateway: Gateway, echo_backend: RecordingBackend
) -> None:
    before = request_count(echo_backend)
    lone = post_raw_json(
        gateway.port, "/echo/v1/chat/completions", rb'{"model":"\ud800","messages":[]}'
    )
    body = raw_json_error(lone, 400)
    assert "surrogate" in body["message"], body
    assert request_count(echo_backend) == before

    pair = rb'{"model":"\ud83d\ude00","messages":[]}'
    response = post_raw_json(gateway.port, "/echo/v1/chat/completions", pair)
    assert response.status == 200, response
    assert json.loads(json.loads(response.body)["body"])["model"] == "\U0001f600"


def test_backslash_dot_segments_are_400_and_never_reach_the_backend(
    gateway: Gateway, echo_backend: RecordingBackend
) -> None:
    before = request_count(echo_backend)
    request = b"GET /shop/items/..%5C..%5Cadmin HTTP/1.1\r\nHost: gw\r\n\r\n"
    raw_json_error(raw_exchange(gateway.port, request, 0.2), 400)
    assert request_count(echo_backend) == before
