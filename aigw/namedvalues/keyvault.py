"""Key Vault named values: a cache of last good values in front of a small reader interface."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from aigw.config.errors import ConfigError, ConfigIssue
from aigw.config.loader import (
    KeyVaultRef,
    LoadedConfig,
    key_vault_refs,
    load_config_text,
    parse_yaml,
    read_config_text,
)

log = logging.getLogger("aigw.namedvalues")


class SecretReader(Protocol):
    async def read(self, ref: KeyVaultRef) -> str:
        """The secret's current value; raises if it cannot be read."""
        ...


class AzureKeyVaultReader:
    """Reads with the gateway's identity: the credential the config's `identity` section
    selects (as for backend tokens), as the user-assigned identity the reference's
    `client-id` names if it has one. Clients live for one read so nothing is tied to an event
    loop: the values are fetched at start in a short-lived loop, then in the server's."""

    async def read(self, ref: KeyVaultRef) -> str:
        from azure.keyvault.secrets.aio import SecretClient

        from aigw.identity.azure import azure_credential

        if ref.identity is None:  # `KeyVaultCache` never asks; the load reports why
            raise LookupError("the 'identity' section is invalid")
        credential = azure_credential(ref.identity, ref.client_id)
        async with credential, SecretClient(ref.vault_url, credential) as client:
            secret = await client.get_secret(ref.secret_name)
        if secret.value is None:
            raise LookupError("the secret has no value")
        return secret.value


def _reason(exc: BaseException) -> str:
    """A short reason for a failed read (SDK messages run over many lines)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class KeyVaultCache:
    """Last good value per secret. `resolve` fetches only what it has never had (start, and
    reloads that add a reference); `refresh` re-reads everything and keeps the last good value
    of a secret it cannot read."""

    def __init__(self, reader: SecretReader | None = None, timeout: float = 30.0) -> None:
        self.reader: SecretReader = reader or AzureKeyVaultReader()
        self.timeout = timeout
        self.values: dict[KeyVaultRef, str] = {}

    async def _read(self, ref: KeyVaultRef) -> str | BaseException:
        try:
            return await asyncio.wait_for(self.reader.read(ref), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc

    async def resolve(self, refs: Mapping[str, KeyVaultRef]) -> dict[KeyVaultRef, str]:
        """A value for every reference, or a ConfigError naming each secret without one.
        A reference whose identity section is invalid is not read and gets no value: loading
        the config then reports that section's problems."""
        wanted = {ref for ref in refs.values() if ref.identity is not None}
        missing = sorted(wanted - self.values.keys(), key=str)
        results = await asyncio.gather(*(self._read(ref) for ref in missing))
        failed: dict[KeyVaultRef, str] = {}
        for ref, result in zip(missing, results, strict=True):
            if isinstance(result, str):
                self.values[ref] = result
            else:
                failed[ref] = _reason(result)
        if failed:
            raise ConfigError(
                [
                    ConfigIssue(f"named-values.{name}", f"cannot read Key Vault {ref}: {reason}")
                    for name, ref in refs.items()
                    if (reason := failed.get(ref)) is not None
                ]
            )
        return {ref: self.values[ref] for ref in wanted}

    async def refresh(self, refs: Mapping[str, KeyVaultRef]) -> bool:
        """Re-read every referenced secret; returns whether any value changed."""
        unique = sorted(set(refs.values()), key=str)
        results = await asyncio.gather(*(self._read(ref) for ref in unique))
        changed = False
        for ref, result in zip(unique, results, strict=True):
            if isinstance(result, str):
                changed |= self.values.get(ref) != result
                self.values[ref] = result
            else:
                log.warning(
                    "cannot refresh Key Vault %s; keeping the last good value: %s",
                    ref,
                    _reason(result),
                )
        if changed:
            log.info("a Key Vault named value changed")
        return changed


def load_config_fetching(path: str, cache: KeyVaultCache) -> LoadedConfig:
    """Load a config file at start (no event loop running yet): its Key Vault values are
    fetched first, in a short-lived loop, with the identity the same file selects. Raises
    ConfigError if one cannot be read, or if that identity section is invalid."""
    text = read_config_text(path)
    refs = key_vault_refs(parse_yaml(text))
    vault = asyncio.run(cache.resolve(refs)) if refs else {}
    return load_config_text(text, path, vault)
