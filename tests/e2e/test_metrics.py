"""Token metrics and Prometheus `/metrics` through real gateway processes.

The backend (`FixedChatBackend`) reports the usage each request asks for (`x-usage: P,C`),
so every count the gateway exports is known exactly. `/metrics` is scraped from the
operations listener and parsed with prometheus_client's parser, as Prometheus would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import wait_until
from tests.e2e.token_backend import FixedChatBackend
from tests.support import Gateway, free_port

HELLO = [{"role": "user", "content": "Hello"}]
DIMENSIONS = [
    {"name": "API ID"},
    {"name": "Subscription ID"},
    {"name": "Model"},
    {"name": "Client IP"},
    {"name": "Team", "value": '@(context.Request.Headers.GetValueOrDefault("x-team", "none"))'},
]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def config(backend_url: str, operations_port: int, *, limited: bool = True) -> dict[str, Any]:
    emit = {"llm-emit-token-metric": {"namespace": "llm-usage", "dimensions": DIMENSIONS}}
    limit = {
        "llm-token-limit": {
            "counter-key": '@(context.Request.Headers.GetValueOrDefault("x-key", "-"))',
            "tokens-per-minute": 50,
            "estimate-prompt-tokens": False,
        }
    }
    api = {"type": "openai", "subscription-required": False, "backend": "fixed"}
    apis = {"chat": {**api, "path": "chat", "policies": {"inbound": [emit]}}}
    if limited:  # in-process counters: one worker only
        apis["limited"] = {**api, "path": "limited", "policies": {"inbound": [limit, emit]}}
    return {
        "gateway": {"host": "127.0.0.1", "gateway-id": "gw-test"},
        "operations": {"port": operations_port},
        "backends": {"fixed": {"url": backend_url, "timeouts": {"connect": 2, "read": 10}}},
        "apis": apis,
    }


@pytest.fixture(scope="module")
def backend() -> Iterator[FixedChatBackend]:
    fixed = FixedChatBackend()
    yield fixed
    fixed.stop()


@pytest.fixture(scope="module")
def operations_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, backend: FixedChatBackend, operations_port: int
) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("metrics"), config(backend.url, operations_port))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/chat/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


def emitted(samples: Samples, team: str, token_type: str) -> float:
    return total(samples, "aigw_llm_tokens_total", team=team, token_type=token_type)


def wait_for_tokens(port: int, team: str, expected_total: float) -> Samples:
    found: Samples = {}

    def arrived() -> bool:
        nonlocal found
        found = scrape(port)
        return emitted(found, team, "total") >= expected_total

    assert wait_until(arrived, timeout=10), emitted(found, team, "total")
    return found


def test_non_streamed_counts_equal_the_backend_usage(
    client: openai.OpenAI, operations_port: int
) -> None:
    answer = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, extra_headers={"x-usage": "30,12", "x-team": "plain"}
    )
    assert answer.usage is not None and answer.usage.total_tokens == 42
    samples = wait_for_tokens(operations_port, "plain", 42)
    assert emitted(samples, "plain", "prompt") == 30
    assert emitted(samples, "plain", "completion") == 12
    assert emitted(samples, "plain", "total") == 42
    assert emitted(samples, "plain", "cached_prompt") == 0
    assert emitted(samples, "plain", "reasoning") == 0
    labels = next(
        dict(ls) for (n, ls) in samples if n == "aigw_llm_tokens_total" and ("team", "plain") in ls
    )
    assert labels["namespace"] == "llm-usage"
    assert labels["api_id"] == "chat"
    assert labels["model"] == "gpt-4o"
    assert labels["client_ip"] == "127.0.0.1"
    assert labels["subscription_id"] == "", "no subscription: an empty value"


def test_a_stream_is_counted_exactly_even_when_the_client_did_not_ask_for_usage(
    client: openai.OpenAI, operations_port: int
) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        stream=True,
        extra_headers={"x-usage": "20,7", "x-team": "stream"},
    )
    chunks = list(stream)
    assert all(chunk.usage is None for chunk in chunks), "the client did not ask for usage"
    samples = wait_for_tokens(operations_port, "stream", 27)
    assert emitted(samples, "stream", "prompt") == 20
    assert emitted(samples, "stream", "completion") == 7


def test_a_stream_with_usage_asked_for_is_counted_once(
    client: openai.OpenAI, operations_port: int
) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-usage": "11,4", "x-team": "asked"},
    )
    usages = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert [u.total_tokens for u in usages] == [15]
    samples = wait_for_tokens(operations_port, "asked", 15)
    assert emitted(samples, "asked", "total") == 15


def test_without_usage_from_the_backend_the_gateway_counts(
    client: openai.OpenAI, operations_port: int
) -> None:
    client.chat.completions.create(
        model="gpt-4o", messages=HELLO, extra_headers={"x-no-usage": "1", "x-team": "counted"}
    )
    samples = wait_for_tokens(operations_port, "counted", 1)
    assert emitted(samples, "counted", "prompt") > 0
    assert total(samples, "aigw_request_tokens_total", source="counted", token_type="prompt") > 0


def test_a_client_leaving_mid_stream_is_counted_up_to_where_it_left(
    gateway: Gateway, operations_port: int
) -> None:
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    headers = {"x-usage": "10,60", "x-chunk-delay-ms": "50", "x-team": "left"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST", gateway.url + "/chat/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: ")
            if received >= 5:
                break
    samples = wait_for_tokens(operations_port, "left", 1)
    completion = emitted(samples, "left", "completion")
    assert 4 <= completion < 60, "counted from what was streamed before the client left"
    assert emitted(samples, "left", "prompt") > 0


def test_rejections_and_requests_are_counted(gateway: Gateway, operations_port: int) -> None:
    with openai.OpenAI(base_url=gateway.url + "/limited/v1", api_key="x", max_retries=0) as sdk:
        headers = {"x-usage": "40,20", "x-key": "metrics-test", "x-team": "limited"}
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers=headers)
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers=headers)
    httpx.get(gateway.url + "/nowhere", timeout=5)

    def counted() -> bool:
        samples = scrape(operations_port)
        return (
            total(samples, "aigw_rejections_total", api="limited", reason="TokenLimitExceeded") == 1
        )

    assert wait_until(counted, timeout=10)
    samples = scrape(operations_port)
    assert total(samples, "aigw_requests_total", api="limited", status="200") == 1
    assert total(samples, "aigw_requests_total", api="limited", status="429") == 1
    assert total(samples, "aigw_requests_total", api="", status="404") >= 1
    assert total(samples, "aigw_request_duration_seconds_count", api="limited") == 2
    # Time to first token is a streamed response's: these were not streamed.
    assert total(samples, "aigw_time_to_first_token_seconds_count", api="limited") == 0
    assert total(samples, "aigw_time_to_first_token_seconds_count", api="chat") >= 1
    assert total(samples, "aigw_backend_requests_total", backend="fixed") >= 1
    assert total(samples, "aigw_backend_breaker_state", backend="fixed") == 0
    assert total(samples, "aigw_backend_in_flight", backend="fixed") == 0
    # The rejected request reached no model: no tokens for it.
    assert emitted(samples, "limited", "total") == 60


def test_the_ledger_s_progress_is_visible(client: openai.OpenAI, operations_port: int) -> None:
    client.chat.completions.create(
        model="gpt-4o", messages=HELLO, extra_headers={"x-usage": "2,1", "x-team": "ledger"}
    )

    def written() -> bool:
        samples = scrape(operations_port)
        return (
            total(samples, "aigw_ledger_written_records_total") >= 1
            and total(samples, "aigw_ledger_buffered_records") == 0
        )

    # Rows are written every second (the default flush interval) and the gauge follows.
    assert wait_until(written, timeout=10)


def test_operations_listener_serves_probes_and_json_errors(operations_port: int) -> None:
    base = f"http://127.0.0.1:{operations_port}"
    assert httpx.get(base + "/healthz", timeout=5).json() == {"status": "live"}
    assert httpx.get(base + "/readyz", timeout=5).json() == {"status": "ready"}
    missing = httpx.get(base + "/v1/chat/completions", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["statusCode"] == 404


def test_metrics_are_not_on_the_api_listener(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/metrics", timeout=5).status_code == 404


def test_several_workers_report_as_one(tmp_path: Path, backend: FixedChatBackend) -> None:
    port = free_port()
    gw = Gateway(tmp_path, config(backend.url, port, limited=False), "--workers", "2")
    try:
        with openai.OpenAI(base_url=gw.url + "/chat/v1", api_key="x", max_retries=0) as sdk:
            for _ in range(20):
                # A new connection each time, so both workers take requests.
                sdk.with_options(http_client=httpx.Client()).chat.completions.create(
                    model="gpt-4o",
                    messages=HELLO,
                    extra_headers={"x-usage": "3,2", "x-team": "workers"},
                )
        wait_for_tokens(port, "workers", 100)
        seen_totals = set()
        for _ in range(6):  # whichever worker answers the scrape, the sums are the same
            samples = scrape(port)
            seen_totals.add(
                (
                    total(samples, "aigw_requests_total", api="chat", status="200"),
                    emitted(samples, "workers", "total"),
                )
            )
            time.sleep(0.05)
        assert seen_totals == {(20.0, 100.0)}
    finally:
        gw.stop()
