"""Seeding an aigw target's subscription store before it starts (seed_subscriptions.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.scripts import SetupError, run_script


@dataclass(frozen=True, slots=True)
class SeededStore:
    header: tuple[str, str]  # the subscription key header every request must carry
    subscriptions: int
    seconds: float  # key generation, hashing and the insert, as timed by the script


def seed_store(python: str, config: Path, count: int, cwd: Path) -> SeededStore:
    """Insert `count` subscriptions into the store named by `config` (next to it for SQLite)."""
    args = ["--config", str(config), "--count", str(count)]
    raw = run_script(python, "seed_subscriptions.py", args, cwd, "seeding the subscription store")
    try:
        return SeededStore(
            header=(str(raw["header"]), str(raw["value"])),
            subscriptions=int(raw["count"]),
            seconds=float(raw["seconds"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise SetupError(f"unexpected output from the seeding script: {err!r}") from err
