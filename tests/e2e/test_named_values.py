"""Named values that change under a running gateway: a Kubernetes-style secret mount rotated by
a symlink swap, and Azure Key Vault (a local TLS mock, read by the real SDK). Secret values
are searched for in every log line, response and command output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.admin_helpers import TOKEN_ENV, admin_client, admin_config
from tests.e2e.helpers import CHAT_BODY, RecordingBackend, wait_until
from tests.keyvault_mock import IdentityEndpoint, KeyVaultMock
from tests.support import REPO, DemoBackend, Gateway

FIRST = "canary-first-0123456789"
SECOND = "canary-second-0123456789"


def aigw(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aigw", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def echo_config(demo_url: str, echo_url: str, named_value: dict[str, Any]) -> dict[str, Any]:
    """Admin API on, and an API whose requests carry `{{key}}` in a header to the echo backend."""
    config = admin_config(demo_url)
    config["gateway"]["named-values-refresh"] = 0.2
    config["gateway"]["key-vault-refresh"] = 1
    config["named-values"]["key"] = named_value
    config["backends"]["echo"] = {"url": echo_url, "timeouts": {"connect": 2, "read": 2}}
    config["apis"]["echoai"] = {
        "type": "openai",
        "subscription-required": False,
        "path": "echo",
        "backend": "echo",
        "policies": {"inbound": [{"set-header": {"name": "x-secret", "value": "{{key}}"}}]},
    }
    return config


def seen_by_backend(gateway: Gateway, echo: RecordingBackend) -> str | None:
    reply = httpx.post(f"{gateway.url}/echo/v1/chat/completions", json=CHAT_BODY, timeout=10)
    assert reply.status_code == 200, reply.text
    return str(echo.recorder.requests[-1]["headers"].get("x-secret"))


def assert_never_shown(gateway: Gateway, config: dict[str, Any], *canaries: str) -> None:
    """Logs, gateway errors and admin API answers never carry a secret value."""
    shown = [gateway.stderr(), gateway.stdout()]
    shown.append(httpx.get(f"{gateway.url}/nowhere").text)
    shown.append(httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{").text)
    with admin_client(config) as admin:
        shown += [admin.get(path).text for path in ("/products", "/subscriptions", "/apis")]
    with admin_client(config, token="wrong-token-0123456789") as stranger:
        shown.append(stranger.get("/products").text)
    for canary in canaries:
        assert not any(canary in text for text in shown), canary


class SecretMount:
    """A directory laid out like a Kubernetes secret volume: `key -> ..data/key`, and
    `..data -> ..<version>`, swapped atomically on each update."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0
        root.mkdir()
        (root / "key").symlink_to("..data/key")

    @property
    def path(self) -> Path:
        return self.root / "key"

    def write(self, value: str) -> None:
        self.version += 1
        version = self.root / f"..v{self.version}"
        version.mkdir()
        (version / "key").write_text(value + "\n")
        staged = self.root / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.root / "..data")

    def remove(self) -> None:
        (self.root / "..data").unlink()


@pytest.fixture
def echo() -> Iterator[RecordingBackend]:
    backend = RecordingBackend("echo")
    yield backend
    backend.stop()


def test_a_rotated_secret_file_is_used_within_seconds(
    tmp_path: Path, demo_backend: DemoBackend, echo: RecordingBackend
) -> None:
    mount = SecretMount(tmp_path / "secret")
    mount.write(FIRST)
    config = echo_config(demo_backend.url, echo.url, {"file": str(mount.path), "secret": True})
    gateway = Gateway(tmp_path, config, env=TOKEN_ENV)
    try:
        assert seen_by_backend(gateway, echo) == FIRST
        mount.write(SECOND)
        assert wait_until(lambda: seen_by_backend(gateway, echo) == SECOND, 10)
        assert "named value file changed" in gateway.stderr()
        # Gone (or unreadable): the reload fails, so the last value stays in use, and says why.
        mount.remove()
        assert wait_until(lambda: "cannot read file" in gateway.stderr(), 10)
        assert "still serving the previous config" in gateway.stderr()
        assert seen_by_backend(gateway, echo) == SECOND
        third = "canary-third-0123456789"
        mount.write(third)
        assert wait_until(lambda: seen_by_backend(gateway, echo) == third, 10)
        assert_never_shown(gateway, config, FIRST, SECOND, third)
    finally:
        assert gateway.stop() == 0


def test_every_worker_rereads_the_file(
    tmp_path: Path, demo_backend: DemoBackend, echo: RecordingBackend
) -> None:
    mount = SecretMount(tmp_path / "secret")
    mount.write(FIRST)
    config = echo_config(demo_backend.url, echo.url, {"file": str(mount.path), "secret": True})
    gateway = Gateway(tmp_path, config, "--workers", "2", env=TOKEN_ENV)
    try:
        mount.write(SECOND)
        # New connections spread over both workers: soon every one sends the new value
        # (a worker still starting when the file changed reads the new value at start).
        assert wait_until(
            lambda: {seen_by_backend(gateway, echo) for _ in range(20)} == {SECOND}, 10
        )
    finally:
        assert gateway.stop() == 0


@pytest.fixture
def key_vault(tmp_path: Path) -> Iterator[tuple[KeyVaultMock, dict[str, str]]]:
    vault, identity = KeyVaultMock(tmp_path), IdentityEndpoint()
    yield vault, {**vault.env(), **identity.env(), **TOKEN_ENV}
    vault.stop()
    identity.stop()


def test_key_vault_values_are_fetched_refreshed_and_kept_through_an_outage(
    tmp_path: Path,
    demo_backend: DemoBackend,
    echo: RecordingBackend,
    key_vault: tuple[KeyVaultMock, dict[str, str]],
) -> None:
    vault, env = key_vault
    vault.secrets["openai-key"] = FIRST
    source = {"key-vault": {"vault-url": vault.url, "secret-name": "openai-key"}}
    config = echo_config(demo_backend.url, echo.url, source)
    gateway = Gateway(tmp_path, config, env=env)
    try:
        assert seen_by_backend(gateway, echo) == FIRST
        vault.secrets["openai-key"] = SECOND
        assert wait_until(lambda: seen_by_backend(gateway, echo) == SECOND, 15)
        vault.stop()
        assert wait_until(lambda: "keeping the last good value" in gateway.stderr(), 30)
        assert vault.url in gateway.stderr()
        assert seen_by_backend(gateway, echo) == SECOND
        assert_never_shown(gateway, config, FIRST, SECOND)
    finally:
        assert gateway.stop() == 0


def test_without_a_key_vault_value_the_gateway_does_not_start(
    tmp_path: Path, demo_backend: DemoBackend, key_vault: tuple[KeyVaultMock, dict[str, str]]
) -> None:
    vault, env = key_vault
    source = {"key-vault": {"vault-url": vault.url, "secret-name": "missing"}}
    config = echo_config(demo_backend.url, "http://127.0.0.1:9", source)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    result = aigw("serve", "--config", str(path), "--port", "0", env=env)
    assert result.returncode == 2
    assert "named-values.key" in result.stderr
    assert f"secret 'missing' in {vault.url}" in result.stderr
    vault.stop()  # unreachable: the same, after the client's retries
    result = aigw("serve", "--config", str(path), "--port", "0", env=env)
    assert result.returncode == 2 and vault.url in result.stderr, result.stderr


def test_validate_lists_key_vault_references_and_reads_them_only_when_asked(
    tmp_path: Path, key_vault: tuple[KeyVaultMock, dict[str, str]]
) -> None:
    vault, env = key_vault
    vault.secrets["openai-key"] = FIRST
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""
named-values:
  key: {{key-vault: {{vault-url: "{vault.url}", secret-name: openai-key}}}}
backends: {{b: {{url: "http://127.0.0.1:9"}}}}
apis:
  chat:
    type: openai
    backend: b
    policies:
      inbound:
        - set-header: {{name: api-key, value: "{{{{key}}}}"}}
"""
    )
    offline = aigw("validate", str(config), env=env)
    assert offline.returncode == 0, offline.stderr
    assert f"Key Vault secret 'openai-key' in {vault.url} (not fetched" in offline.stdout
    assert "set-header api-key override" in offline.stdout
    assert "not-fetched" not in offline.stdout  # the stand-in value is masked like a secret
    assert vault.calls.secrets == []
    resolved = aigw("validate", "--resolve", str(config), env=env)
    assert resolved.returncode == 0, resolved.stderr
    assert vault.calls.secrets == ["openai-key"]
    assert FIRST not in resolved.stdout + resolved.stderr


@pytest.fixture
def vault_and_identity(tmp_path: Path) -> Iterator[tuple[KeyVaultMock, IdentityEndpoint]]:
    vault, identity = KeyVaultMock(tmp_path), IdentityEndpoint()
    yield vault, identity
    vault.stop()
    identity.stop()


def identity_config(path: Path, vault_url: str, identity: str) -> None:
    path.write_text(
        f"""
identity: {identity}
named-values:
  key: {{key-vault: {{vault-url: "{vault_url}", secret-name: openai-key}}}}
  other: {{key-vault: {{vault-url: "{vault_url}", secret-name: other-key, client-id: kv-reader}}}}
backends: {{b: {{url: "http://127.0.0.1:9"}}}}
apis:
  chat:
    type: openai
    backend: b
    policies:
      inbound:
        - set-header: {{name: api-key, value: "{{{{key}}}}"}}
        - set-header: {{name: x-other, value: "{{{{other}}}}"}}
"""
    )


def test_key_vault_is_read_with_the_configured_identity(
    tmp_path: Path, vault_and_identity: tuple[KeyVaultMock, IdentityEndpoint]
) -> None:
    vault, identity = vault_and_identity
    vault.secrets.update({"openai-key": FIRST, "other-key": SECOND})
    config = tmp_path / "gateway.yaml"
    identity_config(config, vault.url, "{type: managed, client-id: gateway-id}")
    env = {**vault.env(), **identity.env(), **TOKEN_ENV}
    resolved = aigw("validate", "--resolve", str(config), env=env)
    assert resolved.returncode == 0, resolved.stderr
    assert sorted(vault.calls.secrets) == ["openai-key", "other-key"]
    # The identity's client id, unless the named value names its own.
    asked = {query["client_id"][0] for query in identity.calls.tokens}
    assert asked == {"gateway-id", "kv-reader"}


def test_an_invalid_identity_is_reported_and_no_secret_is_read(
    tmp_path: Path, vault_and_identity: tuple[KeyVaultMock, IdentityEndpoint]
) -> None:
    vault, identity = vault_and_identity
    vault.secrets.update({"openai-key": FIRST, "other-key": SECOND})
    config = tmp_path / "gateway.yaml"
    identity_config(config, vault.url, "{type: kerberos}")
    env = {**vault.env(), **identity.env(), **TOKEN_ENV}
    for command in (["validate", "--resolve"], ["serve", "--port", "0", "--config"]):
        result = aigw(*command, str(config), env=env)
        assert result.returncode == 2, result.stderr
        assert "identity.type" in result.stderr
        assert "named-values.key" in result.stderr and "'identity' section" in result.stderr
    assert vault.calls.secrets == [] and identity.calls.tokens == []
