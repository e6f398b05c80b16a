"""Reloads the gateway when a named value's file or Key Vault secret changes.

Each worker process runs its own watcher next to its own runtime holder, so `--workers N`
needs nothing from the supervisor (N processes each check the files and each read Key Vault).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aigw.config.loader import FileStamp, LoadedConfig, file_stamp

if TYPE_CHECKING:
    from aigw.config.model import GatewaySettings
    from aigw.namedvalues.keyvault import KeyVaultCache
    from aigw.reload import RuntimeHolder

log = logging.getLogger("aigw.namedvalues")


class NamedValueWatcher:
    def __init__(self, holder: RuntimeHolder, key_vault: KeyVaultCache) -> None:
        self.holder = holder
        self.key_vault = key_vault
        self._loaded: LoadedConfig | None = None
        self._seen: dict[str, FileStamp] = {}
        self._vault_due = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._vault_due = time.monotonic() + self._settings().key_vault_refresh
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _settings(self) -> GatewaySettings:
        return self.holder.current.config.gateway

    async def _run(self) -> None:
        while True:
            interval = self._settings().named_values_refresh
            await asyncio.sleep(interval or 1.0)  # 0: files are not watched, Key Vault still is
            try:
                await self.check(files=interval > 0)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watcher die: the next round tries again
                log.exception("checking named values failed")

    async def check(self, files: bool = True) -> bool:
        """One round; returns whether a reload was triggered."""
        changed = files and self.files_changed()
        loaded = self.holder.current.loaded
        if loaded.key_vault and time.monotonic() >= self._vault_due:
            self._vault_due = time.monotonic() + loaded.config.gateway.key_vault_refresh
            changed |= await self.key_vault.refresh(loaded.key_vault)
        if not changed:
            return False
        # A failed reload keeps the old config and logs why; the stamps already taken mean it
        # is retried on the next change, not every round.
        await self.holder.reload()
        return True

    def files_changed(self) -> bool:
        loaded = self.holder.current.loaded
        if loaded is not self._loaded:  # a reload (ours or SIGHUP) read the files afresh
            self._loaded, self._seen = loaded, dict(loaded.files)
        changed = []
        for path, stamp in self._seen.items():
            now = file_stamp(path)
            if now != stamp:
                self._seen[path] = now
                changed.append(path)
        if changed:
            log.info("named value file changed: %s", ", ".join(changed))
        return bool(changed)
