"""Several worker processes sharing one listening socket.

The parent binds the socket, starts the workers, forwards SIGHUP (reload) and SIGTERM/SIGINT
(graceful stop) to them, and replaces a worker that dies unexpectedly.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess

from aigw.server.worker import run_worker

log = logging.getLogger("aigw.server")


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def run_workers(config_path: str, host: str, port: int, workers: int) -> None:
    sock = bind_socket(host, port)
    context = multiprocessing.get_context("spawn")
    stopping = False
    signals: list[int] = []

    def start() -> BaseProcess:
        process = context.Process(
            target=run_worker, args=(config_path, host, port, sock), daemon=False
        )
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(handled, lambda s, _f: signals.append(s))
    log.info("started %d workers on %s:%d (pid %d)", workers, host, port, os.getpid())
    while processes:
        while signals:
            sig = signals.pop(0)
            stopping = stopping or sig != signal.SIGHUP
            for process in processes:
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, sig)
        for index, process in enumerate(processes):
            if not process.is_alive():
                process.join()
                if stopping:
                    processes[index] = None  # type: ignore[call-overload]
                else:
                    log.warning(
                        "worker %s exited with %s; starting a new one",
                        process.pid,
                        process.exitcode,
                    )
                    processes[index] = start()
        processes = [p for p in processes if p is not None]
        time.sleep(0.1)
    sock.close()
