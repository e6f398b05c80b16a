"""The gateway's admin API, for targets whose config enables it: what each backend saw.

A config with an `admin` section takes its token from the environment variable TOKEN_ENV
(a named value); the harness makes a fresh one per launch and never writes it anywhere.
"""

from __future__ import annotations

import http.client
import json
import secrets
from typing import Any

from harness.processes import LOOPBACK

TOKEN_ENV = "AIGW_BENCH_ADMIN_TOKEN"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def backend_states(port: int, token: str) -> dict[str, dict[str, Any]]:
    """GET /backends, kept to what the report needs: per single backend its breaker state,
    requests and failures since start, and its last trip (None: it never tripped)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", "/backends", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read(1_000_000)
    finally:
        conn.close()
    if resp.status != 200:
        raise ValueError(f"admin API GET /backends answered {resp.status}: {body[:200]!r}")
    states: dict[str, dict[str, Any]] = {}
    for backend in json.loads(body)["value"]:
        if backend.get("type") == "pool":
            continue
        breaker = backend.get("breaker") or {}
        states[backend["id"]] = {
            "state": backend["state"],
            "requests": backend["requests"],
            "failures": backend["failures"],
            "last_trip": breaker.get("lastTrip"),
        }
    return states
