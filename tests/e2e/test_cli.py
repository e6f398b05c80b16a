"""The `aigw` command as an operator uses it: validate, reload through a pid file, secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.helpers import CHAT_BODY, base_config, wait_until
from tests.support import REPO, DemoBackend, Gateway


def aigw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigw", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, **(env or {})),
    )


def test_validate_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        """
backends: {b: {url: "http://127.0.0.1:9"}}
apis:
  chat:
    type: openai
    backend: missing
    policies:
      inbound:
        - set-backend-service: {backend-id: nowhere}
        - set-header: {name: x, value: '@(context.Request.Foo)'}
"""
    )
    result = aigw("validate", str(config))
    assert result.returncode == 2
    assert "3 problem(s) found" in result.stderr
    assert "apis.chat.backend: backend 'missing' is not defined" in result.stderr
    assert "apis.chat.policies.inbound[0].set-backend-service" in result.stderr
    assert 'unknown member "Foo"' in result.stderr


def test_validate_prints_the_compiled_chain_of_each_operation() -> None:
    result = aigw("validate", "examples/quickstart.yaml")
    assert result.returncode == 0, result.stderr
    assert "POST /openai/deployments/{deployment-id}/chat/completions" in result.stdout
    assert "set-header x-served-by override" in result.stdout


def test_validate_never_prints_a_secret_named_value(tmp_path: Path) -> None:
    config = tmp_path / "secret.yaml"
    config.write_text(
        """
named-values:
  key: {env: AIGW_TEST_BACKEND_KEY, secret: true}
backends: {b: {url: "http://127.0.0.1:9"}}
apis:
  chat:
    type: openai
    backend: b
    policies:
      inbound:
        - set-header: {name: api-key, value: "{{key}}"}
        - set-header: {name: x-copy, value: "{{key}}"}
"""
    )
    result = aigw("validate", str(config), env={"AIGW_TEST_BACKEND_KEY": "sk-abcdef-123456"})
    assert result.returncode == 0, result.stderr
    assert "sk-abcdef-123456" not in result.stdout + result.stderr


def test_reload_command_signals_the_gateway_from_its_pid_file(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    pid_file = tmp_path / "aigw.pid"
    config: dict[str, Any] = base_config(demo_backend.url)
    gateway = Gateway(tmp_path, config, "--pid-file", str(pid_file))
    try:
        assert int(pid_file.read_text()) == gateway.pid
        config["policies"] = {"outbound": [{"set-header": {"name": "x-config", "value": "v2"}}]}
        gateway.write_config(config)
        result = aigw("reload", "--pid-file", str(pid_file), "--config", str(gateway.config_path))
        assert result.returncode == 0, result.stderr

        def reloaded() -> bool:
            reply = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT_BODY)
            return reply.headers.get("x-config") == "v2"

        assert wait_until(reloaded)
        # An invalid file is refused by the command itself, and nothing is signalled.
        gateway.config_path.write_text(yaml.safe_dump({"apis": {"x": {"type": "nope"}}}))
        refused = aigw("reload", "--pid-file", str(pid_file), "--config", str(gateway.config_path))
        assert refused.returncode == 2
        assert "apis.x.type" in refused.stderr
        assert "config reloaded" in gateway.stderr()
        assert gateway.stderr().count("config reloaded") == 1
    finally:
        gateway.stop()
