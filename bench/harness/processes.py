"""Child processes of the harness: free ports, start/stop in own groups, readiness, RSS."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Ask the kernel for a free loopback port (closed again before the child binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """Status code of a GET, or None if nothing answered."""
    assert url.startswith(f"http://{LOOPBACK}:"), url  # the benchmark only ever talks to loopback
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


@dataclass
class Child:
    """A started process with its own process group and a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole group, then SIGKILL whatever is left after `grace` seconds."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        # Workers of a pre-forking server may outlive the leader; the group id is the leader pid.
        _signal_group(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class ProcessRegistry:
    """Every child the harness started, so that one `finally` can stop them all."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            started_at = time.perf_counter()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # own group: Ctrl-C goes to us, we stop it in order
            )
        child = Child(name=name, proc=proc, log_path=log_path, started_at=started_at)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()


class NotReadyError(RuntimeError):
    """A target did not answer its readiness probe in time (message says why)."""


def wait_ready(child: Child, url: str, timeout: float, interval: float = 0.01) -> float:
    """Poll `url` until it returns 200; return ms from process start to ready."""
    deadline = child.started_at + timeout
    while time.perf_counter() < deadline:
        if not child.alive():
            code = child.proc.returncode
            raise NotReadyError(
                f"exited with code {code}: {child.log_tail(1)} (log: {child.log_path})"
            )
        if http_status(url, timeout=0.5) == 200:
            return (time.perf_counter() - child.started_at) * 1000.0
        time.sleep(interval)
    last = child.log_tail(1) or "no output"
    raise NotReadyError(f"not ready within {timeout:.0f} s: {last} (log: {child.log_path})")


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True, slots=True)
class RssSample:
    total_mb: float  # the process and all its descendants
    largest_mb: float  # the biggest single process: a worker's footprint
    processes: int


def rss_tree(pid: int) -> RssSample:
    """RSS of `pid` and its descendants, read from /proc (no psutil)."""
    tree = _children_of()
    pids, queue = [pid], [pid]
    while queue and len(pids) < 10_000:
        for kid in tree.get(queue.pop(), []):
            pids.append(kid)
            queue.append(kid)
    sizes = [_rss_kb(p) for p in pids]
    live = [s for s in sizes if s > 0]
    return RssSample(
        total_mb=round(sum(live) / 1024.0, 1),
        largest_mb=round(max(live, default=0) / 1024.0, 1),
        processes=len(live),
    )
