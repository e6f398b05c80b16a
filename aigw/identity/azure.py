"""Tokens from Microsoft Entra ID through azure-identity's async credentials.

- `managed`: `ManagedIdentityCredential` — the App Service / Container Apps identity endpoint
  (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), Azure Arc, IMDS on VMs and AKS nodes (at
  `AZURE_POD_IDENTITY_AUTHORITY_HOST` if set, which the tests use), and workload identity
  when its environment variables are set.
- `workload`: `WorkloadIdentityCredential` — a federated token file exchanged at
  `AZURE_AUTHORITY_HOST` (Kubernetes with Azure workload identity).
- `development`: environment credentials (`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/…), then
  the Azure CLI's signed-in account.

A credential is created per acquisition and closed after it: `TokenCache` is the only cache,
so azure-identity's own (which hands back its cached token when asked again within 30 s)
never second-guesses a refresh. Acquisitions are rare (about once an hour per resource).
Key Vault named values are read with the same credential (`azure_credential`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aigw.identity.tokens import AccessToken, TokenUnavailable

if TYPE_CHECKING:
    from aigw.config.model import IdentityConfig

# One immediate retry inside an acquisition; `TokenCache` retries with back-off after that
# (azure-core's default, three retries with growing delays, would hold waiting requests).
_PIPELINE: dict[str, Any] = {"retry_total": 1}


def scope_for(resource: str) -> str:
    """APIM's `resource` (an audience) as an Entra v2 scope; kept as is if already one."""
    return resource if resource.endswith("/.default") else resource + "/.default"


def azure_credential(settings: IdentityConfig, client_id: str | None = None) -> Any:
    """The async azure-identity credential `settings` selects, for one acquisition (the
    caller closes it). `client_id` (a user-assigned identity) overrides the identity's own.
    Raises ValueError when it cannot be built (workload identity without a tenant, …)."""
    from azure.identity import aio

    client_id = client_id or settings.client_id
    if settings.type == "managed":
        return aio.ManagedIdentityCredential(client_id=client_id, **_PIPELINE)
    if settings.type == "workload":
        extra: dict[str, Any] = dict(_PIPELINE)
        if settings.authority_host:
            extra["authority"] = settings.authority_host
        return aio.WorkloadIdentityCredential(
            tenant_id=settings.tenant_id,
            client_id=client_id,
            token_file_path=settings.token_file,
            **extra,
        )
    return aio.ChainedTokenCredential(aio.EnvironmentCredential(), aio.AzureCliCredential())


class AzureIdentityProvider:
    def __init__(self, settings: IdentityConfig, client_id: str | None = None) -> None:
        self.kind: str = settings.type
        self.client_id = client_id or settings.client_id
        self._settings = settings

    async def token(self, resource: str) -> AccessToken:
        from azure.core.exceptions import AzureError

        try:
            credential = azure_credential(self._settings, self.client_id)
        except ValueError as exc:  # e.g. workload identity without tenant / token file
            raise TokenUnavailable(f"not configured: {exc}") from None
        try:
            async with credential:
                found = await credential.get_token(scope_for(resource))
        except AzureError as exc:
            raise TokenUnavailable(_first_line(exc)) from None
        except (OSError, ValueError) as exc:
            raise TokenUnavailable(f"{type(exc).__name__}: {_first_line(exc)}") from None
        return AccessToken(found.token, float(found.expires_on))


def _first_line(exc: BaseException) -> str:
    # azure-identity's messages can run to many lines of troubleshooting links.
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
