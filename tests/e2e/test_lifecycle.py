"""Probes, the access log, client disconnects, graceful shutdown, reloads and workers, on a
real gateway process. Tests that signal the gateway start their own."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import (
    CHAT_BODY,
    MODEL,
    RecordingBackend,
    access_record,
    base_config,
    wait_until,
)
from tests.support import DemoBackend, Gateway

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend, echo_backend: RecordingBackend) -> dict[str, Any]:
    config = base_config(demo_backend.url)
    # A backend whose end of a stream is observable, to see the upstream request cancelled.
    config["backends"]["recorder"] = {"url": echo_backend.url}
    config["apis"]["recorded"] = {
        "type": "openai",
        "subscription-required": False,
        "path": "recorded",
        "backend": "recorder",
    }
    return config


def versioned(demo_url: str, version: str) -> dict[str, Any]:
    """The typical config plus a response header that says which config served."""
    config = base_config(demo_url)
    config["policies"] = {"outbound": [{"set-header": {"name": "x-config", "value": version}}]}
    return config


def invalid(demo_url: str) -> dict[str, Any]:
    config = versioned(demo_url, "never-served")
    config["policies"]["inbound"] = [{"no-such-policy": {}}]
    return config


@contextmanager
def own_gateway(workdir: Path, config: dict[str, Any], *extra: str) -> Iterator[Gateway]:
    gw = Gateway(workdir, config, *extra)
    try:
        yield gw
    finally:
        gw.stop()


def config_header(url: str) -> str | None:
    """The x-config header of a request on a new connection."""
    response = httpx.get(url + "/v1/models", timeout=5)
    assert response.status_code == 200, response.text
    return response.headers.get("x-config")


def count_in(text_of: Callable[[], str], needle: str) -> int:
    return text_of().count(needle)


def test_health_and_readiness_probes_answer_200(http: httpx.Client) -> None:
    for path in ("/healthz", "/readyz"):
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)


def test_access_log_has_one_line_per_request_and_no_secrets(
    http: httpx.Client, gateway: Gateway
) -> None:
    prompt = "purple-elephant-prompt-7431"
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    headers = {"x-request-id": "log-check-1", "api-key": "sekret-123"}
    assert http.post(CHAT, json=body, headers=headers).status_code == 200
    assert http.get("/no/such/route", headers={"x-request-id": "log-check-2"}).status_code == 404

    record = access_record(gateway.stdout, "log-check-1")
    assert (record["method"], record["path"]) == ("POST", CHAT)
    assert record["api"] == "openai"
    assert record["operation"] == "chat-completions"
    assert record["status"] == 200
    assert record["backend"] == "demo"
    assert isinstance(record["duration_ms"], (int, float)) and record["duration_ms"] >= 0
    assert access_record(gateway.stdout, "log-check-2")["status"] == 404

    output = gateway.stdout() + gateway.stderr()
    assert "sekret-123" not in output
    assert prompt not in output


def test_client_disconnect_mid_stream_cancels_the_upstream_request(
    http: httpx.Client, gateway: Gateway, echo_backend: RecordingBackend
) -> None:
    streams_before = len(echo_backend.recorder.streams)
    headers = {
        "x-request-id": "disconnect-1",
        "x-echo-sse-events": "50",  # 5 s of stream if nobody hangs up
        "x-echo-sse-delay-ms": "100",
    }
    body = {**CHAT_BODY, "stream": True}
    with http.stream("POST", "/recorded" + CHAT, json=body, headers=headers) as response:
        assert response.status_code == 200
        first = next(response.iter_raw())
        assert first.startswith(b"data: ")
    # Leaving the block without reading the body closes the connection.

    record = access_record(gateway.stdout, "disconnect-1")
    assert record["status"] == 499
    assert record.get("client_disconnected") is True

    assert wait_until(lambda: len(echo_backend.recorder.streams) > streams_before, timeout=4)
    upstream = echo_backend.recorder.streams[streams_before]
    assert upstream["outcome"] == "client-gone"
    assert upstream["sent"] < 50
    assert upstream["seconds"] < 3.5  # well before the 5 s the whole stream takes

    after = http.post(CHAT, json=CHAT_BODY)
    assert after.status_code == 200 and after.json()["choices"]


def test_sigterm_lets_a_running_stream_finish_and_exits_0(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    with own_gateway(tmp_path, base_config(demo_backend.url)) as gw:
        headers = {"x-demo-chunk-delay-ms": "200", "x-demo-chunks": "10"}
        body = {**CHAT_BODY, "stream": True}
        with (
            httpx.Client(base_url=gw.url, timeout=10) as client,
            client.stream("POST", CHAT, json=body, headers=headers) as response,
        ):
            assert response.status_code == 200
            chunks = response.iter_raw()
            received = next(chunks)
            gw.signal(signal.SIGTERM)
            try:
                ready = httpx.get(gw.url + "/readyz", timeout=2)
            except httpx.TransportError:
                pass  # the listener is already closed: also not ready
            else:
                assert ready.status_code == 503, ready.text
            for chunk in chunks:
                received += chunk
        text = received.decode()
        assert text.rstrip().endswith("data: [DONE]")
        assert len(re.findall(r'"delta": ?\{"content": ?"', text)) == 10
        assert gw.popen.wait(timeout=10) == 0


def test_sighup_reload_applies_a_valid_config_and_keeps_the_old_one_on_error(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    with own_gateway(tmp_path, versioned(demo_backend.url, "v1")) as gw:
        assert config_header(gw.url) == "v1"

        gw.write_config(versioned(demo_backend.url, "v2"))
        gw.signal(signal.SIGHUP)
        assert wait_until(lambda: config_header(gw.url) == "v2", timeout=5)

        gw.write_config(invalid(demo_backend.url))
        gw.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload failed" in gw.stderr(), timeout=5), gw.stderr()
        assert [config_header(gw.url) for _ in range(5)] == ["v2"] * 5


def test_reloads_under_load_fail_no_request(tmp_path: Path, demo_backend: DemoBackend) -> None:
    with own_gateway(tmp_path, versioned(demo_backend.url, "v1")) as gw:
        failures: list[str] = []
        seen: list[str | None] = []
        stop = threading.Event()

        def load() -> None:
            deadline = time.monotonic() + 10
            with httpx.Client(base_url=gw.url, timeout=5) as client:
                for index in range(3000):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    try:
                        if index % 10 == 9:
                            body = {**CHAT_BODY, "stream": True}
                            response = client.post(CHAT, json=body, headers={"x-demo-chunks": "3"})
                            ok = response.text.rstrip().endswith("data: [DONE]")
                        else:
                            response = client.post(CHAT, json=CHAT_BODY)
                            ok = bool(response.json().get("choices"))
                        if response.status_code != 200 or not ok:
                            failures.append(f"{response.status_code}: {response.text[:200]}")
                        seen.append(response.headers.get("x-config"))
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

        worker = threading.Thread(target=load)
        worker.start()
        try:
            assert wait_until(lambda: len(seen) >= 20, timeout=5)
            for config, log_text in [
                (versioned(demo_backend.url, "v2"), "config reloaded"),
                (invalid(demo_backend.url), "reload failed"),
                (versioned(demo_backend.url, "v3"), "config reloaded"),
            ]:
                before = count_in(gw.stderr, log_text)
                gw.write_config(config)
                gw.signal(signal.SIGHUP)
                assert wait_until(lambda t=log_text, b=before: count_in(gw.stderr, t) > b, 5)
                served = len(seen)
                assert wait_until(lambda s=served: len(seen) >= s + 20, timeout=5)
        finally:
            stop.set()
            worker.join(15)
        assert failures == []
        assert {"v1", "v2", "v3"} <= set(seen)
        assert seen[-1] == "v3"


def test_two_workers_serve_and_each_gets_the_reload(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    with own_gateway(tmp_path, versioned(demo_backend.url, "v1"), "--workers", "2") as gw:
        # Both workers must be up before the signal (a worker still importing would die of it).
        assert wait_until(lambda: count_in(gw.stderr, "Application startup complete") >= 2, 15)
        pids = set(re.findall(r"Started server process \[(\d+)\]", gw.stderr()))
        assert len(pids) == 2, gw.stderr()
        for _ in range(10):
            response = httpx.post(gw.url + CHAT, json=CHAT_BODY, timeout=5)
            assert response.status_code == 200 and response.headers.get("x-config") == "v1"

        gw.write_config(versioned(demo_backend.url, "v2"))
        gw.signal(signal.SIGHUP)
        assert wait_until(lambda: count_in(gw.stderr, "config reloaded") >= 2, 10), gw.stderr()
        # New connections spread over both workers; every one must serve the new config.
        headers = [
            httpx.post(gw.url + CHAT, json=CHAT_BODY, timeout=5).headers.get("x-config")
            for _ in range(20)
        ]
        assert headers == ["v2"] * 20
        assert set(re.findall(r"Started server process \[(\d+)\]", gw.stderr())) == pids
