"""The operations each built-in API type serves, as clients of those APIs call them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OperationSpec:
    id: str
    method: str
    url_template: str
    # LLM operations take a JSON body that is parsed strictly before any policy runs.
    json_body: bool


_OPENAI_V1 = (
    OperationSpec("chat-completions", "POST", "/v1/chat/completions", True),
    OperationSpec("completions", "POST", "/v1/completions", True),
    OperationSpec("embeddings", "POST", "/v1/embeddings", True),
    OperationSpec("responses", "POST", "/v1/responses", True),
    OperationSpec("models", "GET", "/v1/models", False),
)

_AZURE_DEPLOYMENTS = (
    OperationSpec(
        "chat-completions", "POST", "/deployments/{deployment-id}/chat/completions", True
    ),
    OperationSpec("completions", "POST", "/deployments/{deployment-id}/completions", True),
    OperationSpec("embeddings", "POST", "/deployments/{deployment-id}/embeddings", True),
)

# What the AzureOpenAI SDK calls without `/v1` (always `?api-version=...`): these are not
# deployment endpoints, so it sends them to `/openai/...` even with `azure_deployment` set.
_AZURE_UNVERSIONED = (
    OperationSpec("responses", "POST", "/responses", True),
    OperationSpec("models", "GET", "/models", False),
)

BUILTIN_OPERATIONS: dict[str, tuple[OperationSpec, ...]] = {
    "openai": _OPENAI_V1,
    # The Azure OpenAI data plane: deployment routes, the api-version routes the SDK calls,
    # and the v1 routes under the same prefix.
    "azure-openai": _AZURE_DEPLOYMENTS
    + _AZURE_UNVERSIONED
    + tuple(op for op in _OPENAI_V1 if op.id != "completions"),
}


# Deployment ids as Azure allows them; anything else is not a route (and never reaches a
# header or a backend URL through a policy).
DEPLOYMENT_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


def builtin_operation_ids(api_type: str) -> set[str]:
    return {op.id for op in BUILTIN_OPERATIONS.get(api_type, ())}
