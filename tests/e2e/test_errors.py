"""Failures at the edge and at the backend, as a client sees them on the wire.

Gateway errors are `{"statusCode": N, "message": "..."}` JSON without anything internal;
malformed HTTP framing is refused and the connection closed; slow clients are cut off.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import (
    CHAT_BODY,
    RawResponse,
    assert_error,
    base_config,
    raw_connect,
    raw_exchange,
    read_raw_response,
)
from tests.support import DemoBackend, Gateway, free_port

MAX_BODY = 64 * 1024
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend) -> dict[str, Any]:
    # Bodies up to 64 KiB so the JSON-abuse bodies reach the parser; short timeouts so the
    # timeout tests take about a second each.
    config = base_config(
        demo_backend.url, **{"max-body-size": MAX_BODY, "header-timeout": 1, "body-timeout": 1}
    )
    config["backends"]["demo"]["timeouts"] = {"connect": 2, "read": 1}
    config["backends"]["nowhere"] = {
        "url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "timeouts": {"connect": 2, "read": 1},
    }
    config["apis"]["dead"] = {
        "type": "openai",
        "subscription-required": False,
        "path": "dead",
        "backend": "nowhere",
    }
    return config


def post_raw_json(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post(CHAT, content=body, headers={"content-type": "application/json"})


def assert_raw_error(response: RawResponse, status: int) -> None:
    assert response.status == status, response
    assert b"Traceback" not in response.body
    body = json.loads(response.body)
    assert body["statusCode"] == status and body["message"], body


# --- routing and backend failures ---------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("POST", "/v1/chat/finish")])
def test_unknown_route_is_404_resource_not_found(
    http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, path, json=CHAT_BODY)
    assert_error(response, 404)
    assert response.json() == {"statusCode": 404, "message": "Resource not found"}


def test_refused_backend_is_502(http: httpx.Client) -> None:
    response = http.post("/dead" + CHAT, json=CHAT_BODY)
    assert_error(response, 502)


def test_backend_that_does_not_answer_in_time_is_504(http: httpx.Client) -> None:
    started = time.monotonic()
    response = http.post(CHAT, json=CHAT_BODY, headers={"x-demo-latency-ms": "5000"})
    assert_error(response, 504)
    assert time.monotonic() - started < 4  # the 1 s read timeout, not the backend's 5 s


def test_malformed_backend_body_passes_through_as_sent(http: httpx.Client) -> None:
    response = http.post(CHAT, json=CHAT_BODY, headers={"x-demo-malformed": "1"})
    assert response.status_code == 200
    assert response.content == b'{"id": "chatcmpl-broken", "choices": [ this is not JSON'


def test_stream_that_stalls_after_the_head_is_cut_not_ended(http: httpx.Client) -> None:
    body = {**CHAT_BODY, "stream": True}
    with http.stream("POST", CHAT, json=body, headers={"x-demo-stall-ms": "5000"}) as response:
        assert response.status_code == 200
        started = time.monotonic()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            for _ in response.iter_raw():
                pass
    assert time.monotonic() - started < 4  # cut at the read timeout


# --- request bodies on LLM routes ---------------------------------------------------------


def test_malformed_json_body_is_400(http: httpx.Client) -> None:
    assert_error(post_raw_json(http, b'{"model": "demo-model", "messages": [}'), 400, "JSON")


def test_duplicate_keys_are_400(http: httpx.Client) -> None:
    body = b'{"model": "a", "messages": [{"role": "user", "content": "hi"}], "model": "b"}'
    assert_error(post_raw_json(http, body), 400, "duplicate key")


def test_deeply_nested_json_is_400_fast_while_others_are_served(http: httpx.Client) -> None:
    nested = b'{"model": "demo-model", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"

    def timed_nested() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = post_raw_json(http, nested)
        return response, time.monotonic() - started

    with ThreadPoolExecutor(2) as pool:
        nested_future = pool.submit(timed_nested)
        normal_future = pool.submit(http.post, CHAT, json=CHAT_BODY)
        response, elapsed = nested_future.result(timeout=10)
        normal = normal_future.result(timeout=10)
    assert_error(response, 400)
    assert elapsed < 1.0
    assert normal.status_code == 200 and normal.json()["choices"]


def test_huge_number_is_400(http: httpx.Client) -> None:
    body = b'{"model": "demo-model", "max_tokens": ' + b"9" * 5000 + b', "messages": []}'
    assert_error(post_raw_json(http, body), 400)


def test_nan_is_400(http: httpx.Client) -> None:
    body = b'{"model": "demo-model", "temperature": NaN, "messages": []}'
    assert_error(post_raw_json(http, body), 400)


def test_body_over_limit_with_content_length_is_413_before_the_body_is_sent(
    gateway: Gateway,
) -> None:
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10 * MAX_BODY}\r\n\r\n"
    ).encode()
    with raw_connect(gateway.port, timeout=3) as sock:
        sock.sendall(head)  # and no body at all: the answer must not wait for it
        response = read_raw_response(sock, wait_close=0.5)
    assert_raw_error(response, 413)


def test_chunked_body_crossing_the_limit_is_413(gateway: Gateway) -> None:
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"x" * 8192
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    with raw_connect(gateway.port) as sock:
        sock.sendall(head)
        try:
            for _ in range(2 * MAX_BODY // len(piece)):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may stop reading once the limit is crossed
        response = read_raw_response(sock, wait_close=0.5)
    assert_raw_error(response, 413)


# --- request heads and framing ------------------------------------------------------------


def test_too_many_headers_is_431(http: httpx.Client) -> None:
    headers = {f"x-filler-{index}": "1" for index in range(150)}
    assert_error(http.post(CHAT, json=CHAT_BODY, headers=headers), 431)


def test_header_over_the_total_header_size_is_431(http: httpx.Client) -> None:
    response = http.post(CHAT, json=CHAT_BODY, headers={"x-big": "a" * 64 * 1024})
    assert_error(response, 431)


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ],
    ids=["content-length-with-chunked", "differing-content-lengths"],
)
def test_ambiguous_framing_is_400_and_the_connection_closed(gateway: Gateway, framing: str) -> None:
    request = (
        f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{framing}\r\n"
        "0\r\n\r\n"
    ).encode()
    response = raw_exchange(gateway.port, request)
    assert_raw_error(response, 400)
    # A fixed message: the parser's own wording is for the debug log, not for clients.
    assert json.loads(response.body)["message"] == "Invalid HTTP request"
    assert response.closed


def test_slow_client_head_is_cut_after_the_header_timeout(gateway: Gateway) -> None:
    with raw_connect(gateway.port) as sock:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Ty".encode())
        started = time.monotonic()
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 3.5, elapsed  # closed by the gateway, at the 1 s header timeout
    assert b"Traceback" not in received
    if received:
        assert received.startswith(b"HTTP/1.1 408"), received


def test_slow_body_is_408(gateway: Gateway) -> None:
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    with raw_connect(gateway.port) as sock:
        sock.sendall(head + b'{"model": ')
        started = time.monotonic()
        response = read_raw_response(sock, wait_close=0.5)
    assert_raw_error(response, 408)
    assert time.monotonic() - started < 3.5
