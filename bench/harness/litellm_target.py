"""Optional comparison: the LiteLLM proxy in its own venv, pointed at the same nginx backend."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from harness.scripts import TargetSkippedError

LITELLM_SPEC = "litellm[proxy]==1.108.7"
LITELLM_VERSION = LITELLM_SPEC.rsplit("==", 1)[1]
MASTER_KEY = "sk-bench-master-key"
MODEL_NAME = "gpt-4o-mini"  # the model named in payloads/request.json


def _installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_litellm(venv: Path, base_python: str, log_path: Path) -> Path:
    """Create `venv` and pip-install LiteLLM there unless the pinned version is already in it."""
    if _installed_version(venv) == LITELLM_VERSION:
        return venv / "bin" / "litellm"
    print(f"installing {LITELLM_SPEC} into {venv} (takes a few minutes) ...", flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        for argv in (
            [base_python, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", LITELLM_SPEC],
        ):
            try:
                done = subprocess.run(
                    argv, stdout=log, stderr=subprocess.STDOUT, timeout=1800, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                raise TargetSkippedError(f"{argv[0]} failed: {err!r}") from err
            if done.returncode != 0:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                why = " ".join(tail) or f"exit code {done.returncode}"
                raise TargetSkippedError(f"install failed ({' '.join(argv[-2:])}): {why}")
    if _installed_version(venv) != LITELLM_VERSION:
        raise TargetSkippedError(f"litellm {LITELLM_VERSION} not importable after install")
    return venv / "bin" / "litellm"


def write_litellm_config(path: Path, backend_url: str) -> Path:
    config = {
        "model_list": [
            {
                "model_name": MODEL_NAME,
                "litellm_params": {
                    "model": "openai/demo",
                    "api_base": f"{backend_url}/v1",
                    "api_key": "x",
                },
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"set_verbose": False, "telemetry": False},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def litellm_argv(litellm: Path, config: Path, port: int) -> list[str]:
    return [
        str(litellm),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


def litellm_env() -> dict[str, str]:
    """No network at run time: local model cost map, no telemetry, quiet logs."""
    return dict(
        os.environ,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        DISABLE_SCHEMA_UPDATE="True",
    )
