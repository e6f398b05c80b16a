"""`Listener`: an aiohttp application on a listener of its own (the admin API, the operations
endpoints), on a socket the supervisor bound for every worker or on `host:port`.

Imported only by those two, which are themselves loaded only when configured: the request
path never loads aiohttp.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from aiohttp import web


class Listener:
    def __init__(
        self,
        host: str,
        port: int,
        sock: socket.socket | None,
        *,
        shutdown_timeout: float,
        log: logging.Logger,
        started: str,
    ) -> None:
        self.host, self.port, self.sock = host, port, sock
        self.log, self.started = log, started  # the line logged, with the address for %s
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    async def start(self, app: web.Application, **runner_options: Any) -> None:
        """Serve `app`; `runner_options` go to aiohttp's AppRunner (access logging)."""
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=self.shutdown_timeout, **runner_options
        )
        await runner.setup()
        site: web.BaseSite
        if self.sock is not None:
            site = web.SockSite(runner, self.sock)
        else:
            site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.log.info(self.started, site.name)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
