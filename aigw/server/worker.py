"""One gateway worker: a uvicorn server on a given socket, with our signal handling.

SIGTERM/SIGINT: readiness fails at once, then uvicorn stops accepting and lets in-flight
requests and streams finish within the grace period. SIGHUP: transactional config reload.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from collections.abc import Generator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from aigw.app import Gateway
from aigw.config.loader import load_config
from aigw.logs import configure_logging
from aigw.reload import RuntimeHolder
from aigw.runtime import build_runtime
from aigw.server.protocol import EdgeLimits, GatewayHttpProtocol

log = logging.getLogger("aigw.server")


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, holder: RuntimeHolder) -> None:
        super().__init__(config)
        self.holder = holder
        self._tasks: set[asyncio.Task[bool]] = set()

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        for sig in handled:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGHUP:
            task = asyncio.get_running_loop().create_task(self.holder.reload())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        log.info("received %s: draining", signal.Signals(sig).name)
        self.holder.draining = True
        self.handle_exit(sig, None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.holder.draining = True
        super().handle_exit(sig, frame)


def build_server(
    config_path: str, host: str | None, port: int | None, sock: socket.socket | None = None
) -> GatewayServer:
    loaded = load_config(config_path)
    runtime = build_runtime(loaded)
    settings = loaded.config.gateway
    configure_logging(loaded.secrets)
    limits = settings.limits
    EdgeLimits.max_header_count = limits.max_header_count
    EdgeLimits.max_header_bytes = limits.max_header_bytes
    EdgeLimits.header_timeout = limits.header_timeout
    EdgeLimits.body_timeout = limits.body_timeout
    holder = RuntimeHolder(runtime, config_path)
    uv_config = uvicorn.Config(
        Gateway(holder),
        host=host or settings.host,
        port=settings.port if port is None else port,
        loop="uvloop",
        http=GatewayHttpProtocol,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        # X-Forwarded-For is never trusted implicitly: ip-filter must see the real peer.
        proxy_headers=False,
        date_header=True,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=int(settings.shutdown_grace_period),
        backlog=4096,
    )
    server = GatewayServer(uv_config, holder)
    server.aigw_socket = sock  # type: ignore[attr-defined]
    return server


def tune_garbage_collector() -> None:
    """Move everything built at start (config, compiled chains, imported modules) out of the
    collector's sight, and collect the young generation less often: with the defaults, full
    collections over those long-lived objects cost ~9 ms at the 99th percentile under load.
    Measured in bench/: p99 at c=16 from ~10 ms to ~2.5 ms and ~9 % more throughput."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run_worker(
    config_path: str, host: str | None, port: int | None, sock: socket.socket | None = None
) -> None:
    # A reload signal during start-up must not kill the worker; it reads the file anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    server = build_server(config_path, host, port, sock)
    tune_garbage_collector()
    server.run(sockets=[sock] if sock is not None else None)
