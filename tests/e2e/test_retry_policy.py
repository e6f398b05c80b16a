"""`retry` in the backend section re-sends the same request through the real gateway.

A scripted backend answers each request with the next entry of its script (a status, a
dropped connection, or a stream cut short) and records what it received, so the tests can
check that every attempt carried the same bytes and that nothing is retried once the
response has started towards the client.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.helpers import CHAT_BODY, MODEL, assert_error

# Answers: an HTTP status, "drop" (close without answering) or "truncate" (a 200 SSE head
# promising more bytes than it sends, then close). After the script: 200.
Answer = int | str

RETRY_ON_5XX = "@(context.Response.StatusCode >= 500)"


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-flaky",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class FlakyBackend:
    """A threaded HTTP/1.1 server on loopback that follows a script, one answer per request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.script: list[Answer] = []
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self, *script: Answer) -> None:
        with self.lock:
            self.script = list(script)
            self.requests = []

    def seen(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)

    def next_answer(self, request: dict[str, Any]) -> Answer:
        with self.lock:
            self.requests.append(request)
            return self.script.pop(0) if self.script else 200

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(backend: FlakyBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            answer = backend.next_answer({"path": self.path, "body": body})
            attempt = len(backend.seen())
            if answer == "drop":
                self.close_connection = True
                return
            if answer == "truncate":
                self._truncated_stream()
                return
            assert isinstance(answer, int)
            if answer == 200:
                payload = json.dumps(completion(f"attempt {attempt}")).encode()
            else:
                payload = json.dumps({"error": {"message": f"attempt {attempt} failed"}}).encode()
            self.send_response(answer)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _truncated_stream(self) -> None:
            self.close_connection = True
            chunk = b'data: {"choices": []}\n\n'
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(chunk) * 10))
            self.end_headers()
            self.wfile.write(chunk)
            self.wfile.flush()

    return Handler


@pytest.fixture(scope="module")
def flaky() -> Iterator[FlakyBackend]:
    backend = FlakyBackend()
    yield backend
    backend.stop()


def retry(count: int) -> dict[str, Any]:
    return {
        "backend": [
            "base",
            {
                "retry": {
                    "condition": RETRY_ON_5XX,
                    "count": count,
                    "interval": 0.05,
                    "delta": 0.05,
                    "first-fast-retry": True,
                }
            },
        ]
    }


@pytest.fixture(scope="module")
def gateway_config(flaky: FlakyBackend) -> dict[str, Any]:
    # The OpenAI API retries up to 3 times, the Azure OpenAI API once.
    return {
        "gateway": {"host": "127.0.0.1"},
        "backends": {"flaky": {"url": flaky.url, "timeouts": {"connect": 2, "read": 2}}},
        "apis": {
            "openai": {
                "type": "openai",
                "subscription-required": False,
                "path": "",
                "backend": "flaky",
                "policies": retry(3),
            },
            "azure": {
                "type": "azure-openai",
                "subscription-required": False,
                "path": "openai",
                "backend": "flaky",
                "policies": retry(1),
            },
        },
    }


MESSAGES: Any = [{"role": "user", "content": "Hello"}]


def test_failed_answers_are_retried_with_the_same_request(
    flaky: FlakyBackend, openai_client: openai.OpenAI
) -> None:
    flaky.reset(500, 500, 200)
    reply = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0.5)
    assert reply.choices[0].message.content == "attempt 3"
    seen = flaky.seen()
    assert len(seen) == 3
    assert seen[0]["body"] and all(request == seen[0] for request in seen)
    assert json.loads(seen[0]["body"])["temperature"] == 0.5


def test_exhausted_count_returns_the_last_answer(
    flaky: FlakyBackend, azure_client: openai.AzureOpenAI
) -> None:
    flaky.reset(500, 503, 200)
    with pytest.raises(openai.InternalServerError) as caught:
        azure_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503
    assert "attempt 2 failed" in caught.value.message
    assert len(flaky.seen()) == 2


def test_an_unreachable_backend_is_retried_as_502(
    flaky: FlakyBackend, openai_client: openai.OpenAI
) -> None:
    flaky.reset("drop", 200)
    reply = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert reply.choices[0].message.content == "attempt 2"
    assert len(flaky.seen()) == 2


def test_retries_run_out_on_errors_as_a_gateway_error(
    flaky: FlakyBackend, http: httpx.Client
) -> None:
    flaky.reset("drop", "drop", 200)
    response = http.post(
        f"/openai/deployments/{MODEL}/chat/completions?api-version=2024-10-21", json=CHAT_BODY
    )
    assert_error(response, 502)
    assert len(flaky.seen()) == 2


def test_no_retry_once_the_response_is_streaming(flaky: FlakyBackend, http: httpx.Client) -> None:
    flaky.reset("truncate", 200)
    with http.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as reply:
        assert reply.status_code == 200
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            for _ in reply.iter_raw():
                pass
    assert len(flaky.seen()) == 1  # the broken stream (a 502 by the condition) is not retried


def test_condition_false_sends_once(flaky: FlakyBackend, http: httpx.Client) -> None:
    flaky.reset(429, 200)
    response = http.post("/v1/chat/completions", json=CHAT_BODY)
    assert response.status_code == 429
    assert len(flaky.seen()) == 1
