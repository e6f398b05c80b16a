"""Several worker processes sharing one listening socket.

The parent binds the socket, starts the workers, forwards SIGHUP (reload) and SIGTERM
(graceful stop; SIGINT is turned into SIGTERM) to them, and replaces a worker that dies.
Workers that keep dying right after starting (a config that became invalid on disk, a port
problem) are not restarted forever: after a few quick deaths in a row the gateway stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess

from aigw.config.model import AdminConfig, OperationsConfig
from aigw.server.worker import bind_socket, run_worker
from aigw.telemetry.prometheus import MetricsDirectory

log = logging.getLogger("aigw.server")

QUICK_DEATH_SECONDS = 10.0
MAX_QUICK_DEATHS = 5


class Supervisor:
    def __init__(
        self,
        config_path: str,
        host: str,
        port: int,
        workers: int,
        admin: AdminConfig,
        operations: OperationsConfig | None = None,
    ) -> None:
        self.config_path, self.host, self.port, self.workers = config_path, host, port, workers
        self.sock = bind_socket(host, port)
        # The admin API and the operations listener are shared by the workers like the
        # gateway listener.
        self.admin_sock = bind_socket(admin.host, admin.port) if admin.token else None
        self.operations_sock = (
            bind_socket(operations.host, operations.port) if operations is not None else None
        )
        # Every worker writes its metric series here; whichever answers a scrape sums them.
        # Workers are spawned, so they inherit the variable.
        self.metrics_dir = MetricsDirectory()
        os.environ[MetricsDirectory.ENV] = str(self.metrics_dir.path)
        self.context = multiprocessing.get_context("spawn")
        self.signals: list[int] = []
        self.stopping = False
        self.quick_deaths = 0

    def start_worker(self) -> tuple[BaseProcess, float]:
        process = self.context.Process(
            target=run_worker,
            args=(self.config_path, self.host, self.port, self.sock, self.admin_sock),
            kwargs={"operations_sock": self.operations_sock},
        )
        process.start()
        return process, time.monotonic()

    def run(self) -> int:
        for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(handled, lambda sig, _frame: self.signals.append(sig))
        processes = [self.start_worker() for _ in range(self.workers)]
        log.info(
            "started %d workers on %s:%d (pid %d)", self.workers, self.host, self.port, os.getpid()
        )
        exit_code = 0
        while processes:
            self._forward_signals([p for p, _ in processes])
            alive: list[tuple[BaseProcess, float]] = []
            for process, started in processes:
                if process.is_alive():
                    alive.append((process, started))
                    continue
                process.join()
                if process.pid is not None:
                    self.metrics_dir.forget_process(process.pid)
                if self.stopping:
                    continue
                if not self._note_death(process, started):
                    self.stopping, exit_code = True, 1
                    # Every worker still running, checked in this pass or not.
                    self._signal_all([p for p, _ in processes], signal.SIGTERM)
                    continue
                alive.append(self.start_worker())
            processes = alive
            time.sleep(0.1)
        self.sock.close()
        for extra in (self.admin_sock, self.operations_sock):
            if extra is not None:
                extra.close()
        self.metrics_dir.remove()
        return exit_code

    def _note_death(self, process: BaseProcess, started: float) -> bool:
        """Record an unexpected exit; False when workers keep dying right after starting."""
        quick = time.monotonic() - started < QUICK_DEATH_SECONDS
        self.quick_deaths = self.quick_deaths + 1 if quick else 0
        log.warning("worker %s exited with %s", process.pid, process.exitcode)
        if self.quick_deaths >= MAX_QUICK_DEATHS:
            log.error("workers keep exiting right after start; stopping the gateway")
            return False
        time.sleep(min(2.0, 0.1 * 2**self.quick_deaths))  # back off before the next start
        return True

    def _forward_signals(self, processes: list[BaseProcess]) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if sig != signal.SIGHUP:
                self.stopping = True
                sig = signal.SIGTERM
            self._signal_all(processes, sig)

    @staticmethod
    def _signal_all(processes: list[BaseProcess], sig: int) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, sig)


def run_workers(
    config_path: str,
    host: str,
    port: int,
    workers: int,
    admin: AdminConfig,
    operations: OperationsConfig | None = None,
) -> int:
    try:
        supervisor = Supervisor(config_path, host, port, workers, admin, operations)
    except OSError as exc:  # a port in use, an address not on this host
        log.error("cannot listen: %s", exc)
        return 1
    return supervisor.run()
