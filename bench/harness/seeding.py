"""Seeding an aigw target's subscription store before it starts, in a child process.

The seeding script imports aigw, so it runs under the targets' interpreter; the harness
only reads the one JSON line it prints.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

SEED_SCRIPT = Path(__file__).resolve().parent / "seed_subscriptions.py"


class SeedError(RuntimeError):
    """The store could not be seeded (message says why); the target is recorded as failed."""


@dataclass(frozen=True, slots=True)
class SeededStore:
    header: tuple[str, str]  # the subscription key header every request must carry
    subscriptions: int
    seconds: float  # key generation, hashing and the insert, as timed by the script


def seed_store(python: str, config: Path, count: int, cwd: Path) -> SeededStore:
    """Insert `count` subscriptions into the store named by `config` (next to it for SQLite)."""
    # -P: do not put bench/harness first on sys.path, where its modules would shadow
    # top-level names (tools, report, backend, ...) for aigw and its dependencies.
    argv = [python, "-P", str(SEED_SCRIPT), "--config", str(config), "--count", str(count)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, cwd=cwd, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SeedError(f"seeding the subscription store failed: {err!r}") from err
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise SeedError(f"seeding the subscription store exited {done.returncode}: {tail}")
    try:
        raw = json.loads(done.stdout.strip().splitlines()[-1])
        return SeededStore(
            header=(str(raw["header"]), str(raw["value"])),
            subscriptions=int(raw["count"]),
            seconds=float(raw["seconds"]),
        )
    except (IndexError, KeyError, TypeError, ValueError) as err:
        raise SeedError(f"unexpected output from the seeding script: {err!r}") from err
