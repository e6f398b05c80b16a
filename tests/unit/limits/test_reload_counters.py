"""A reload keeps the in-process counters: limits and quotas must not start over whenever the
config changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from aigw.config.loader import load_config
from aigw.limits.memory_store import MemoryCounterStore
from aigw.reload import RuntimeHolder
from aigw.runtime import Runtime, build_runtime

NOW = 1_767_225_600.0


def write(path: Path, tokens_per_minute: int) -> None:
    limit = {
        "llm-token-limit": {
            "counter-key": "k",
            "tokens-per-minute": tokens_per_minute,
            "token-quota": 1000,
            "token-quota-period": "Monthly",
            "estimate-prompt-tokens": False,
        }
    }
    config = {
        "backends": {"demo": {"type": "demo"}},
        "apis": {
            "chat": {
                "type": "openai",
                "backend": "demo",
                "subscription-required": False,
                "policies": {"inbound": [limit]},
            }
        },
    }
    path.write_text(yaml.safe_dump(config))


def store_of(runtime: Runtime) -> MemoryCounterStore:
    (store,) = [r for r in runtime.resources if isinstance(r, MemoryCounterStore)]
    return store


async def test_a_reload_keeps_the_counters_of_the_in_process_store(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    write(path, 100)
    holder = RuntimeHolder(build_runtime(load_config(path)), str(path))
    await holder.start()
    try:
        old = store_of(holder.current)
        await old.window_take("tpm:k", 60.0, 100, 60, NOW)
        await old.period_take("tokens:k", NOW - 10, NOW + 10, 1000, 600, NOW)
        write(path, 200)  # any change
        assert await holder.reload() is True
        new = store_of(holder.current)
        assert new is not old
        # A request of the old runtime still in flight settles where the new ones count.
        await old.window_adjust("tpm:k", 60.0, NOW, 10, NOW + 1)
        await asyncio.sleep(0.2)  # the old runtime retires (and closes its store)
        assert (await new.window_peek("tpm:k", 60.0, 200, NOW + 2)).used == 70
        quota = await new.period_take("tokens:k", NOW - 10, NOW + 10, 1000, 0, NOW + 2)
        assert quota.used == 600
    finally:
        await holder.close()
