"""Preparing a target before it starts with a helper script run in a child process.

The helper scripts (seeding a subscription store, minting a JWT, preparing a token limit)
import aigw, so they run under the targets' interpreter; the harness only reads the one JSON
line each prints last.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

HARNESS_DIR = Path(__file__).resolve().parent


class SetupError(RuntimeError):
    """A target could not be prepared (message says why); it is recorded as failed."""


class TargetSkippedError(RuntimeError):
    """The target cannot run here (message says why); recorded as skipped, not failed."""


def run_script(
    python: str, script: str, args: list[str], cwd: Path, what: str, timeout: float = 300
) -> dict[str, Any]:
    """Run bench/harness/`script` with `args`; its last stdout line, parsed as a JSON object."""
    # -P: do not put bench/harness first on sys.path, where its modules would shadow
    # top-level names (tools, report, backend, ...) for aigw and its dependencies.
    argv = [python, "-P", str(HARNESS_DIR / script), *args]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SetupError(f"{what} failed: {err!r}") from err
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise SetupError(f"{what} exited {done.returncode}: {tail}")
    try:
        raw = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as err:
        raise SetupError(f"unexpected output from {script}: {err!r}") from err
    if not isinstance(raw, dict):
        raise SetupError(f"unexpected output from {script}: not a JSON object")
    return raw
