"""Key Vault named values are read with the identity the same config selects: references
carry its `identity` section, the reader builds that credential (the one backend tokens use),
and an invalid section means nothing is read and the load reports the section."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aigw.config.errors import ConfigError
from aigw.config.loader import KeyVaultRef, key_vault_refs, load_config_text, parse_yaml
from aigw.config.model import IdentityConfig
from aigw.namedvalues import AzureKeyVaultReader, KeyVaultCache
from tests.identity_endpoint import IdentityEndpoint, IdentityServer, imds_env

VAULT = "https://myvault.vault.azure.net"
CANARY = "sk-canary-value-0123456789"


def config(identity: str, client_id: str = "") -> str:
    client = f", client-id: {client_id}" if client_id else ""
    return f"""
{identity}
named-values:
  key: {{key-vault: {{vault-url: "{VAULT}", secret-name: openai-key{client}}}}}
  gateway-client: {{env: TEST_GATEWAY_CLIENT_ID}}
policies:
  inbound:
    - set-header: {{name: api-key, value: "{{{{key}}}}"}}
"""


class FakeReader:
    def __init__(self) -> None:
        self.reads: list[KeyVaultRef] = []

    async def read(self, ref: KeyVaultRef) -> str:
        self.reads.append(ref)
        return CANARY


def test_references_carry_the_configs_identity() -> None:
    text = config("identity: {type: workload, tenant-id: t1, client-id: gw, token-file: /f}")
    (ref,) = key_vault_refs(parse_yaml(text)).values()
    assert ref.identity == IdentityConfig(
        type="workload", tenant_id="t1", client_id="gw", token_file="/f"
    )
    assert ref.client_id is None
    assert key_vault_refs(parse_yaml(config(""))) == {"key": KeyVaultRef(VAULT, "openai-key")}


def test_a_changed_identity_is_a_new_reference_so_a_reload_reads_afresh() -> None:
    managed = key_vault_refs(parse_yaml(config("identity: {type: managed}")))["key"]
    development = key_vault_refs(parse_yaml(config("identity: {type: development}")))["key"]
    assert managed != development and str(managed) == str(development)


def test_named_values_in_the_identity_section_are_substituted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_GATEWAY_CLIENT_ID", "from-env")
    text = config('identity: {type: managed, client-id: "{{gateway-client}}"}')
    (ref,) = key_vault_refs(parse_yaml(text)).values()
    assert ref.identity == IdentityConfig(type="managed", client_id="from-env")


@pytest.mark.parametrize(
    ("identity", "reported"),
    [
        ("identity: {type: kerberos}", "identity.type"),
        ("identity: {type: managed, colour: blue}", "identity.colour"),
        ('identity: {client-id: "{{key}}"}', "named-values.key"),  # read with itself
    ],
)
async def test_an_invalid_identity_reads_nothing_and_the_load_says_why(
    identity: str, reported: str
) -> None:
    text = config(identity)
    refs = key_vault_refs(parse_yaml(text))
    assert refs["key"].identity is None
    reader = FakeReader()
    vault = await KeyVaultCache(reader).resolve(refs)
    assert vault == {} and reader.reads == []
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, vault=vault)
    paths = {issue.path for issue in caught.value.issues}
    assert reported in paths
    assert "named-values.key" in paths
    assert "'identity' section" in str(caught.value)


class FakeSecretClient:
    """Stands in for azure-keyvault-secrets' client: asks the credential it was given for a
    vault token, as the real one does, and answers with a value naming that token."""

    credentials: list[str] = []

    def __init__(self, vault_url: str, credential: Any) -> None:
        self.credential = credential
        FakeSecretClient.credentials.append(type(credential).__name__)

    async def __aenter__(self) -> FakeSecretClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def get_secret(self, name: str) -> Any:
        token = await self.credential.get_token("https://vault.azure.net/.default")

        class Secret:
            value = f"{name} read with {token.token}"

        return Secret()


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityEndpoint]:
    import azure.keyvault.secrets.aio as secrets

    monkeypatch.setattr(secrets, "SecretClient", FakeSecretClient)
    FakeSecretClient.credentials = []
    endpoint = IdentityEndpoint()
    server = IdentityServer(endpoint)
    for name, value in imds_env(server.url).items():
        monkeypatch.setenv(name, value)
    yield endpoint
    server.stop()


async def test_managed_identity_reads_with_the_identity_client_id(imds: IdentityEndpoint) -> None:
    ref = KeyVaultRef(VAULT, "openai-key", None, IdentityConfig(client_id="gateway-id"))
    value = await AzureKeyVaultReader().read(ref)
    assert value == "openai-key read with tok-1-https://vault.azure.net-gateway-id"
    assert FakeSecretClient.credentials == ["ManagedIdentityCredential"]
    (call,) = imds.calls
    assert call.kind == "imds" and call.client_id == "gateway-id"


async def test_the_named_values_client_id_overrides_the_identitys(imds: IdentityEndpoint) -> None:
    ref = KeyVaultRef(VAULT, "openai-key", "kv-reader", IdentityConfig(client_id="gateway-id"))
    assert (await AzureKeyVaultReader().read(ref)).endswith("-kv-reader")
    assert [call.client_id for call in imds.calls] == ["kv-reader"]


async def test_development_never_asks_managed_identity(
    imds: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "PATH"):
        monkeypatch.delenv(name, raising=False)  # no environment credential, no Azure CLI
    ref = KeyVaultRef(VAULT, "openai-key", None, IdentityConfig(type="development"))
    with pytest.raises(Exception, match="EnvironmentCredential"):
        await AzureKeyVaultReader().read(ref)
    assert FakeSecretClient.credentials == ["ChainedTokenCredential"]
    assert imds.calls == []


async def test_workload_identity_uses_its_settings(imds: IdentityEndpoint) -> None:
    settings = IdentityConfig(type="workload", tenant_id="t1", token_file="/nonexistent")
    ref = KeyVaultRef(VAULT, "openai-key", "kv-reader", settings)
    with pytest.raises(Exception, match="nonexistent"):  # the federated token file is read
        await AzureKeyVaultReader().read(ref)
    assert FakeSecretClient.credentials == ["WorkloadIdentityCredential"]
    assert imds.calls == []
