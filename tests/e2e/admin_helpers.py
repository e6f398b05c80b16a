"""A gateway with the admin API on, and the `aigw subscriptions` command, for the admin tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.helpers import base_config
from tests.support import REPO, free_port

TOKEN = "admin-token-for-tests-0123456789"
TOKEN_ENV = {"AIGW_TEST_ADMIN_TOKEN": TOKEN}


def admin_config(demo_url: str) -> dict[str, Any]:
    """The typical config plus two products, the SQLite store and the admin API."""
    config = base_config(demo_url)
    config["store"] = {"url": "sqlite:subscriptions.db"}
    config["admin"] = {"port": free_port(), "token": "{{admin-token}}"}
    config["named-values"] = {"admin-token": {"env": "AIGW_TEST_ADMIN_TOKEN", "secret": True}}
    # An API that requires a key, to see admin changes enforced by the same process.
    config["apis"]["keyed"] = {"type": "openai", "path": "keyed", "backend": "demo"}
    config["products"] = {
        "starter": {"display-name": "Starter", "apis": ["openai", "keyed"]},
        "premium": {
            "display-name": "Premium",
            "description": "Every API",
            "apis": ["openai", "azure"],
        },
    }
    return config


def admin_client(config: dict[str, Any], token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=f"http://127.0.0.1:{config['admin']['port']}", headers=headers, timeout=10
    )


def cli(
    config_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`aigw subscriptions --config FILE ARGS…` with the admin token in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "aigw", "subscriptions", "--config", str(config_path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **TOKEN_ENV, **(env or {})},
    )


def cli_json(config_path: Path, *args: str) -> Any:
    result = cli(config_path, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
