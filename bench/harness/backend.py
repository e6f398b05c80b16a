"""The static upstream: nginx serving fixed chat-completion JSON and SSE bodies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness.processes import LOOPBACK, Child, ProcessRegistry, free_port, wait_ready

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"
CHAT_PATH = "/v1/chat/completions"


def nginx_string(text: str) -> str:
    """Quote `text` for an nginx config; newlines become \\n escapes."""
    if "$" in text:
        raise ValueError("nginx would expand '$' as a variable; keep it out of payloads")
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def nginx_conf(workdir: Path, json_port: int, sse_port: int) -> str:
    """Config for one worker, no daemon, no access log, long keep-alive.

    The JSON port also serves the SSE body under /stream/...; the SSE port serves it
    at the normal chat path, so every target streams without path or header tricks.
    """
    completion = nginx_string((PAYLOADS / "completion.json").read_text().strip())
    sse = nginx_string((PAYLOADS / "completion.sse").read_text())
    health = "location = /healthz { default_type text/plain; return 200 'ok'; }"
    json_loc = (
        f"location = {CHAT_PATH} {{ default_type application/json; return 200 {completion}; }}"
    )
    sse_type = "default_type text/event-stream; add_header Cache-Control no-cache"
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_buffer_size 64k;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    server {{
        listen {LOOPBACK}:{json_port} backlog=4096;
        {health}
        {json_loc}
        location = /stream{CHAT_PATH} {{ {sse_type}; return 200 {sse}; }}
        location / {{ return 404; }}
    }}
    server {{
        listen {LOOPBACK}:{sse_port} backlog=4096;
        {health}
        location = {CHAT_PATH} {{ {sse_type}; return 200 {sse}; }}
        location / {{ return 404; }}
    }}
}}
"""


@dataclass(frozen=True, slots=True)
class StaticBackend:
    child: Child
    json_port: int
    sse_port: int

    @property
    def json_url(self) -> str:
        return f"http://{LOOPBACK}:{self.json_port}"

    @property
    def sse_url(self) -> str:
        return f"http://{LOOPBACK}:{self.sse_port}"


def start_backend(registry: ProcessRegistry, workdir: Path, nginx: str) -> StaticBackend:
    """Write the config into `workdir` and run nginx in the foreground as a child."""
    workdir.mkdir(parents=True, exist_ok=True)
    json_port, sse_port = free_port(), free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, json_port, sse_port))
    argv = [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    child = registry.start("nginx", argv)
    backend = StaticBackend(child=child, json_port=json_port, sse_port=sse_port)
    wait_ready(child, f"{backend.json_url}/healthz", timeout=10.0)
    wait_ready(
        child, f"{backend.sse_url}/healthz", timeout=10.0 + time.perf_counter() - child.started_at
    )
    return backend
