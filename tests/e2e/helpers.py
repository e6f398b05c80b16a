"""Helpers for the end-to-end tests: config builders, a raw HTTP/1.1 socket client, access-log
lookups, and a small recording backend that speaks plain HTTP (JSON echo and slow SSE).
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

MODEL = "demo-model"
CHAT_BODY: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}


def base_config(demo_url: str, **limits: Any) -> dict[str, Any]:
    """The typical config: the demo backend behind an OpenAI API and an Azure OpenAI API."""
    return {
        "gateway": {"host": "127.0.0.1", "limits": {"max-body-size": 1024, **limits}},
        "backends": {"demo": {"url": demo_url, "timeouts": {"connect": 2, "read": 2}}},
        "apis": {
            "openai": {
                "type": "openai",
                "subscription-required": False,
                "path": "",
                "backend": "demo",
            },
            "azure": {
                "type": "azure-openai",
                "subscription-required": False,
                "path": "openai",
                "backend": "demo",
            },
        },
    }


def wait_until(check: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll `check` until it is true or `timeout` passes; returns its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of a log (other lines are ignored)."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def access_record(
    read_stdout: Callable[[], str], request_id: str, timeout: float = 5.0
) -> dict[str, Any]:
    """The access-log line of one request (written when the response is done, so poll)."""
    found: list[dict[str, Any]] = []

    def check() -> bool:
        found[:] = [r for r in log_lines(read_stdout()) if r.get("request_id") == request_id]
        return bool(found)

    assert wait_until(check, timeout), f"no access-log line for request {request_id}"
    assert len(found) == 1, found
    return found[0]


def assert_error(response: httpx.Response, status: int, *mentions: str) -> dict[str, Any]:
    """A gateway error: the status, `{"statusCode", "message"}` JSON, and nothing internal."""
    assert "Traceback" not in response.text
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json")
    body = response.json()
    assert set(body) == {"statusCode", "message"}, body
    assert body["statusCode"] == status
    assert isinstance(body["message"], str) and body["message"]
    for mention in mentions:
        assert mention.lower() in body["message"].lower(), body
    return body


# --- raw HTTP/1.1 over a socket, for what httpx refuses to send ---------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after the response


def raw_connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_raw_response(sock: socket.socket, wait_close: float = 2.0) -> RawResponse:
    """Read one response (Content-Length framed), then whether the server closes the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawResponse(status, headers, body, _closed_by_peer(sock, wait_close))


def _closed_by_peer(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def raw_exchange(port: int, data: bytes, wait_close: float = 2.0) -> RawResponse:
    with raw_connect(port) as sock:
        sock.sendall(data)
        return read_raw_response(sock, wait_close)


# --- a recording backend ---------------------------------------------------------------


@dataclass
class Recorder:
    """What the recording backend saw: requests, and how each slow stream ended."""

    name: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    streams: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            seen = {
                "backend": recorder.name,
                "method": self.command,
                "path": url.path,
                "query": parse_qsl(url.query, keep_blank_values=True),
                "raw_query": url.query,  # the query bytes exactly as they arrived
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
            with recorder.lock:
                recorder.requests.append(seen)
            events = self.headers.get("x-echo-sse-events")
            if events:
                self._stream(int(events), float(self.headers.get("x-echo-sse-delay-ms", "100")))
                return
            payload = json.dumps(seen).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("x-echo-backend", recorder.name)
            # `x-echo-response-headers: [["name", "value"], ...]` adds those response headers.
            for name, value in json.loads(self.headers.get("x-echo-response-headers") or "[]"):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, events: int, delay_ms: float) -> None:
            """Chat-completion chunks in SSE, one every `delay_ms`; records a broken pipe."""
            self.close_connection = True
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            started, sent, outcome = time.monotonic(), 0, "completed"
            try:
                for index in range(events):
                    chunk = {
                        "id": "chatcmpl-echo",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": MODEL,
                        "choices": [{"index": 0, "delta": {"content": f" w{index}"}}],
                    }
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                    sent += 1
                    time.sleep(delay_ms / 1000)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except OSError:
                outcome = "client-gone"
            with recorder.lock:
                recorder.streams.append(
                    {"outcome": outcome, "sent": sent, "seconds": time.monotonic() - started}
                )

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    return Handler


class RecordingBackend:
    """A threaded HTTP/1.1 server on loopback: echoes each request as JSON (`backend`, `method`,
    `path`, `query`, `raw_query`, `headers`, `body`), or streams SSE when `x-echo-sse-events` is
    set; `x-echo-response-headers` (a JSON list of pairs) adds headers to the echo."""

    def __init__(self, name: str) -> None:
        self.recorder = Recorder(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.recorder))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def recording_backend(name: str) -> Iterator[RecordingBackend]:
    backend = RecordingBackend(name)
    try:
        yield backend
    finally:
        backend.stop()


def raw_until_close(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` and return every byte the server sends until it closes the connection."""
    received = b""
    with raw_connect(port, timeout) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            received += chunk
    return received


# --- a scripted raw-socket backend, for responses no well-behaved server sends --------------

BIG_BODY_BYTES = 50 * 2**20


def _scripted_handler(backend: ScriptedBackend) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        timeout = 20  # a gateway that stops reading and never hangs up shows as "stalled"

        def handle(self) -> None:
            try:
                while self._one_request():
                    pass
            except OSError:
                pass

        def _one_request(self) -> bool:
            line = self.rfile.readline(65537)
            if not line.strip():
                return False
            method, target, _ = line.decode("latin-1").split(" ", 2)
            length = 0
            while (header := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                self.rfile.read(length)
            path = target.split("?", 1)[0]
            with backend.lock:
                backend.requests.append({"method": method, "path": path})
            name = path.rsplit("/", 1)[-1]
            if name == "big":
                self._big()
                return False
            self.wfile.write(backend.responses.get(name, SCRIPTED_OK))
            self.wfile.flush()
            return True

        def _big(self) -> None:
            """`BIG_BODY_BYTES` of body; records whether the gateway took it all or hung up."""
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n")
            self.wfile.write(b"content-length: %d\r\n\r\n" % BIG_BODY_BYTES)
            chunk, sent, outcome = b"x" * 65536, 0, "completed"
            try:
                while sent < BIG_BODY_BYTES:
                    self.wfile.write(chunk)
                    sent += len(chunk)
                self.wfile.flush()
            except TimeoutError:
                outcome = "stalled"  # the gateway neither read nor closed for `timeout` s
            except OSError:
                outcome = "aborted"
            with backend.lock:
                backend.big.append({"outcome": outcome, "sent": sent, "at": time.monotonic()})

    return Handler


SCRIPTED_OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
SCRIPTED_RESPONSES = {
    "status600": b"HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nok",
    "ctrl-header": b"HTTP/1.1 200 OK\r\nx-bad: a\x01b\r\ncontent-length: 2\r\n\r\nok",
}


class ScriptedBackend:
    """A threaded raw-socket HTTP/1.1 server on loopback. By the last path segment: `big`
    sends a 50 MB body (its fate recorded in `big`), `status600` and `ctrl-header` send the
    invalid responses of `SCRIPTED_RESPONSES`, anything else a 200 `ok` (keep-alive)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.big: list[dict[str, Any]] = []
        self.responses = dict(SCRIPTED_RESPONSES)
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _scripted_handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def request_count(*backends: RecordingBackend) -> int:
    """How many requests these recording backends have received so far."""
    total = 0
    for backend in backends:
        with backend.recorder.lock:
            total += len(backend.recorder.requests)
    return total
