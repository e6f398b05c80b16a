"""Token limits (`llm-token-limit`, `azure-openai-token-limit`), `rate-limit-by-key` and
`quota-by-key` through a real gateway process with the in-memory counter store.

Most APIs forward to `FixedChatBackend`, whose answers (usage included) are set per request
by `x-usage: P,C`, so the tests know every charge exactly and can compare streamed bytes.
Counters are read without changing them by a *probe*: an admitted request whose answer
reports zero usage, so the remaining-tokens header it carries is exactly what is left.
Every test uses counter keys of its own, so one gateway serves the whole module.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.e2e.conftest import AZURE_API_VERSION
from tests.e2e.helpers import access_record, assert_error, wait_until
from tests.e2e.token_backend import FixedChatBackend, stream_bytes
from tests.support import DemoBackend, Gateway

RUN = uuid.uuid4().hex[:8]  # counter keys of this run never meet another run's
MODEL = "gpt-4o"
HELLO = [{"role": "user", "content": "Hello"}]


def counter_key(family: str, header: str = "x-key") -> str:
    return f'@("{RUN}:{family}:" + context.Request.Headers.GetValueOrDefault("{header}", "-"))'


def token_limit(
    family: str, tpm: int, *, header: str = "x-key", estimate: bool = False, **extra: Any
) -> dict[str, Any]:
    policy = {
        "counter-key": counter_key(family, header),
        "tokens-per-minute": tpm,
        "estimate-prompt-tokens": estimate,
        "remaining-tokens-header-name": "x-remaining-tokens",
    }
    return {"llm-token-limit": {**policy, **extra}}


def api(path: str, backend: str, *inbound: dict[str, Any], kind: str = "openai") -> dict[str, Any]:
    return {
        "type": kind,
        "subscription-required": False,
        "path": path,
        "backend": backend,
        "policies": {"inbound": ["base", *inbound]},
    }


def limits_config(demo_url: str, fixed_url: str) -> dict[str, Any]:
    consumed = {"tokens-consumed-header-name": "x-tokens-consumed"}
    tpm = token_limit("tpm", 100, **consumed, **{"retry-after-header-name": "x-retry-in"})
    user = {"header": "x-user", "remaining-tokens-header-name": "x-remaining-user"}
    app = {"header": "x-app", "remaining-tokens-header-name": "x-remaining-app"}
    quota = {
        "azure-openai-token-limit": {
            "counter-key": counter_key("quota"),
            "token-quota": 100,
            "token-quota-period": "Hourly",
            "estimate-prompt-tokens": False,
            "remaining-quota-tokens-header-name": "x-remaining-quota",
            "tokens-consumed-header-name": "x-tokens-consumed",
        }
    }
    calls = {
        "rate-limit-by-key": {
            "calls": 3,
            "renewal-period": 2,
            "counter-key": counter_key("calls"),
            "remaining-calls-header-name": "x-remaining-calls",
        }
    }
    call_quota = {
        "quota-by-key": {"calls": 2, "renewal-period": 3600, "counter-key": counter_key("cq")}
    }

    return {
        "gateway": {"host": "127.0.0.1", "limits": {"max-body-size": 65536}},
        "backends": {
            "demo": {"url": demo_url, "timeouts": {"connect": 2, "read": 5}},
            "fixed": {"url": fixed_url, "timeouts": {"connect": 2, "read": 5}},
        },
        "apis": {
            # A probe API shares its counter (key and window) without estimating: a request
            # that costs nothing is never refused there while anything is left.
            "tpm": api("tpm", "fixed", tpm),
            "est": api("est", "fixed", token_limit("est", 300, estimate=True, **consumed)),
            "est-probe": api("est-probe", "fixed", token_limit("est", 300)),
            "quota": api("quota/openai", "fixed", quota, kind="azure-openai"),
            "stream": api("stream", "fixed", token_limit("stream", 1000)),
            "demo": api("demo", "demo", token_limit("demo", 5000)),
            "demo-probe": api("demo-probe", "fixed", token_limit("demo", 5000)),
            "two": api(
                "two",
                "fixed",
                token_limit("user", 200, estimate=True, **user),
                token_limit("app", 300, estimate=True, **app),
            ),
            "user-probe": api("user-probe", "fixed", token_limit("user", 200, **user)),
            "app-probe": api("app-probe", "fixed", token_limit("app", 300, **app)),
            "shadow": api("shadow", "fixed", token_limit("shadow", 50, shadow=True)),
            "calls": api("calls", "fixed", calls),
            "call-quota": api("call-quota", "fixed", call_quota),
        },
    }


@pytest.fixture(scope="module")
def fixed() -> Iterator[FixedChatBackend]:
    backend = FixedChatBackend()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend, fixed: FixedChatBackend) -> dict[str, Any]:
    return limits_config(demo_backend.url, fixed.url)


def new_key() -> str:
    return uuid.uuid4().hex[:12]


def chat(
    http: httpx.Client,
    path: str,
    key: str,
    usage: str = "0,0",
    *,
    messages: list[dict[str, Any]] = HELLO,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    return http.post(
        f"/{path}/v1/chat/completions",
        json={"model": MODEL, "messages": messages, **body},
        headers={"x-key": key, "x-usage": usage, **(headers or {})},
    )


def remaining(http: httpx.Client, path: str, key: str) -> int:
    """What is left of a counter, read by a request that costs nothing."""
    response = chat(http, path, key, "0,0", headers={"x-probe": "1"})
    assert response.status_code == 200, response.text
    return int(response.headers["x-remaining-tokens"])


def left_settles(http: httpx.Client, path: str, key: str, expected: int) -> None:
    """The counter shows `expected` (a request is settled just after its answer went out)."""
    wait_until(lambda: remaining(http, path, key) == expected, timeout=2)
    assert remaining(http, path, key) == expected


def calls_for(fixed: FixedChatBackend, key: str) -> int:
    """Requests of `key` that reached the backend, probes aside."""
    return sum(
        1
        for seen in fixed.requests
        if seen.headers.get("x-key") == key and "x-probe" not in seen.headers
    )


# --- tokens per minute ------------------------------------------------------------------


def test_exhausted_tokens_per_minute_is_a_429_with_a_custom_retry_header(
    gateway: Gateway, http: httpx.Client, fixed: FixedChatBackend
) -> None:
    key = new_key()
    first = chat(http, "tpm", key, "30,10")
    assert first.status_code == 200, first.text
    assert first.headers["x-remaining-tokens"] == "60"
    assert first.headers["x-tokens-consumed"] == "40"
    second = chat(http, "tpm", key, "50,20")  # 40 < 100 is left: admitted, and overshoots
    assert second.status_code == 200
    assert second.headers["x-remaining-tokens"] == "0"
    assert second.headers["x-tokens-consumed"] == "70"
    assert calls_for(fixed, key) == 2

    refused = chat(http, "tpm", key, "1,1")
    body = assert_error(refused, 429, "Token limit is exceeded")
    wait = int(refused.headers["x-retry-in"])
    assert 1 <= wait <= 60
    assert body["message"] == f"Token limit is exceeded. Try again in {wait} seconds."
    assert "retry-after" not in refused.headers  # the configured name replaces it
    assert "x-remaining-tokens" not in refused.headers
    assert calls_for(fixed, key) == 2  # never reached the backend

    # The SDK sees the same refusal as a RateLimitError (no retries: max_retries=0).
    client = openai.OpenAI(base_url=f"{gateway.url}/tpm/v1", api_key="x", max_retries=0)
    with client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=HELLO, extra_headers={"x-key": key, "x-usage": "1,1"}
        )
    assert caught.value.status_code == 429
    assert calls_for(fixed, key) == 2


def test_a_refused_request_costs_nothing(http: httpx.Client, fixed: FixedChatBackend) -> None:
    key = new_key()
    assert chat(http, "est", key, "40,20").headers["x-remaining-tokens"] == "240"
    left_settles(http, "est-probe", key, 240)
    # About 270 prompt tokens: within the limit of 300, but more than the 240 left.
    big = [{"role": "user", "content": "hello " * 260}]
    refused = chat(http, "est", key, "1,1", messages=big)
    body = assert_error(refused, 429, "Token limit is exceeded")
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 60 and f"in {wait} seconds" in body["message"]
    # More than the whole limit: it can never fit, so no Retry-After promise.
    huge = [{"role": "user", "content": "hello " * 400}]
    too_large = chat(http, "est", key, "1,1", messages=huge)
    assert_error(too_large, 429, "Request too large", "300 tokens per minute")
    assert "retry-after" not in too_large.headers
    assert calls_for(fixed, key) == 1  # neither reached the backend (probes have their own path)
    left_settles(http, "est-probe", key, 240)  # and neither was charged
    # The next admitted request sees all 240 tokens.
    admitted = chat(http, "est", key, "100,40")
    assert admitted.status_code == 200
    assert admitted.headers["x-remaining-tokens"] == "100"


def test_the_actual_usage_replaces_the_estimate(
    http: httpx.Client, fixed: FixedChatBackend
) -> None:
    key = new_key()
    prompt = [{"role": "user", "content": "hello " * 100}]  # about 108 tokens estimated
    # The backend says 5 + 3: the counter keeps 8, not the estimate.
    small = chat(http, "est", key, "5,3", messages=prompt)
    assert small.status_code == 200, small.text
    assert small.headers["x-tokens-consumed"] == "8"
    assert small.headers["x-remaining-tokens"] == "292"
    left_settles(http, "est-probe", key, 292)
    # The backend says more than estimated: the counter keeps that too.
    large = chat(http, "est", key, "150,50", messages=HELLO)
    assert large.headers["x-tokens-consumed"] == "200"
    assert large.headers["x-remaining-tokens"] == "92"
    left_settles(http, "est-probe", key, 92)
    # The estimate (about 108) no longer fits in what is left.
    assert_error(chat(http, "est", key, "1,1", messages=prompt), 429)
    assert calls_for(fixed, key) == 2


# --- quota ------------------------------------------------------------------------------


def test_exhausted_token_quota_is_a_403_naming_the_renewal(
    gateway: Gateway, fixed: FixedChatBackend
) -> None:
    key = new_key()
    client = openai.AzureOpenAI(
        azure_endpoint=f"{gateway.url}/quota",
        api_key="x",
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )
    headers = {"x-key": key, "x-usage": "30,10"}
    with client:
        seen = []
        for _ in range(3):  # 40, 80, then 120: admitted while anything is left
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HELLO, extra_headers=headers
            )
            assert raw.parse().usage is not None and raw.parse().usage.total_tokens == 40
            seen.append(raw.headers["x-remaining-quota"])
            assert raw.headers["x-tokens-consumed"] == "40"
            assert "x-remaining-tokens" not in raw.headers  # no tokens-per-minute here
        assert seen == ["60", "20", "0"]
        before = datetime.now(UTC)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers=headers)
        after = datetime.now(UTC)
    response = caught.value.response
    body = assert_error(response, 403, "Token quota is exceeded")
    renewals = {_next_hour(before), _next_hour(after)}  # the request may straddle an hour
    assert any(f"replenished at {renewal}" in body["message"] for renewal in renewals), body
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= 3600
    assert abs(after.timestamp() + wait - _hour_end(after)) <= 2 or wait <= 2
    assert calls_for(fixed, key) == 3


def _hour_end(moment: datetime) -> float:
    return math.floor(moment.timestamp() / 3600 + 1) * 3600


def _next_hour(moment: datetime) -> str:
    start = moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- streams ------------------------------------------------------------------------------


def _stream(
    http: httpx.Client, path: str, key: str, usage: str, obfuscation: bool = False, **body: Any
) -> bytes:
    payload = {"model": MODEL, "messages": HELLO, "stream": True, **body}
    headers = {"x-key": key, "x-usage": usage, "x-obfuscation": "1" if obfuscation else "0"}
    with http.stream("POST", f"/{path}/v1/chat/completions", json=payload, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return b"".join(r.iter_raw())


def _events(raw: bytes) -> list[Any]:
    events = [block for block in raw.decode().split("\n\n") if block]
    assert all(event.startswith("data: ") for event in events), events
    return [event[6:] if event == "data: [DONE]" else json.loads(event[6:]) for event in events]


def test_a_stream_that_asks_for_usage_is_passed_byte_for_byte_and_charged(
    gateway: Gateway, http: httpx.Client, fixed: FixedChatBackend
) -> None:
    key = new_key()
    received = _stream(http, "stream", key, "12,7", stream_options={"include_usage": True})
    (seen,) = [s for s in fixed.requests if s.headers.get("x-key") == key]
    assert seen.body["stream_options"] == {"include_usage": True}
    assert received == seen.sent == stream_bytes(MODEL, 12, 7, include_usage=True)
    assert _events(received)[-2]["usage"]["total_tokens"] == 19
    left_settles(http, "stream", key, 1000 - 19)

    # Through the SDK: the usage chunk arrives last, as the client asked.
    client = openai.OpenAI(base_url=f"{gateway.url}/stream/v1", api_key="x", max_retries=0)
    with client:
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=HELLO,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-key": key, "x-usage": "20,30"},
            )
        )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 50
    left_settles(http, "stream", key, 1000 - 19 - 50)


@pytest.mark.parametrize(
    ("options", "obfuscation"),
    [(None, False), ({"include_usage": False}, False), (None, True)],
    ids=["no-options", "include-usage-false", "openai-obfuscation"],
)
def test_a_stream_that_did_not_ask_gets_no_usage_and_is_still_charged_exactly(
    http: httpx.Client,
    fixed: FixedChatBackend,
    options: dict[str, Any] | None,
    obfuscation: bool,
) -> None:
    """Also when every chunk ends with OpenAI's `"obfuscation"` padding, after `"usage"`."""
    key = new_key()
    extra = {} if options is None else {"stream_options": options}
    received = _stream(http, "stream", key, "12,7", obfuscation=obfuscation, **extra)
    (seen,) = [s for s in fixed.requests if s.headers.get("x-key") == key]
    # The gateway asked the backend for usage, read it, and took it out again.
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.sent == stream_bytes(MODEL, 12, 7, include_usage=True, obfuscation=obfuscation)
    assert received == stream_bytes(MODEL, 12, 7, include_usage=False, obfuscation=obfuscation)
    assert b"usage" not in received
    left_settles(http, "stream", key, 1000 - 19)


def test_a_stream_without_usage_from_the_backend_is_counted(
    http: httpx.Client, fixed: FixedChatBackend
) -> None:
    key = new_key()
    payload = {"model": MODEL, "messages": HELLO, "stream": True}
    headers = {"x-key": key, "x-usage": "0,40", "x-no-usage": "1"}
    response = http.post("/stream/v1/chat/completions", json=payload, headers=headers)
    assert response.status_code == 200
    assert b"usage" not in response.content
    contents = [e["choices"][0]["delta"].get("content") for e in _events(response.content)[:-1]]
    assert "".join(c for c in contents if c) == "".join(f" t{i}" for i in range(40))
    # Counted by the gateway with o200k_base: 8 prompt tokens, and 2 for each " tN" piece.
    left_settles(http, "stream", key, 1000 - 8 - 2 * 40)


def test_a_json_answer_without_usage_from_the_backend_is_counted(
    http: httpx.Client, fixed: FixedChatBackend
) -> None:
    """Some OpenAI-compatible servers send no `usage`: the completion is counted from the
    message text, as a stream's would be."""
    key = new_key()
    answer = chat(http, "stream", key, "0,40", headers={"x-no-usage": "1"})
    assert answer.status_code == 200 and "usage" not in answer.json()
    content = answer.json()["choices"][0]["message"]["content"]
    assert content == "".join(f" t{i}" for i in range(40))
    # The same charge as the stream of that answer: 8 prompt tokens, 2 for each " tN".
    left_settles(http, "stream", key, 1000 - 8 - 2 * 40)


def test_a_client_that_accepts_gzip_is_still_charged_its_usage(
    http: httpx.Client, fixed: FixedChatBackend
) -> None:
    """The OpenAI SDKs accept gzip; a backend that would compress must not hide the usage."""
    key = new_key()
    headers = {"x-key": key, "x-gzip": "1", "accept-encoding": "gzip"}
    answer = chat(http, "tpm", key, "30,10", headers=headers)
    assert answer.status_code == 200 and answer.json()["usage"]["total_tokens"] == 40
    assert answer.headers["x-tokens-consumed"] == "40"
    left_settles(http, "tpm", key, 60)

    payload = {"model": MODEL, "messages": HELLO, "stream": True}
    headers = {**headers, "x-usage": "12,7"}
    with http.stream("POST", "/stream/v1/chat/completions", json=payload, headers=headers) as r:
        assert r.status_code == 200
        received = b"".join(r.iter_bytes())  # decoded, if the gateway let it be compressed
    assert received == stream_bytes(MODEL, 12, 7, include_usage=False)
    left_settles(http, "stream", key, 1000 - 19)
    assert all(seen.headers.get("accept-encoding") == "identity" for seen in fixed.requests[-2:])


def _normalised(raw: bytes) -> list[Any]:
    events = _events(raw)
    for event in events:
        if isinstance(event, dict):
            event["id"], event["created"] = "-", 0
    return events


def test_a_demo_backend_stream_keeps_its_events_and_is_charged_its_usage(
    http: httpx.Client, demo_backend: DemoBackend
) -> None:
    """The demo's ids and timestamps are fresh per answer: compare the events without them."""
    key = new_key()
    payload = {
        "model": MODEL,
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"x-demo-chunks": "6"}
    direct = httpx.post(f"{demo_backend.url}/v1/chat/completions", json=payload, headers=headers)
    through = _stream_demo(http, key, payload, headers)
    assert _normalised(through) == _normalised(direct.content)
    usage = _events(through)[-2]["usage"]
    assert usage["completion_tokens"] == 6
    left_settles(http, "demo-probe", key, 5000 - usage["total_tokens"])

    # Not asked: the same events without the usage chunk and without `"usage": null`.
    bare = {**payload}
    del bare["stream_options"]
    direct = httpx.post(f"{demo_backend.url}/v1/chat/completions", json=bare, headers=headers)
    through = _stream_demo(http, key, bare, headers)
    assert b"usage" not in through and b"usage" not in direct.content
    assert _normalised(through) == _normalised(direct.content)
    left_settles(http, "demo-probe", key, 5000 - 2 * usage["total_tokens"])


def _stream_demo(
    http: httpx.Client, key: str, payload: dict[str, Any], headers: dict[str, str]
) -> bytes:
    with http.stream(
        "POST", "/demo/v1/chat/completions", json=payload, headers={"x-key": key, **headers}
    ) as response:
        assert response.status_code == 200
        return b"".join(response.iter_raw())


def test_a_client_that_leaves_mid_stream_pays_for_what_was_generated(
    gateway: Gateway, http: httpx.Client
) -> None:
    key = new_key()
    chunks = 200
    payload = {"model": MODEL, "messages": HELLO, "stream": True}
    headers = {"x-key": key, "x-demo-chunks": str(chunks), "x-demo-chunk-delay-ms": "20"}
    with (
        httpx.Client(base_url=gateway.url, timeout=10) as own,  # its connection is dropped
        own.stream("POST", "/demo/v1/chat/completions", json=payload, headers=headers) as response,
    ):
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        seen = b""
        for piece in response.iter_raw():
            seen += piece
            if seen.count(b'"content": "') >= 6:  # the role, then 5 words
                break
    # Settled once the gateway notices the client is gone.
    assert wait_until(lambda: remaining(http, "demo-probe", key) < 5000, timeout=5)
    used = 5000 - remaining(http, "demo-probe", key)
    full = _demo_prompt_tokens() + chunks
    # At least the prompt and the 5 words the client read; far less than the whole answer.
    assert _demo_prompt_tokens() + 5 <= used < full // 2, (used, full)
    record = access_record(gateway.stdout, request_id)
    assert record["client_disconnected"] is True


def test_a_client_that_leaves_before_the_answer_pays_for_its_prompt(
    gateway: Gateway, http: httpx.Client, fixed: FixedChatBackend
) -> None:
    """The backend still works on (and bills) a request whose client timed out."""
    key = new_key()
    headers = {"x-key": key, "x-usage": "100,50", "x-delay-ms": "1500"}
    with (
        httpx.Client(base_url=gateway.url, timeout=0.3) as impatient,
        pytest.raises(httpx.TimeoutException),
    ):
        payload = {"model": MODEL, "messages": HELLO}
        impatient.post("/stream/v1/chat/completions", json=payload, headers=headers)
    assert wait_until(lambda: calls_for(fixed, key) == 1, timeout=2)
    # Counted by the gateway with o200k_base: the 8 tokens of the prompt, not nothing.
    left_settles(http, "stream", key, 1000 - 8)


def _demo_prompt_tokens() -> int:
    # The demo counts 3 to prime the reply, 3 per message, and its role and words.
    return 3 + 3 + 1 + 1


# --- several limits, shadow mode ------------------------------------------------------------


def two(http: httpx.Client, user: str, app: str, usage: str) -> httpx.Response:
    return http.post(
        "/two/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO},
        headers={"x-user": user, "x-app": app, "x-usage": usage},
    )


def probe(http: httpx.Client, path: str, header: str, value: str, name: str) -> int:
    response = http.post(
        f"/{path}/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO},
        headers={header: value, "x-usage": "0,0"},
    )
    assert response.status_code == 200, response.text
    return int(response.headers[name])


def test_when_one_of_two_limits_refuses_the_other_is_not_charged(
    http: httpx.Client, fixed: FixedChatBackend
) -> None:
    """Per-user 200 and per-app 300 tokens per minute, both estimating the prompt."""
    app, alice, bob, carol = new_key(), new_key(), new_key(), new_key()
    ok = two(http, alice, app, "100,50")
    assert ok.status_code == 200
    assert (ok.headers["x-remaining-user"], ok.headers["x-remaining-app"]) == ("50", "150")
    assert two(http, bob, app, "100,45").headers["x-remaining-app"] == "5"
    user_probe = ("user-probe", "x-user")
    app_probe = ("app-probe", "x-app")
    assert probe(http, *app_probe, app, "x-remaining-app") == 5

    # The user limit admits carol (charging her prompt estimate of 8), the app limit refuses:
    # carol's counter gets its tokens back.
    before = fixed.count()
    assert_error(two(http, carol, app, "1,1"), 429, "Token limit is exceeded")
    assert fixed.count() == before
    assert probe(http, *user_probe, carol, "x-remaining-user") == 200
    assert probe(http, *app_probe, app, "x-remaining-app") == 5

    # The user limit refuses alice (50 left, her estimate fits, so: use it up first).
    other_app = new_key()
    assert two(http, alice, other_app, "30,20").headers["x-remaining-user"] == "0"
    assert probe(http, *app_probe, other_app, "x-remaining-app") == 250
    assert_error(two(http, alice, other_app, "1,1"), 429)
    assert probe(http, *app_probe, other_app, "x-remaining-app") == 250


def test_shadow_mode_lets_requests_over_the_limit_through_and_logs_them(
    gateway: Gateway, http: httpx.Client, fixed: FixedChatBackend
) -> None:
    key = new_key()
    statuses, left, ids = [], [], []
    for _ in range(4):
        response = chat(http, "shadow", key, "20,10")
        statuses.append(response.status_code)
        left.append(response.headers.get("x-remaining-tokens"))
        ids.append(response.headers["x-request-id"])
    assert statuses == [200, 200, 200, 200]
    assert left == ["20", "0", "0", "0"]
    assert calls_for(fixed, key) == 4
    records = [access_record(gateway.stdout, request_id) for request_id in ids]
    assert [r.get("shadow_rejections") for r in records] == [
        None,
        None,
        ["TokenLimitExceeded"],
        ["TokenLimitExceeded"],
    ]
    assert all(r["status"] == 200 for r in records)


# --- calls: rate-limit-by-key and quota-by-key -------------------------------------------------


def test_rate_limit_by_key_refuses_with_429_and_an_honest_retry_after(
    http: httpx.Client, fixed: FixedChatBackend
) -> None:
    key = new_key()
    left = [chat(http, "calls", key).headers["x-remaining-calls"] for _ in range(3)]
    assert left == ["2", "1", "0"]
    refused = chat(http, "calls", key)
    body = assert_error(refused, 429, "Rate limit is exceeded")
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 2
    assert body["message"] == f"Rate limit is exceeded. Try again in {wait} seconds."
    assert calls_for(fixed, key) == 3
    time.sleep(wait)  # exactly as long as it said
    assert chat(http, "calls", key).status_code == 200


def test_quota_by_key_refuses_with_403_once_the_calls_are_used(
    http: httpx.Client, fixed: FixedChatBackend
) -> None:
    key = new_key()
    assert [chat(http, "call-quota", key).status_code for _ in range(2)] == [200, 200]
    refused = chat(http, "call-quota", key)
    body = assert_error(refused, 403, "Out of call volume quota. Quota will be replenished in")
    hours, minutes, seconds = map(int, body["message"].rsplit(" ", 1)[1].rstrip(".").split(":"))
    left = hours * 3600 + minutes * 60 + seconds
    assert abs(time.time() + left - _hour_end(datetime.now(UTC))) <= 2 or left <= 2
    assert calls_for(fixed, key) == 2


# --- workers ---------------------------------------------------------------------------------


def test_serving_several_workers_with_in_process_counters_is_refused(
    tmp_path: Path, demo_backend: DemoBackend, fixed: FixedChatBackend
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(limits_config(demo_backend.url, fixed.url)))
    result = subprocess.run(
        [sys.executable, "-m", "aigw", "serve", "--config", str(config), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result
    assert "counters.url" in result.stderr and "Redis" in result.stderr
    assert "--workers" in result.stderr
