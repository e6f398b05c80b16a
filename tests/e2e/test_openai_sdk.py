"""The official `openai` SDK (OpenAI and AzureOpenAI clients) against the real gateway
in front of the demo backend, over loopback HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.helpers import MODEL, access_record
from tests.support import Gateway

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]


@pytest.fixture(params=["openai", "azure"])
def client(request: pytest.FixtureRequest) -> openai.OpenAI:
    return request.getfixturevalue(f"{request.param}_client")


@pytest.fixture(scope="module")
def azure_v1_client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=gateway.url + "/openai/v1", api_key="x", max_retries=0)
    yield client
    client.close()


def test_chat_completion_has_content_usage_and_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    content = completion.choices[0].message.content
    assert content is not None and content.startswith("This is a demo reply to")
    assert "Tell me about gateways" in content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streamed_chat_arrives_incrementally_and_matches_non_streamed(
    client: openai.OpenAI,
) -> None:
    headers = {"x-demo-chunk-delay-ms": "100", "x-demo-chunks": "5"}
    arrivals: list[tuple[float, str]] = []
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_headers=headers,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
    assert len(arrivals) == 5
    # Relayed as produced: the first piece is out long before the last one is made.
    assert arrivals[-1][0] - arrivals[0][0] > 0.3
    whole = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        extra_headers={"x-demo-chunks": "5"},
    )
    assert "".join(piece for _, piece in arrivals) == whole.choices[0].message.content


def test_streamed_chat_with_include_usage_gets_a_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-demo-chunks": "4"},
    )
    chunks = list(stream)
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(usage_chunks) == 1
    assert usage_chunks[0] is chunks[-1] and usage_chunks[0].choices == []
    assert usage_chunks[0].usage is not None
    assert usage_chunks[0].usage.completion_tokens == 4
    assert usage_chunks[0].usage.prompt_tokens > 0


@pytest.mark.parametrize("dimensions", [8, 300])
def test_embeddings_vector_length_honours_dimensions(
    client: openai.OpenAI, dimensions: int
) -> None:
    result = client.embeddings.create(
        model="text-embedding-3-small", input=["first text", "second text"], dimensions=dimensions
    )
    assert [item.index for item in result.data] == [0, 1]
    assert all(len(item.embedding) == dimensions for item in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0


def test_legacy_completions(openai_client: openai.OpenAI) -> None:
    completion = openai_client.completions.create(
        model="demo-instruct", prompt="Once upon a time", max_tokens=3
    )
    assert completion.model == "demo-instruct"
    assert completion.choices[0].text.strip().startswith("This is")
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_models_list(openai_client: openai.OpenAI) -> None:
    models = [model.id for model in openai_client.models.list()]
    assert MODEL in models


def test_azure_v1_route_serves_the_openai_client(azure_v1_client: openai.OpenAI) -> None:
    completion = azure_v1_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.model == MODEL
    assert (completion.choices[0].message.content or "").startswith("This is a demo reply to")
    assert MODEL in [model.id for model in azure_v1_client.models.list()]


def test_backend_api_error_is_relayed_unchanged(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            extra_headers={"x-demo-status": "429", "x-demo-retry-after": "7"},
        )
    error = caught.value
    assert error.status_code == 429
    # The backend's error body and its rate-limit headers reach the caller as sent.
    assert error.body == {
        "message": "Rate limit reached (simulated).",
        "type": "requests",
        "param": None,
        "code": None,
    }
    assert error.response.headers.get("retry-after") == "7"
    assert error.response.headers.get("retry-after-ms") == "7000"


def test_request_id_is_generated_and_returned(client: openai.OpenAI, gateway: Gateway) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    first = raw.headers.get("x-request-id")
    assert first
    again = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert again.headers.get("x-request-id") not in (None, first)
    assert access_record(gateway.stdout, first)["status"] == 200


def test_given_request_id_is_echoed(client: openai.OpenAI, gateway: Gateway) -> None:
    given = f"client-chosen-{time.monotonic_ns()}"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,
        extra_headers={"x-request-id": given},
    )
    assert raw.headers.get("x-request-id") == given
    assert raw.parse().choices[0].message.content
    assert access_record(gateway.stdout, given)["status"] == 200
