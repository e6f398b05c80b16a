"""GenAI semantic-convention values for a finished request, shared by OTLP metrics and traces.

Values follow the OpenTelemetry GenAI conventions: `gen_ai.operation.name` from its
well-known list, `gen_ai.provider.name` (`azure.ai.openai`, `openai`).
"""

from __future__ import annotations

from typing import Final

from aigw.telemetry.record import RequestRecord

# The Responses API is a conversation turn like chat completions: OpenAI's own
# instrumentations report it as `chat`; `generate_content` is described for Gemini.
OPERATION_NAMES: Final = {
    "chat-completions": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}

PROVIDER_NAMES: Final = {"azure-openai": "azure.ai.openai"}


def operation_name(record: RequestRecord) -> str:
    """The well-known name, or the operation's own id (the conventions allow custom values)."""
    return OPERATION_NAMES.get(record.operation_id, record.operation_id)


def provider_name(record: RequestRecord) -> str:
    return PROVIDER_NAMES.get(record.api_type, "openai")


def request_model(record: RequestRecord) -> str | None:
    """The model the caller asked for; for Azure OpenAI, the deployment when no model is known."""
    return record.model or record.deployment


def error_type(record: RequestRecord) -> str | None:
    """`error.type`: the gateway's stable reason, else the status code of a failed request."""
    if record.reason is not None:
        return record.reason
    if record.status >= 500:
        return str(record.status)
    return None
