"""The current runtime, and transactional reloads of it.

A reload builds and starts the complete new runtime first. If anything fails, the old one
keeps serving and the reason is logged. Otherwise new requests get the new runtime at once,
and the old one is closed after its in-flight requests have finished.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aigw.config.errors import ConfigError
from aigw.config.loader import key_vault_refs, load_config_text, parse_yaml, read_config_text
from aigw.errors import DependencyUnavailable
from aigw.logs import set_log_secrets
from aigw.namedvalues.keyvault import KeyVaultCache
from aigw.runtime import Runtime, build_runtime
from aigw.telemetry.prometheus import PrometheusMetrics

log = logging.getLogger("aigw.reload")


class RuntimeHolder:
    def __init__(
        self,
        runtime: Runtime,
        config_path: str | None = None,
        *,
        one_of_many: bool = False,
        key_vault: KeyVaultCache | None = None,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        self.current = runtime
        # The process's Prometheus series: every runtime adds to the same ones.
        self.metrics = metrics
        self.config_path = config_path
        # Last good Key Vault values: a reload fetches only secrets it has never read.
        self.key_vault = key_vault or KeyVaultCache()
        # A worker among several: a config whose limits count in-process would let every
        # worker enforce its own limit, so a reload to one is refused (as `serve` refuses).
        self.one_of_many = one_of_many
        self.draining = False
        self.started = False
        self._lock = asyncio.Lock()
        # Replaced runtimes waiting for their in-flight requests, with the task that waits.
        self._retiring: dict[asyncio.Task[None], Runtime] = {}

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    @property
    def not_ready_reason(self) -> str:
        return "shutting down" if self.draining else "starting"

    async def start(self) -> None:
        await self.current.start()
        self.started = True

    async def close(self) -> None:
        """At shutdown: in-flight requests are done (the server waited for them), so every
        runtime still retiring can be closed now."""
        self.draining = True
        retiring, self._retiring = self._retiring, {}
        for task, runtime in retiring.items():
            task.cancel()
            await runtime.close()
        await self.current.close()

    async def reload(self) -> bool:
        """Reload from the config file; returns whether the new config is now serving."""
        if self.config_path is None:
            log.warning("reload requested but the gateway was not started from a file")
            return False
        if self.draining:
            log.warning("reload requested while shutting down; ignored")
            return False
        async with self._lock:
            path = Path(self.config_path)
            runtime: Runtime | None = None
            try:
                runtime = await self._build(path)
                if self.one_of_many and runtime.counts_in_process:
                    log.error(
                        "config reload refused; still serving the previous config: limits "
                        "need counters.url (Redis) when the gateway runs several workers"
                    )
                    return False
                runtime.keep_counters(self.current)
                await runtime.start()
                runtime.keep_ledger(self.current)
            except ConfigError as exc:
                log.error(
                    "config reload failed; still serving the previous config",
                    extra={"issues": [str(issue) for issue in exc.issues]},
                )
                return False
            except DependencyUnavailable as exc:
                log.error("config reload failed; still serving the previous config: %s", exc)
                if runtime is not None:
                    await runtime.close()
                return False
            except Exception:
                log.exception("config reload failed; still serving the previous config")
                if runtime is not None:
                    await runtime.close()  # partly started: release what it opened
                return False
            if self.draining:  # shutdown began while the new config was being built
                await runtime.close()
                return False
            set_log_secrets(runtime.loaded.secrets)
            old, self.current = self.current, runtime
            task = asyncio.create_task(self._retire(old))
            self._retiring[task] = old
            task.add_done_callback(lambda done: self._retiring.pop(done, None))
            log.info("config reloaded from %s", self.config_path)
            return True

    async def _build(self, path: Path) -> Runtime:
        text = await asyncio.to_thread(read_config_text, path)
        # Key Vault values are fetched here, in the event loop, so the loader stays offline.
        refs = await asyncio.to_thread(lambda: key_vault_refs(_parsed_or_none(text)))
        vault = await self.key_vault.resolve(refs)
        return await asyncio.to_thread(
            lambda: build_runtime(load_config_text(text, str(path), vault), self.metrics)
        )

    async def _retire(self, runtime: Runtime, poll: float = 0.05) -> None:
        # in_flight is a bare counter so the hot path stays cheap; polling it here is fine.
        while runtime.in_flight > 0:  # noqa: ASYNC110
            await asyncio.sleep(poll)
        await runtime.close()


def _parsed_or_none(text: str) -> object:
    try:
        return parse_yaml(text)
    except ConfigError:
        return None  # the load reports it
