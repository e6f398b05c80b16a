"""A worker among several refuses a reload to limits that would count per process."""

from __future__ import annotations

from pathlib import Path

import yaml

from aigw.config.loader import load_config
from aigw.reload import RuntimeHolder
from aigw.runtime import build_runtime

LIMIT = {
    "llm-token-limit": {
        "counter-key": "k",
        "tokens-per-minute": 100,
        "estimate-prompt-tokens": False,
    }
}


def write(path: Path, policies: list[object]) -> None:
    config = {
        "backends": {"demo": {"type": "demo"}},
        "apis": {
            "chat": {
                "type": "openai",
                "backend": "demo",
                "subscription-required": False,
                "policies": {"inbound": policies},
            }
        },
    }
    path.write_text(yaml.safe_dump(config))


async def test_a_reload_to_in_process_counters_is_refused_among_several_workers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.yaml"
    write(path, [])
    first = build_runtime(load_config(path))
    holder = RuntimeHolder(first, str(path), one_of_many=True)
    await holder.start()
    try:
        write(path, [LIMIT])
        assert await holder.reload() is False
        assert holder.current is first
        single = RuntimeHolder(build_runtime(load_config(tmp_path / "gateway.yaml")), str(path))
        assert single.current.counts_in_process
    finally:
        await holder.close()
