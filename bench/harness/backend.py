"""The static upstream: nginx serving fixed chat-completion JSON and SSE bodies."""

from __future__ import annotations

import subprocess
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


# Pool members (configs/pool*.yaml): each is a path prefix on the same nginx, so the harness
# rebases them like any other backend URL. Every path answers as CHAT_PATH does, except
# THROTTLED_MEMBER, which answers 429 to THROTTLED_SHARE of requests (chosen by a hash of
# nginx's random request id), like a PTU deployment at its limit.
POOL_MEMBERS = ("/ptu", "/payg")
THROTTLED_MEMBER = "/ptu-throttled"
THROTTLED_SHARE = "30%"
THROTTLED_BODY = (
    '{"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation'
    " have exceeded the rate limit of your current deployment. Please retry after 1 second."
    '"}}'
)


# The same members under SLOW_PREFIX answer like a model would: a completion after
# MODEL_LATENCY seconds (echo_sleep, from nginx's echo module), a 429 at once (Azure refuses
# before it generates anything). Without the module those paths do not exist.
SLOW_PREFIX = "/slow"
MODEL_LATENCY = 0.02
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")  # libnginx-mod-http-echo


def echo_module_loads(nginx: str, workdir: Path) -> bool:
    """Whether this nginx binary can load Debian's echo module (a module built for another
    nginx would stop the whole backend from starting)."""
    if not ECHO_MODULE.is_file():
        return False
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "echo-check.conf"
    conf.write_text(
        f"load_module {ECHO_MODULE};\npid {workdir}/echo-check.pid;\n"
        f"error_log {workdir}/echo-check.log;\nevents {{}}\nhttp {{}}\n"
    )
    try:
        checked = subprocess.run(
            [nginx, "-t", "-q", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "e.log")],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return checked.returncode == 0


def _chat_locations(answer: str, slow: bool) -> str:
    """`answer` (a default_type, headers and a return) at the chat path and the pool members',
    and with `slow` the members again under SLOW_PREFIX, answering after MODEL_LATENCY."""
    later = f"echo_sleep {MODEL_LATENCY}; echo_exec /answer;"
    # `rewrite ... last` inside `if` is one of the two safe uses of `if` in a location.
    throttle = "if ($bench_throttled) { rewrite ^ /throttled last; }"
    members = [("", answer), *((prefix, answer) for prefix in POOL_MEMBERS)]
    members.append((THROTTLED_MEMBER, f"{throttle} {answer}"))
    if slow:
        members += [(f"{SLOW_PREFIX}{prefix}", later) for prefix in POOL_MEMBERS]
        members.append((f"{SLOW_PREFIX}{THROTTLED_MEMBER}", f"{throttle} {later}"))
    locations = [f"location = {prefix}{CHAT_PATH} {{ {body} }}" for prefix, body in members]
    if slow:
        locations.append(f"location = /answer {{ internal; {answer} }}")
    return "\n        ".join(locations)


def nginx_conf(workdir: Path, json_port: int, sse_port: int, slow: bool = False) -> str:
    """Config for one worker, no daemon, no access log, long keep-alive.

    The JSON port also serves the SSE body under /stream/...; the SSE port serves it
    at the normal chat path, so every target streams without path or header tricks.
    """
    completion = nginx_string((PAYLOADS / "completion.json").read_text().strip())
    sse = nginx_string((PAYLOADS / "completion.sse").read_text())
    health = "location = /healthz { default_type text/plain; return 200 'ok'; }"
    json_answer = f"default_type application/json; return 200 {completion};"
    sse_type = "default_type text/event-stream; add_header Cache-Control no-cache"
    sse_answer = f"{sse_type}; return 200 {sse};"
    throttled = (
        "location = /throttled { internal; default_type application/json;"
        f" add_header Retry-After 1 always; return 429 {nginx_string(THROTTLED_BODY)}; }}"
    )
    load_echo = f"load_module {ECHO_MODULE};" if slow else ""
    return f"""
{load_echo}
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
    split_clients "${{request_id}}" $bench_throttled {{ {THROTTLED_SHARE} 1; * ""; }}
    server {{
        listen {LOOPBACK}:{json_port} backlog=4096;
        {health}
        {_chat_locations(json_answer, slow)}
        {throttled}
        location = /stream{CHAT_PATH} {{ {sse_answer} }}
        location / {{ return 404; }}
    }}
    server {{
        listen {LOOPBACK}:{sse_port} backlog=4096;
        {health}
        {_chat_locations(sse_answer, slow)}
        {throttled}
        location / {{ return 404; }}
    }}
}}
"""


@dataclass(frozen=True, slots=True)
class StaticBackend:
    child: Child
    json_port: int
    sse_port: int
    slow: bool  # the members under SLOW_PREFIX exist

    @property
    def json_url(self) -> str:
        return f"http://{LOOPBACK}:{self.json_port}"

    @property
    def sse_url(self) -> str:
        return f"http://{LOOPBACK}:{self.sse_port}"


def start_backend(
    registry: ProcessRegistry, workdir: Path, nginx: str, slow: bool = False
) -> StaticBackend:
    """Write the config into `workdir` and run nginx in the foreground as a child. `slow`:
    also the members under SLOW_PREFIX, if this nginx can load the echo module."""
    workdir.mkdir(parents=True, exist_ok=True)
    slow = slow and echo_module_loads(nginx, workdir / "echo-check")
    json_port, sse_port = free_port(), free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, json_port, sse_port, slow))
    argv = [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    child = registry.start("nginx", argv)
    backend = StaticBackend(child=child, json_port=json_port, sse_port=sse_port, slow=slow)
    wait_ready(child, f"{backend.json_url}/healthz", timeout=10.0)
    wait_ready(
        child, f"{backend.sse_url}/healthz", timeout=10.0 + time.perf_counter() - child.started_at
    )
    return backend
