"""Named values that change while the gateway runs: files re-read, Key Vault secrets fetched.

The config loader stays synchronous and offline: Key Vault values are fetched beforehand by a
`KeyVaultCache` (at start and before each reload), and a `NamedValueWatcher` triggers the
usual transactional reload when a file or a Key Vault secret changes.
"""

from aigw.namedvalues.keyvault import AzureKeyVaultReader, KeyVaultCache, SecretReader
from aigw.namedvalues.watcher import NamedValueWatcher

__all__ = ["AzureKeyVaultReader", "KeyVaultCache", "NamedValueWatcher", "SecretReader"]
