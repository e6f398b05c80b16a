"""A controllable model backend on loopback for the pool tests.

Each `MockMember` is a threaded HTTP/1.1 server that speaks OpenAI's chat completions (JSON,
or SSE when the request says `"stream": true`) and records the exact body bytes it received.
The test sets what it does next through `mode`: answer, throttle with Retry-After, fail with
500, hang before the head, stall after the head, or break a stream after its first chunk.
A member that refuses connections is simply a URL nobody listens on (`refusing_url`).
`GET /healthz` answers `health` (200 unless told otherwise) and is recorded apart.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import free_port


@dataclass(frozen=True)
class Mode:
    kind: str = "ok"  # ok | throttle | error | hang | stall | break
    seconds: float = 0.0  # throttle: Retry-After; hang/stall: how long


OK = Mode()


def completion(name: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{name}",
        "object": "chat.completion",
        "created": 0,
        "model": "demo-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"from {name}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def sse_events(name: str, words: int = 3) -> list[bytes]:
    events = []
    for index in range(words):
        chunk = {
            "id": f"chatcmpl-{name}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "demo-model",
            "choices": [{"index": 0, "delta": {"content": f" {name}{index}"}}],
        }
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _handler(member: MockMember) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            with member.lock:
                member.bodies.append(body)
                mode = member.mode
            try:
                streaming = json.loads(body).get("stream") is True
            except ValueError:
                streaming = False
            # OSError: the gateway let go of this answer (failover, first-byte timeout).
            with contextlib.suppress(OSError):
                self._answer(mode, streaming)

        def do_GET(self) -> None:
            if self.path != "/healthz":
                self.do_POST()
                return
            with member.lock:
                member.probes.append({k.lower(): v for k, v in self.headers.items()})
                status = member.health
            with contextlib.suppress(OSError):
                self._json(status, {"status": "ok" if status == 200 else "failing"})

        def _answer(self, mode: Mode, streaming: bool) -> None:
            if mode.kind == "hang":
                time.sleep(mode.seconds)
            if mode.kind == "throttle":
                self._json(
                    429,
                    {"error": {"code": "429", "message": "Rate limit exceeded"}},
                    (("retry-after", f"{mode.seconds:g}"),),
                )
            elif mode.kind == "error":
                self._json(500, {"error": {"message": "internal error"}})
            elif streaming or mode.kind in ("stall", "break"):
                self._stream(mode)
            else:
                self._json(200, completion(member.name))

        def _json(
            self, status: int, document: Any, extra: tuple[tuple[str, str], ...] = ()
        ) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, mode: Mode) -> None:
            # Chunked, so a connection cut mid-stream is a truncated body, not a clean end.
            self.close_connection = True
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            if mode.kind == "stall":
                time.sleep(mode.seconds)
            for index, event in enumerate(sse_events(member.name)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                if mode.kind == "break" and index == 0:
                    time.sleep(0.2)
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
            self.wfile.write(b"0\r\n\r\n")

    return Handler


class MockMember:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        self.mode = OK
        self.health = 200
        self.probes: list[dict[str, str]] = []  # headers (lower-case) of each health probe
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(self, mode: Mode) -> None:
        with self.lock:
            self.mode = mode

    def set_health(self, status: int) -> None:
        with self.lock:
            self.health = status

    @property
    def calls(self) -> int:
        with self.lock:
            return len(self.bodies)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def refusing_url() -> str:
    """A loopback URL with nothing listening: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"
