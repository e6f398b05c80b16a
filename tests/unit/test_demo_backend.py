"""The demo backend on a real loopback port, called with the official openai SDK."""

from __future__ import annotations

import base64
import json
import math
import random
import threading
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest
import uvicorn
from openai import AzureOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from aigw.demo import ASGIApp, DemoSettings, create_demo_app
from aigw.demo.simulator import count_tokens, split_tokens

USER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me, please, about the weather in Paris today!"}
]


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Run the app under uvicorn in a thread on an ephemeral port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(create_demo_app()) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)


def test_token_pieces_concatenate_to_the_text_and_count_one_each() -> None:
    text = "Hello, world! It's 42 degrees."
    pieces = split_tokens(text)
    assert "".join(pieces) == text
    assert len(pieces) == count_tokens(text) == 10
    assert all(count_tokens(piece) == 1 for piece in pieces)


def test_settings_reject_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        DemoSettings(error_rate=1.5)
    with pytest.raises(ValueError):
        DemoSettings(error_status=200)


def test_chat_completion_replies_from_the_prompt_with_consistent_usage(
    client: OpenAI,
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        *USER,
    ]
    first = client.chat.completions.create(model="gpt-demo", messages=messages)
    second = client.chat.completions.create(model="gpt-demo", messages=messages)
    content = first.choices[0].message.content or ""
    assert content == "This is a demo reply to: Tell me, please, about the weather in Paris today!"
    assert first.id.startswith("chatcmpl-") and first.id != second.id
    assert first.object == "chat.completion" and first.model == "gpt-demo"
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].finish_reason == "stop"
    usage = first.usage
    assert usage is not None
    assert usage.completion_tokens == count_tokens(content)
    # 3 priming + per message (3 + role + content): system 3+1+3, user 3+1+12
    assert usage.prompt_tokens == 3 + 7 + 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    details = usage.completion_tokens_details
    assert details and details.reasoning_tokens == 0


def test_model_defaults_to_the_settings_model(base_url: str) -> None:
    body = {"messages": USER}
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["model"] == "demo-model"


def test_streamed_chat_matches_the_non_streamed_reply_and_usage(client: OpenAI) -> None:
    plain = client.chat.completions.create(model="m", messages=USER)
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert len(with_choices) > 5
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert with_choices[-1].choices[0].finish_reason == "stop"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert text == plain.choices[0].message.content
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and plain.usage is not None
    assert last.usage.model_dump() == plain.usage.model_dump()
    assert count_tokens(text) == last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_no_usage_chunk_without_include_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="m", messages=USER, stream=True)
    chunks = list(stream)
    assert chunks and all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_tokens_truncates_with_finish_reason_length(client: OpenAI) -> None:
    plain = client.chat.completions.create(model="m", messages=USER, max_tokens=3)
    assert plain.choices[0].message.content == "This is a"
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None and plain.usage.completion_tokens == 3
    stream = client.chat.completions.create(
        model="m",
        messages=USER,
        max_completion_tokens=4,
        stream=True,
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "This is a demo"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chunks_header_sets_the_number_of_content_chunks(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=USER,
        stream=True,
        extra_headers={"x-demo-chunks": "40"},
    )
    contents = [c.choices[0].delta.content for c in stream if c.choices]
    assert len([text for text in contents if text]) == 40
    assert count_tokens("".join(text or "" for text in contents)) == 40


def test_stream_events_arrive_incrementally(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=USER,
        stream=True,
        extra_headers={"x-demo-chunk-delay-ms": "50", "x-demo-chunks": "5"},
    )
    arrivals = [time.perf_counter() for _ in stream]
    # 8 events (role, 5 contents, finish, [DONE]) with 50 ms between them: ~350 ms spread.
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] > 0.25


def test_latency_header_delays_the_response(client: OpenAI) -> None:
    started = time.perf_counter()
    client.chat.completions.create(
        model="m",
        messages=USER,
        extra_headers={"x-demo-latency-ms": "300"},
    )
    assert time.perf_counter() - started >= 0.3


def test_legacy_completions_plain_list_and_streamed(client: OpenAI) -> None:
    single = client.completions.create(model="m", prompt="Once upon a time")
    assert single.object == "text_completion" and single.id.startswith("cmpl-")
    assert single.choices[0].text == "This is a demo completion of: Once upon a time"
    assert single.usage is not None and single.usage.prompt_tokens == 4
    several = client.completions.create(model="m", prompt=["one", "two"])
    assert [choice.index for choice in several.choices] == [0, 1]
    assert several.choices[1].text.endswith(": two")
    stream = client.completions.create(
        model="m", prompt="Once upon a time", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == single.choices[0].text
    assert chunks[-1].usage is not None and single.usage is not None
    assert chunks[-1].usage.completion_tokens == single.usage.completion_tokens


def test_embeddings_float_and_base64_decode_to_the_same_vector(client: OpenAI) -> None:
    floats = client.embeddings.create(
        model="e", input=["alpha", "beta"], dimensions=64, encoding_format="float"
    )
    encoded = client.embeddings.create(
        model="e", input=["alpha", "beta"], dimensions=64, encoding_format="base64"
    )
    implicit = client.embeddings.create(model="e", input=["alpha", "beta"], dimensions=64)
    raw = base64.b64decode(str(encoded.data[0].embedding))
    decoded = array("f", raw).tolist()
    vector = floats.data[0].embedding
    assert len(vector) == 64 and decoded == vector
    assert implicit.data[0].embedding == vector  # the SDK's own base64 decoding
    assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert floats.data[1].embedding != vector
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 2


def test_embeddings_are_deterministic_with_a_small_default_size(client: OpenAI) -> None:
    first = client.embeddings.create(model="e", input="same text", encoding_format="float")
    again = client.embeddings.create(model="e", input="same text", encoding_format="float")
    assert len(first.data[0].embedding) == 256
    assert first.data[0].embedding == again.data[0].embedding


def test_models_list_has_the_demo_model(client: OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["demo-model"]


def test_responses_api_minimal_object(client: OpenAI) -> None:
    response = client.responses.create(model="m", input="hello world", max_output_tokens=50)
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "This is a demo reply to: hello world"
    assert response.usage is not None and response.usage.output_tokens == 9
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.responses.create(model="m", input="hello", stream=True)


def test_azure_client_with_a_deployment(base_url: str) -> None:
    azure = AzureOpenAI(azure_endpoint=base_url, api_key="x", api_version="2024-10-21")
    reply = azure.chat.completions.with_raw_response.create(model="my-dep", messages=USER)
    assert reply.http_request.url.path == "/openai/deployments/my-dep/chat/completions"
    assert reply.headers["x-ms-region"] == "demo" and reply.headers["x-request-id"]
    assert reply.parse().model == "my-dep"


def test_azure_deployment_names_the_model_when_the_body_has_none(base_url: str) -> None:
    url = f"{base_url}/openai/deployments/dep-1/chat/completions?api-version=2024-10-21"
    assert httpx.post(url, json={"messages": USER}).json()["model"] == "dep-1"
    v1 = OpenAI(base_url=f"{base_url}/openai/v1", api_key="x")
    assert v1.chat.completions.create(model="v1-model", messages=USER).model == "v1-model"


def test_forced_429_carries_retry_after(client: OpenAI) -> None:
    headers = {"x-demo-status": "429", "x-demo-retry-after": "7"}
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=USER, extra_headers=headers)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["retry-after-ms"] == "7000"
    error = caught.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}


def test_forced_500(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.embeddings.create(model="e", input="x", extra_headers={"x-demo-status": "500"})
    assert caught.value.status_code == 500
    assert "retry-after" not in caught.value.response.headers


def _statuses(base_url: str, count: int) -> list[int]:
    with httpx.Client(base_url=base_url) as http:
        body = {"messages": USER}
        return [http.post("/v1/chat/completions", json=body).status_code for _ in range(count)]


def test_error_rate_is_deterministic_for_a_seed() -> None:
    settings = DemoSettings(error_rate=0.5, seed=7)
    with serving(create_demo_app(settings)) as first_url:
        first = _statuses(first_url, 30)
    with serving(create_demo_app(settings)) as second_url:
        second = _statuses(second_url, 30)
    rng = random.Random(7)
    assert first == second == [429 if rng.random() < 0.5 else 200 for _ in range(30)]
    assert {200, 429} <= set(first)
    with serving(create_demo_app(DemoSettings(error_rate=0.5, seed=8))) as other_url:
        assert _statuses(other_url, 30) != first


def test_settings_retry_after_on_random_rate_limits() -> None:
    settings = DemoSettings(error_rate=1.0, retry_after_seconds=4)
    with serving(create_demo_app(settings)) as url:
        sdk = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(model="m", messages=USER)
    assert caught.value.response.headers["retry-after"] == "4"


def test_malformed_flag_returns_200_with_a_non_json_body(base_url: str, client: OpenAI) -> None:
    url = f"{base_url}/v1/chat/completions"
    response = httpx.post(url, json={"messages": USER}, headers={"x-demo-malformed": "1"})
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    with pytest.raises(ValueError):
        client.chat.completions.create(
            model="m",
            messages=USER,
            extra_headers={"x-demo-malformed": "1"},
        )


def test_unknown_path_is_a_404_in_the_openai_shape(base_url: str, client: OpenAI) -> None:
    response = httpx.get(f"{base_url}/v1/unknown")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None and error["code"] is None
    assert httpx.get(f"{base_url}/v1/chat/completions").status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.get("/nothing/here", cast_to=object)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'{"model": "m"}', b'{"messages": []}'],
)
def test_bad_requests_are_400_in_the_openai_shape(base_url: str, content: bytes) -> None:
    headers = {"content-type": "application/json"}
    url = f"{base_url}/v1/chat/completions"
    response = httpx.post(url, content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_stall_sends_headers_then_holds_the_body(base_url: str) -> None:
    timeout = httpx.Timeout(5.0, read=0.3)
    headers = {"x-demo-stall-ms": "1000"}
    with httpx.Client(timeout=timeout) as http:
        body = {"messages": USER}
        url = f"{base_url}/v1/chat/completions"
        with http.stream("POST", url, json=body, headers=headers) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                response.read()
