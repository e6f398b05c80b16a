"""Stopping the gateway: the drain delay before the listener closes, Ctrl-C on a supervised
gateway, and a supervisor whose workers cannot start any more. Each test starts its own
gateway; the supervised ones run in a session of their own so the test can signal the whole
process group as a terminal's Ctrl-C does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from aigw.telemetry.prometheus import MetricsDirectory
from tests.e2e.helpers import CHAT_BODY, base_config, wait_until
from tests.support import DemoBackend, Gateway, free_port

CHAT = "/v1/chat/completions"
SLOW_STREAM = {"x-demo-chunk-delay-ms": "200", "x-demo-chunks": "10"}  # about 2 s


class Supervised(Gateway):
    """`aigw serve --workers N` as the leader of its own process group."""

    def __init__(self, workdir: Path, config: dict[str, Any], workers: int = 2) -> None:
        super().__init__(workdir, config, "--workers", str(workers), new_session=True)
        # Every worker must be up before a signal (one still importing would die of it).
        started = wait_until(
            lambda: self.stderr().count("Application startup complete") >= workers, 15
        )
        assert started, self.stderr()

    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", self.stderr())]

    def kill_group(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


@contextmanager
def supervised(workdir: Path, config: dict[str, Any]) -> Iterator[Supervised]:
    gw = Supervised(workdir, config)
    try:
        yield gw
    finally:
        gw.kill_group()  # only if a test left it running


def slow_stream(url: str, first_chunk: threading.Event) -> str:
    """A streamed chat completion of about 2 s; sets `first_chunk` once it is under way."""
    body = {**CHAT_BODY, "stream": True}
    with (
        httpx.Client(base_url=url, timeout=10) as client,
        client.stream("POST", CHAT, json=body, headers=SLOW_STREAM) as response,
    ):
        assert response.status_code == 200, response.read()
        received = b""
        for chunk in response.iter_raw():
            received += chunk
            first_chunk.set()
    return received.decode()


def start_stream(pool: ThreadPoolExecutor, url: str) -> Future[str]:
    first_chunk = threading.Event()
    future = pool.submit(slow_stream, url, first_chunk)
    assert first_chunk.wait(10), future.exception() if future.done() else "no first chunk"
    return future


def assert_complete(stream_text: str) -> None:
    assert stream_text.rstrip().endswith("data: [DONE]"), stream_text[-300:]
    assert len(re.findall(r'"delta": ?\{"content": ?"', stream_text)) == 10, stream_text


def test_drain_delay_keeps_readyz_at_503_while_a_stream_finishes(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    config = base_config(demo_backend.url)
    config["gateway"]["drain-delay"] = 1
    gw = Gateway(tmp_path, config)
    try:
        with ThreadPoolExecutor(1) as pool:
            stream = start_stream(pool, gw.url)
            gw.signal(signal.SIGTERM)
            signalled = time.monotonic()
            probes: list[tuple[float, int | None]] = []  # (seconds after SIGTERM, status)
            while time.monotonic() - signalled < 4:
                try:
                    status: int | None = httpx.get(gw.url + "/readyz", timeout=1).status_code
                except httpx.TransportError:
                    status = None  # the listener is closed
                probes.append((time.monotonic() - signalled, status))
                if status is None:
                    break
                time.sleep(0.05)
            text = stream.result(timeout=10)
        answered = [(at, status) for at, status in probes if status is not None]
        assert answered and {status for _, status in answered} == {503}, probes
        # Refused only after about the drain delay, and before the stream ended.
        assert answered[-1][0] >= 0.7, probes
        assert probes[-1][1] is None and probes[-1][0] < 2.5, probes
        assert_complete(text)
        assert gw.popen.wait(timeout=10) == 0
    finally:
        gw.stop()
    assert "Traceback" not in gw.stderr()


def test_a_stream_that_ends_during_the_drain_is_in_the_metrics(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    """Counted in memory, written once a second and at the very end: after the requests the
    shutdown waited for, not before."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    config = base_config(demo_backend.url)
    config["operations"] = {"host": "127.0.0.1", "port": free_port()}
    gw = Gateway(tmp_path, config, env={**os.environ, MetricsDirectory.ENV: str(metrics)})
    try:
        with ThreadPoolExecutor(1) as pool:
            stream = start_stream(pool, gw.url)
            gw.signal(signal.SIGTERM)
            assert_complete(stream.result(timeout=10))
        assert gw.popen.wait(timeout=10) == 0
    finally:
        gw.stop()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics))
    found = {
        (sample.name, sample.labels.get("status")): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert found[("aigw_requests_total", "200")] == 1
    assert found[("aigw_time_to_first_token_seconds_count", "200")] == 1


@pytest.mark.parametrize("target", ["process-group", "supervisor"])
def test_ctrl_c_on_a_supervised_gateway_lets_a_stream_finish_and_exits_0(
    tmp_path: Path, demo_backend: DemoBackend, target: str
) -> None:
    with supervised(tmp_path, base_config(demo_backend.url)) as gw:
        with ThreadPoolExecutor(1) as pool:
            stream = start_stream(pool, gw.url)
            if target == "process-group":
                os.killpg(gw.popen.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            else:
                os.kill(gw.popen.pid, signal.SIGINT)
            text = stream.result(timeout=10)
        assert_complete(text)
        assert gw.popen.wait(timeout=15) == 0, gw.stderr()
        assert "Traceback" not in gw.stderr()


@pytest.mark.parametrize("victim", ["first-started", "last-started"])
def test_workers_that_cannot_restart_stop_the_supervisor_with_exit_1(
    tmp_path: Path, demo_backend: DemoBackend, victim: str
) -> None:
    # About 7 s each: five replacement workers start (~1 s) and die, with a growing back-off.
    with supervised(tmp_path, base_config(demo_backend.url)) as gw:
        # The supervisor starts its workers one after the other, so pids are in start order.
        pids = sorted(gw.worker_pids())
        assert len(pids) == 2, gw.stderr()
        if victim == "last-started":
            pids.reverse()
        broken = base_config(demo_backend.url)
        broken["policies"] = {"inbound": [{"no-such-policy": {}}]}
        gw.write_config(broken)
        killed = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        gave_up = wait_until(lambda: "keep exiting" in gw.stderr(), timeout=30, interval=0.2)
        assert gave_up, f"the supervisor kept restarting workers:\n{gw.stderr()[-3000:]}"
        # Then the surviving worker is stopped too (a graceful stop of an idle worker is quick).
        remaining = max(1.0, min(10.0, 30 - (time.monotonic() - killed)))
        try:
            code = gw.popen.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            alive = [pid for pid in pids[1:] if _alive(pid)]
            pytest.fail(f"the supervisor gave up but did not exit; workers still up: {alive}")
        assert code == 1, gw.stderr()
        assert time.monotonic() - killed < 30


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
