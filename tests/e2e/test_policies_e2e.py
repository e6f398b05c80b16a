"""The core policies in one realistic chain, each checked through real HTTP calls.

Two recording backends (`echo-a`, `echo-b`) answer with what they received, so request-side
edits (headers, query, path, backend choice) are visible to the test; the demo backend
answers the rewritten chat operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import (
    CHAT_BODY,
    RecordingBackend,
    assert_error,
    recording_backend,
    request_count,
)
from tests.support import DemoBackend

TEAM_MESSAGE = "A known x-team header is required"
TEAM_EXPRESSION = '@(context.Request.Headers.GetValueOrDefault("x-team", "none").ToLower())'
ANSWERED_BY_EXPRESSION = '@(context.Response.Headers.GetValueOrDefault("x-echo-backend", "none"))'


@pytest.fixture(scope="module")
def echo_a() -> Iterator[RecordingBackend]:
    yield from recording_backend("echo-a")


@pytest.fixture(scope="module")
def echo_b() -> Iterator[RecordingBackend]:
    yield from recording_backend("echo-b")


def header_is(name: str, value: str) -> str:
    return f'@(context.Request.Headers.GetValueOrDefault("{name}", "") == "{value}")'


@pytest.fixture(scope="module")
def gateway_config(
    demo_backend: DemoBackend, echo_a: RecordingBackend, echo_b: RecordingBackend
) -> dict[str, Any]:
    maintenance = {
        "return-response": {
            "set-status": {"code": 503, "reason": "Maintenance"},
            "set-header": [
                {"name": "retry-after", "value": "120"},
                {"name": "content-type", "value": "application/json"},
            ],
            "set-body": '{"statusCode": 503, "message": "Down for maintenance"}',
        }
    }
    return {
        "gateway": {"host": "127.0.0.1", "limits": {"max-body-size": 1024}},
        "backends": {
            "demo": {"url": demo_backend.url, "timeouts": {"connect": 2, "read": 2}},
            "echo-a": {"url": echo_a.url},
            "echo-b": {"url": echo_b.url},
        },
        "policies": {
            "outbound": [{"set-header": {"name": "x-gateway", "value": "aigw"}}],
        },
        "apis": {
            "shop": {
                "type": "http",
                "subscription-required": False,
                "path": "shop",
                "backend": "echo-a",
                "operations": {
                    "get-item": {"method": "GET", "url-template": "/items/{id}"},
                    "chat": {
                        "method": "POST",
                        "url-template": "/chat",
                        "policies": {
                            "inbound": [
                                "base",
                                {"rewrite-uri": {"template": "/v1/chat/completions"}},
                                {"set-backend-service": {"backend-id": "demo"}},
                            ]
                        },
                    },
                },
                "policies": {
                    "inbound": [
                        "base",
                        {
                            "check-header": {
                                "name": "x-team",
                                "failed-check-httpcode": 401,
                                "failed-check-error-message": TEAM_MESSAGE,
                                "ignore-case": True,
                                "value": ["red", "blue"],
                            }
                        },
                        {
                            "set-variable": {
                                "name": "team",
                                "value": TEAM_EXPRESSION,
                            }
                        },
                        {
                            "set-header": {
                                "name": "x-team-label",
                                "value": '@("team-" + context.Variables["team"])',
                            }
                        },
                        {"set-header": {"name": "x-operation", "value": "@(context.Operation.Id)"}},
                        {"set-query-parameter": {"name": "via", "value": "aigw"}},
                        {
                            "choose": {
                                "when": [
                                    {
                                        "condition": header_is("x-maintenance", "on"),
                                        "policies": [maintenance],
                                    },
                                    {
                                        "condition": header_is("x-route", "b"),
                                        "policies": [
                                            {"set-backend-service": {"backend-id": "echo-b"}}
                                        ],
                                    },
                                ]
                            }
                        },
                    ],
                    "outbound": [
                        "base",
                        {
                            "set-header": {
                                "name": "x-answered-by",
                                "value": ANSWERED_BY_EXPRESSION,
                            }
                        },
                    ],
                },
            },
            "guarded": {
                "type": "openai",
                "subscription-required": False,
                "path": "guarded",
                "backend": "echo-a",
                "policies": {
                    "inbound": [
                        "base",
                        {
                            "ip-filter": {
                                "action": "forbid",
                                "address-range": [{"from": "127.0.0.1", "to": "127.0.0.1"}],
                            }
                        },
                    ]
                },
            },
        },
    }


def test_request_edits_reach_the_backend_and_response_edits_the_client(
    http: httpx.Client,
) -> None:
    response = http.get("/shop/items/42", params={"keep": "1"}, headers={"x-team": "RED"})
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["backend"] == "echo-a"
    assert seen["method"] == "GET"
    assert seen["path"] == "/items/42"
    assert ["keep", "1"] in seen["query"]
    assert ["via", "aigw"] in seen["query"]  # set-query-parameter
    assert seen["headers"]["x-team-label"] == "team-red"  # set-variable + expression
    assert seen["headers"]["x-operation"] == "get-item"
    assert response.headers["x-gateway"] == "aigw"  # outbound set-header, global scope
    assert response.headers["x-answered-by"] == "echo-a"  # reads the backend's header
    # A generated request id is sent upstream too, and returned to the client.
    assert seen["headers"]["x-request-id"] == response.headers["x-request-id"]


def test_choose_switches_the_backend_by_header(
    http: httpx.Client, echo_a: RecordingBackend, echo_b: RecordingBackend
) -> None:
    before_a, before_b = request_count(echo_a), request_count(echo_b)
    routed = http.get("/shop/items/7", headers={"x-team": "blue", "x-route": "b"})
    assert routed.status_code == 200, routed.text
    assert routed.json()["backend"] == "echo-b"
    assert routed.json()["path"] == "/items/7"
    assert routed.headers["x-answered-by"] == "echo-b"
    default = http.get("/shop/items/7", headers={"x-team": "blue", "x-route": "a"})
    assert default.json()["backend"] == "echo-a"
    assert (request_count(echo_a), request_count(echo_b)) == (before_a + 1, before_b + 1)


def test_return_response_short_circuits_on_a_condition(
    http: httpx.Client, echo_a: RecordingBackend, echo_b: RecordingBackend
) -> None:
    before = request_count(echo_a, echo_b)
    response = http.get("/shop/items/1", headers={"x-team": "red", "x-maintenance": "on"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "120"
    assert response.json() == {"statusCode": 503, "message": "Down for maintenance"}
    assert request_count(echo_a, echo_b) == before


def test_rewrite_uri_sends_an_http_operation_to_the_backend_path(http: httpx.Client) -> None:
    response = http.post("/shop/chat", json=CHAT_BODY, headers={"x-team": "blue"})
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"].startswith("This is a demo reply to")
    assert response.headers["x-gateway"] == "aigw"


@pytest.mark.parametrize("team", [None, "green"], ids=["missing", "not-allowed"])
def test_check_header_rejects_before_the_backend(
    http: httpx.Client, echo_a: RecordingBackend, echo_b: RecordingBackend, team: str | None
) -> None:
    before = request_count(echo_a, echo_b)
    headers = {"x-team": team} if team else {}
    response = http.get("/shop/items/1", headers=headers)
    assert_error(response, 401, TEAM_MESSAGE)
    assert request_count(echo_a, echo_b) == before


def test_ip_filter_forbids_the_caller(
    http: httpx.Client, echo_a: RecordingBackend, echo_b: RecordingBackend
) -> None:
    before = request_count(echo_a, echo_b)
    response = http.post("/guarded/v1/chat/completions", json=CHAT_BODY)
    assert_error(response, 403)
    assert request_count(echo_a, echo_b) == before
