"""A deterministic OpenAI-compatible chat backend for the token limit tests.

Unlike the demo backend (fresh ids and timestamps per answer), every answer here is a pure
function of the request, so a test can say exactly which bytes the client must receive. It
records each request and the exact bytes of each streamed answer.

Per request:
- `x-usage: P,C` — the usage it reports (default `10,5`): `C` content tokens are generated,
  one chunk each when streamed.
- `x-no-usage: 1` — report no usage at all, also when a stream asked for it.
- `x-chunk-delay-ms: N` — pause between streamed events.
- `x-delay-ms: N` — pause before a non-streamed answer.
- `x-obfuscation: 1` — end every chunk with an `"obfuscation"` member, as OpenAI does unless
  `stream_options.include_obfuscation` is false (there random padding, here a fixed one).
- `x-gzip: 1` — gzip the answer (a stream event by event) when the request accepts gzip.

Streams follow OpenAI's wire format: compact JSON, and with `stream_options.include_usage`
a `"usage":null` member on every chunk and a last chunk with `"choices":[]` and the usage.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ID = "chatcmpl-fixed0001"
CREATED = 1_700_000_000


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def usage_json(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def pieces(completion: int) -> list[str]:
    return [f" t{index}" for index in range(completion)]


def completion_body(model: str, prompt: int, completion: int, usage: bool = True) -> bytes:
    message = {"role": "assistant", "content": "".join(pieces(completion)), "refusal": None}
    body: dict[str, Any] = {
        "id": ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
    }
    if usage:
        body["usage"] = usage_json(prompt, completion)
    return _compact(body)


def stream_events(
    model: str, prompt: int, completion: int, include_usage: bool, obfuscation: bool = False
) -> Iterator[bytes]:
    """The SSE events of a streamed answer, each with its blank line."""

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        head = {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model}
        return {**head, "system_fingerprint": "fp_fixed", "choices": choices}

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    deltas = [choice({"role": "assistant", "content": "", "refusal": None})]
    deltas += [choice({"content": piece}) for piece in pieces(completion)]
    deltas.append(choice({}, "stop"))
    extra = {"usage": None} if include_usage else {}
    padding = {"obfuscation": "pAd9"} if obfuscation else {}
    for delta in deltas:
        yield b"data: " + _compact({**chunk([delta]), **extra, **padding}) + b"\n\n"
    if include_usage:
        usage = {"usage": usage_json(prompt, completion)}
        yield b"data: " + _compact({**chunk([]), **usage, **padding}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def stream_bytes(
    model: str, prompt: int, completion: int, include_usage: bool, obfuscation: bool = False
) -> bytes:
    return b"".join(stream_events(model, prompt, completion, include_usage, obfuscation))


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    sent: bytes = b""  # the bytes of a streamed answer, as far as they were sent


@dataclass
class _Log:
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(log: _Log) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen = Seen(self.path, headers, body)
            with log.lock:
                log.requests.append(seen)
            prompt, _, completion = headers.get("x-usage", "10,5").partition(",")
            p, c = int(prompt), int(completion)
            model = str(body.get("model", "fixed-model"))
            no_usage = headers.get("x-no-usage") == "1"
            gzipped = headers.get("x-gzip") == "1" and "gzip" in headers.get("accept-encoding", "")
            if body.get("stream") is True:
                options = body.get("stream_options")
                asked = isinstance(options, dict) and options.get("include_usage") is True
                delay = float(headers.get("x-chunk-delay-ms", "0")) / 1000
                padded = headers.get("x-obfuscation") == "1"
                events = stream_events(model, p, c, asked and not no_usage, padded)
                self._stream(seen, events, delay, gzipped)
                return
            payload = completion_body(model, p, c, usage=not no_usage)
            time.sleep(float(headers.get("x-delay-ms", "0")) / 1000)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            if gzipped:
                payload = gzip.compress(payload)
                self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, seen: Seen, events: Iterator[bytes], delay: float, gzipped: bool) -> None:
            self.close_connection = True
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            if gzipped:
                self.send_header("content-encoding", "gzip")
            self.end_headers()
            packer = zlib.compressobj(wbits=31) if gzipped else None  # 31: the gzip format
            try:
                for index, event in enumerate(events):
                    if index and delay:
                        time.sleep(delay)
                    with log.lock:  # before writing: the client may read it at once
                        seen.sent += event
                    if packer is not None:
                        event = packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH)
                    self.wfile.write(event)
                    self.wfile.flush()
                if packer is not None:
                    self.wfile.write(packer.flush())
            except OSError:
                pass  # the gateway hung up (its client left)

    return Handler


class FixedChatBackend:
    """A threaded HTTP/1.1 server on loopback answering chat completions deterministically."""

    def __init__(self) -> None:
        self._log = _Log()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self._log))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[Seen]:
        with self._log.lock:
            return list(self._log.requests)

    def count(self) -> int:
        with self._log.lock:
            return len(self._log.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
