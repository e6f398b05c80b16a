"""Active health checks for one backend (`health-check`), next to the passive breaker.

A background task sends `GET {url}{path}` every `interval` seconds (the first at start),
bounded by `timeout` and the backend's connect timeout. A probe passes when its status is in
`expected-status`; a timeout, a refused connection or another status fails it. After
`unhealthy-threshold` failures in a row the backend's breaker is held open (reason
`health-check`, so pools skip it and a direct call gets a 503) until `healthy-threshold`
passes in a row lift the hold. A backend starts healthy: probes take it out, never keep it
from serving at start.

Probes carry nothing of any request: no caller headers, body or credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aigw.backends.breaker import CircuitBreaker
from aigw.clock import Clock
from aigw.config.model import HealthCheckConfig
from aigw.errors import BackendTimeout, GatewayError

log = logging.getLogger("aigw.backends")

# path, timeout → the answer's status; raises a GatewayError when none came.
Probe = Callable[[str, float], Awaitable[int]]


class HealthCheck:
    def __init__(
        self,
        backend_id: str,
        config: HealthCheckConfig,
        breaker: CircuitBreaker,
        probe: Probe,
        clock: Clock,
    ) -> None:
        self.backend_id = backend_id
        self.config = config
        self.breaker = breaker
        self._probe = probe
        self._clock = clock
        self._expected = frozenset(
            status for r in config.expected_status for status in range(r.min, r.max + 1)
        )
        self.healthy = True
        self.failures = 0  # in a row
        self.successes = 0  # in a row
        self.last: tuple[float, str] | None = None  # when, and what the last probe got
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> bool:
        """One probe, judged; returns whether it passed."""
        timeout = self.config.timeout
        try:
            async with asyncio.timeout(timeout):
                status = await self._probe(self.config.path, timeout)
        except (TimeoutError, BackendTimeout):
            return self.record(False, "timeout")
        except GatewayError:
            return self.record(False, "connection-failure")
        return self.record(status in self._expected, f"status {status}")

    def record(self, passed: bool, result: str) -> bool:
        self.last = (self._clock.monotonic(), result)
        if passed:
            self.failures = 0
            self.successes += 1
            if not self.healthy and self.successes >= self.config.healthy_threshold:
                self.healthy = True
                self.breaker.set_healthy()
                log.info(
                    "backend %r is healthy again: %d probe(s) passed",
                    self.backend_id,
                    self.successes,
                    extra={"event": "health-check-passed", "backend": self.backend_id},
                )
            return True
        self.successes = 0
        self.failures += 1
        if self.healthy and self.failures >= self.config.unhealthy_threshold:
            self.healthy = False
            comeback = self.config.interval * self.config.healthy_threshold
            self.breaker.set_unhealthy(result, comeback)
            log.warning(
                "backend %r is out of rotation: %d health probe(s) failed (%s)",
                self.backend_id,
                self.failures,
                result,
                extra={
                    "event": "health-check-failed",
                    "backend": self.backend_id,
                    "cause": result,
                },
            )
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self.check()
            except Exception:
                log.exception("health check of backend %r failed", self.backend_id)
            await asyncio.sleep(max(0.0, self.config.interval - (loop.time() - began)))

    def status(self) -> dict[str, Any]:
        config = self.config
        last = self.last
        return {
            "healthy": self.healthy,
            "path": config.path,
            "interval": config.interval,
            "consecutiveFailures": self.failures,
            "consecutiveSuccesses": self.successes,
            "lastProbe": None if last is None else {"at": self._wall(last[0]), "result": last[1]},
        }

    def _wall(self, moment: float) -> str:
        ago = self._clock.monotonic() - moment
        return (self._clock.now() - timedelta(seconds=ago)).isoformat(timespec="milliseconds")
