"""The Key Vault cache with a fake reader: first reads, last good values, change detection."""

from __future__ import annotations

import logging

import pytest

from aigw.config.errors import ConfigError
from aigw.config.loader import KeyVaultRef, key_vault_refs, load_config_text, parse_yaml
from aigw.namedvalues import KeyVaultCache

VAULT = "https://myvault.vault.azure.net"
REF = KeyVaultRef(VAULT, "openai-key")
CANARY = "sk-canary-value-0123456789"


class FakeReader:
    def __init__(self) -> None:
        self.values: dict[KeyVaultRef, str] = {}
        self.down = False
        self.reads: list[KeyVaultRef] = []

    async def read(self, ref: KeyVaultRef) -> str:
        self.reads.append(ref)
        if self.down:
            raise ConnectionError("Cannot connect to host myvault.vault.azure.net:443")
        return self.values[ref]


async def test_resolve_reads_once_and_then_serves_the_cache() -> None:
    reader = FakeReader()
    reader.values[REF] = CANARY
    cache = KeyVaultCache(reader)
    assert await cache.resolve({"k": REF, "same": REF}) == {REF: CANARY}
    assert await cache.resolve({"k": REF}) == {REF: CANARY}
    assert reader.reads == [REF]  # one read for two names, none for the second resolve


async def test_no_value_at_all_is_an_error_naming_the_vault_and_secret() -> None:
    reader = FakeReader()
    reader.down = True
    with pytest.raises(ConfigError) as caught:
        await KeyVaultCache(reader).resolve({"openai": REF})
    (issue,) = caught.value.issues
    assert issue.path == "named-values.openai"
    assert VAULT in issue.message and "'openai-key'" in issue.message
    assert "ConnectionError" in issue.message


async def test_refresh_keeps_the_last_good_value_and_reports_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = FakeReader()
    reader.values[REF] = CANARY
    cache = KeyVaultCache(reader)
    await cache.resolve({"k": REF})
    assert await cache.refresh({"k": REF}) is False  # same value: nothing to reload
    reader.down = True
    with caplog.at_level(logging.WARNING, "aigw.namedvalues"):
        assert await cache.refresh({"k": REF}) is False
    assert "keeping the last good value" in caplog.text and "openai-key" in caplog.text
    assert CANARY not in caplog.text
    assert await cache.resolve({"k": REF}) == {REF: CANARY}
    reader.down = False
    reader.values[REF] = "sk-rotated-value-0123456789"
    assert await cache.refresh({"k": REF}) is True
    assert cache.values[REF] == "sk-rotated-value-0123456789"


def test_key_vault_named_values_are_secret_and_must_be_fetched_first() -> None:
    text = f"""
named-values:
  key:
    key-vault: {{vault-url: "{VAULT}/", secret-name: openai-key, client-id: abc}}
policies:
  inbound:
    - set-header: {{name: api-key, value: "{{{{key}}}}"}}
"""
    refs = key_vault_refs(parse_yaml(text))
    assert refs == {"key": KeyVaultRef(VAULT, "openai-key", "abc")}
    loaded = load_config_text(text, vault={refs["key"]: CANARY})
    assert loaded.secrets == frozenset({CANARY})  # secret without `secret: true`
    assert loaded.key_vault == refs
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert "has not been fetched" in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        {"vault-url": "http://myvault.vault.azure.net", "secret-name": "x"},
        {"vault-url": VAULT, "secret-name": "no_underscores"},
        {"vault-url": VAULT},
    ],
)
def test_key_vault_references_are_checked(source: dict[str, str]) -> None:
    from aigw.config.model import NamedValueConfig

    with pytest.raises(ValueError, match="key-vault"):
        NamedValueConfig.model_validate({"key-vault": source})


def test_a_named_value_has_one_source() -> None:
    from aigw.config.model import NamedValueConfig

    with pytest.raises(ValueError, match="exactly one"):
        NamedValueConfig.model_validate(
            {"env": "X", "key-vault": {"vault-url": VAULT, "secret-name": "x"}}
        )
