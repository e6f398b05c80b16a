"""Single-request probes: a preflight correctness check and sequential time-to-first-byte."""

from __future__ import annotations

import http.client
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

from harness.processes import LOOPBACK

CHAT_PATH = "/v1/chat/completions"


def request_body(payload: Path, stream: bool) -> bytes:
    """The same body post.lua sends for `payload` (it prepends the same fields to stream)."""
    body = payload.read_text().rstrip()
    if stream:
        body = '{"stream": true, "stream_options": {"include_usage": true}, ' + body[1:]
    return body.encode()


def _headers(extra: Mapping[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/json", **extra}


def preflight(port: int, payload: Path, stream: bool, extra: Mapping[str, str]) -> str | None:
    """POST once; return None if the answer looks like a real completion, else why not."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        body = request_body(payload, stream)
        conn.request("POST", CHAT_PATH, body=body, headers=_headers(extra))
        resp = conn.getresponse()
        body = resp.read(1_000_000)
    except (OSError, http.client.HTTPException) as err:
        return f"preflight request failed: {err!r}"
    finally:
        conn.close()
    expected = b"data: [DONE]" if stream else b'"chat.completion"'
    if resp.status != 200 or expected not in body:
        return f"preflight got HTTP {resp.status}: {body[:200].decode(errors='replace')}"
    return None


def time_to_first_byte(
    port: int, payload: Path, stream: bool, extra: Mapping[str, str], samples: int
) -> dict[str, float]:
    """Sequential requests on one keep-alive connection; ms until the first body byte."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    body, headers = request_body(payload, stream), _headers(extra)
    ttfb: list[float] = []
    try:
        for _ in range(samples):
            start = time.perf_counter()
            conn.request("POST", CHAT_PATH, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read1(1)
            ttfb.append((time.perf_counter() - start) * 1000.0)
            resp.read()
    finally:
        conn.close()
    ttfb.sort()
    return {
        "samples": len(ttfb),
        "p50_ms": round(statistics.median(ttfb), 3),
        "p99_ms": round(ttfb[min(len(ttfb) - 1, int(len(ttfb) * 0.99))], 3),
    }
