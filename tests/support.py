"""Real processes on loopback for end-to-end tests: the gateway and the demo model backend."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    url: str, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Process:
    """A child process whose output goes to files, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        args: list[str],
        workdir: Path,
        name: str,
        *,
        new_session: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.stdout_path = workdir / f"{name}.out"
        self.stderr_path = workdir / f"{name}.err"
        self.popen = subprocess.Popen(
            args,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
            # Its own process group, for tests that signal it as a terminal would.
            start_new_session=new_session,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class DemoBackend(Process):
    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        super().__init__(
            [sys.executable, "-m", "aigw", "demo-backend", "--port", str(self.port), *extra],
            workdir,
            f"demo-{self.port}",
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(f"{self.url}/v1/models", process=self.popen)


class Gateway(Process):
    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        *extra: str,
        new_session: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.config_path = workdir / f"gateway-{self.port}.yaml"
        self.write_config(config)
        super().__init__(
            [
                sys.executable,
                "-m",
                "aigw",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
                *extra,
            ],
            workdir,
            f"gateway-{self.port}",
            new_session=new_session,
            env=env,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(f"{self.url}/readyz", process=self.popen)

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
