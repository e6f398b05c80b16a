"""llm-model-access: claim values → allowed models, 403 otherwise, and the filtered /models."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw.context import ApiInfo, OperationInfo, RequestContext, Response
from aigw.errors import BackendProtocolError, GatewayError
from aigw.headers import Headers
from aigw.jwt.validator import Jwt
from aigw.policies.base import run_statements
from aigw.policies.llm_model_access import MAX_MODEL_LIST_BYTES, ModelAccess
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx

RULES = {
    "rules": [
        {"claim-values": ["ProdWorkload"], "models": ["gpt-4o-prod", "gpt-4.1-*"]},
        {"claim-values": ["Chatbot"], "models": "gpt-4o-mini"},
        {"claim-values": ["*"], "models": ["text-embedding-3-small"]},
    ]
}


def policy(**overrides: Any) -> ModelAccess:
    built = build_one("llm-model-access", {**RULES, **overrides})
    assert isinstance(built, ModelAccess)
    return built


def ctx_for(
    roles: Any,
    *,
    model: str | None = None,
    deployment: str | None = None,
    op: str = "chat-completions",
    method: str | None = None,
    api_type: str = "openai",
) -> RequestContext:
    ctx = make_ctx()
    method = method or ("GET" if op == "models" else "POST")
    ctx.api = ApiInfo("api", "Api", "api", api_type)
    ctx.operation = OperationInfo(op, op, method, "/x")
    ctx.request.method = method
    ctx.model, ctx.deployment_id = model, deployment
    if roles is not None:
        ctx.jwt = Jwt({"alg": "RS256"}, {"roles": roles, "sub": "app"})
    return ctx


def decide(access: ModelAccess, ctx: RequestContext) -> int:
    try:
        asyncio.run(access.apply(ctx))
    except GatewayError as exc:
        assert (
            exc.reason == "ModelAccessDenied"
            and exc.message == "Access to this model is not allowed."
        )
        return exc.status_code
    return 200


@pytest.mark.parametrize(
    ("roles", "model", "expected"),
    [
        (["ProdWorkload"], "gpt-4o-prod", 200),
        (["ProdWorkload"], "GPT-4.1-NANO", 200),  # case-insensitive, wildcard
        (["ProdWorkload"], "gpt-4o-mini", 403),
        (["Chatbot"], "gpt-4o-mini", 200),
        (["Chatbot"], "gpt-4o-prod", 403),
        ([], "text-embedding-3-small", 200),  # "*" = any validated caller
        ([], "gpt-4o-mini", 403),
        ("Chatbot", "gpt-4o-mini", 200),  # a single string claim
        (["Chatbot", "ProdWorkload"], "gpt-4o-prod", 200),
    ],
)
def test_rules_decide_by_claim_and_model(roles: Any, model: str, expected: int) -> None:
    assert decide(policy(), ctx_for(roles, model=model)) == expected


def test_the_routed_deployment_wins_over_the_body_model() -> None:
    ctx = ctx_for(["Chatbot"], model="gpt-4o-mini", deployment="gpt-4o-prod")
    assert decide(policy(), ctx) == 403


def test_without_a_validated_token_or_a_model_nothing_is_allowed() -> None:
    assert decide(policy(), ctx_for(None, model="text-embedding-3-small")) == 403
    assert decide(policy(), ctx_for(["ProdWorkload"], model=None)) == 403


def test_a_separator_splits_a_string_claim() -> None:
    access = policy(claim="scp", separator=" ")
    ctx = ctx_for(None, model="gpt-4o-mini")
    ctx.jwt = Jwt({}, {"scp": "read Chatbot write"})
    assert decide(access, ctx) == 200


def test_the_model_list_is_filtered_not_refused() -> None:
    assert decide(policy(), ctx_for(None, op="models")) == 200
    assert decide(policy(), ctx_for(None, op="models", api_type="azure-openai")) == 200


@pytest.mark.parametrize(
    ("method", "api_type"),
    [
        ("GET", "http"),  # an `http` API's own operation named `models`
        ("POST", "http"),
        ("DELETE", "http"),
        ("POST", "openai"),  # the built-in model list, by a policy-changed method
        ("DELETE", "azure-openai"),
    ],
)
def test_only_a_get_of_the_built_in_model_list_skips_the_check(method: str, api_type: str) -> None:
    ctx = ctx_for(["Chatbot"], op="models", method=method, api_type=api_type)
    ctx.request.headers.set("accept-encoding", "gzip")
    assert decide(policy(), ctx) == 403
    assert ctx.request.headers.get_all("accept-encoding") == ["gzip"]
    allowed = ctx_for(["Chatbot"], op="models", method=method, api_type=api_type)
    allowed.deployment_id = "gpt-4o-mini"
    assert decide(policy(), allowed) == 200


def test_an_http_apis_own_models_answer_is_not_filtered() -> None:
    ctx = ctx_for(["Chatbot"], op="models", api_type="http")
    ctx.deployment_id = "gpt-4o-mini"
    answer = listing("gpt-4o-prod", "gpt-4o-mini")
    assert asyncio.run(policy().on_response(ctx, answer)) is answer
    assert answer.stream is not None  # relayed as it came, never read


def test_other_operations_are_checked_too_never_let_through() -> None:
    # An `http` API's own operations: decided by a routed deployment id, refused without one.
    assert decide(policy(), ctx_for(None, op="get-item")) == 403
    assert decide(policy(), ctx_for(["Chatbot"], op="get-item")) == 403
    assert decide(policy(), ctx_for(["Chatbot"], op="proxy", deployment="gpt-4o-mini")) == 200
    assert decide(policy(), ctx_for(["Chatbot"], op="proxy", deployment="gpt-4o-prod")) == 403


def test_shadow_mode_records_instead_of_refusing() -> None:
    access = policy(shadow=True)
    ctx = ctx_for(["Chatbot"], model="gpt-4o-prod")
    assert asyncio.run(run_statements([access], ctx)) is None
    assert ctx.shadow_rejections == ["ModelAccessDenied"]


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for index in range(0, len(body), 7):
        yield body[index : index + 7]


def listing(*models: str) -> Response:
    body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})
    return Response(
        200, Headers([("content-type", "application/json")]), stream=_chunks(body.encode())
    )


def test_the_model_list_keeps_only_allowed_models() -> None:
    access = policy()
    ctx = ctx_for(["Chatbot"], op="models")
    filtered = asyncio.run(
        access.on_response(ctx, listing("gpt-4o-prod", "gpt-4o-mini", "text-embedding-3-small"))
    )
    assert filtered.stream is None
    assert [m["id"] for m in json.loads(filtered.body)["data"]] == [
        "gpt-4o-mini",
        "text-embedding-3-small",
    ]


@pytest.mark.parametrize("status", [201, 203, 206, 400, 404, 429, 500])
def test_a_model_list_is_filtered_whatever_its_status(status: int) -> None:
    answer = listing("gpt-4o-prod", "gpt-4o-mini")
    answer.status_code = status
    filtered = asyncio.run(policy().on_response(ctx_for(["Chatbot"], op="models"), answer))
    assert filtered.status_code == status
    assert [m["id"] for m in json.loads(filtered.body)["data"]] == ["gpt-4o-mini"]


@pytest.mark.parametrize("status", [401, 429, 503])
def test_an_error_answer_without_a_list_is_relayed_as_it_came(status: int) -> None:
    error = b'{"error": {"code": "429", "message": "Rate limit"}}'
    answer = Response(status, Headers([("retry-after", "3")]), stream=_chunks(error))
    relayed = asyncio.run(policy().on_response(ctx_for(["Chatbot"], op="models"), answer))
    assert (relayed.status_code, relayed.body) == (status, error)
    assert relayed.headers.get("retry-after") == "3"


def test_a_success_without_a_list_is_not_passed_on() -> None:
    answer = Response(203, Headers(), stream=_chunks(b'{"models": ["gpt-4o-prod"]}'))
    with pytest.raises(BackendProtocolError):
        asyncio.run(policy().on_response(ctx_for(["Chatbot"], op="models"), answer))


def test_a_model_list_that_cannot_be_read_is_not_passed_on() -> None:
    access = policy()
    broken = Response(200, Headers(), stream=_chunks(b"<html>oops</html>"))
    with pytest.raises(BackendProtocolError):
        asyncio.run(access.on_response(ctx_for(["Chatbot"], op="models"), broken))


def test_the_model_list_is_asked_for_uncompressed() -> None:
    ctx = ctx_for(["Chatbot"], op="models")
    ctx.request.headers.set("accept-encoding", "gzip, deflate, br, zstd")
    assert decide(policy(), ctx) == 200
    assert ctx.request.headers.get_all("accept-encoding") == ["identity"]


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", "deflate"])
def test_a_compressed_model_list_is_filtered_and_sent_uncompressed(encoding: str) -> None:
    # Backends may compress anyway (and the openai SDK asks for gzip).
    plain = json.dumps({"object": "list", "data": [{"id": "gpt-4o-prod"}, {"id": "gpt-4o-mini"}]})
    packed = (
        gzip.compress(plain.encode())
        if "gzip" in encoding.lower()
        else zlib.compress(plain.encode())
    )
    headers = [("content-type", "application/json"), ("content-encoding", encoding)]
    headers.append(("content-length", str(len(packed))))
    response = Response(200, Headers(headers), stream=_chunks(packed))
    filtered = asyncio.run(policy().on_response(ctx_for(["Chatbot"], op="models"), response))
    assert [m["id"] for m in json.loads(filtered.body)["data"]] == ["gpt-4o-mini"]
    assert "content-encoding" not in filtered.headers
    assert "content-length" not in filtered.headers  # set from the new body when sent


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("br", b"\x0b\x02\x80{}\x03"),
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(b'{"data": []}') + b"trailing"),
        ("gzip", gzip.compress(b'{"data": []}')[:-4]),  # truncated
        ("gzip", gzip.compress(b" " * (MAX_MODEL_LIST_BYTES + 1))),  # a decompression bomb
        ("identity", b"[" * 100_000),  # nested too deeply for the parser: 502, not 500
    ],
)
def test_a_model_list_that_cannot_be_decoded_is_not_passed_on(encoding: str, body: bytes) -> None:
    response = Response(200, Headers([("content-encoding", encoding)]), stream=_chunks(body))
    with pytest.raises(BackendProtocolError):
        asyncio.run(policy().on_response(ctx_for(["Chatbot"], op="models"), response))


def test_config_errors() -> None:
    assert issues_of("llm-model-access", {"rules": []})
    assert issues_of("llm-model-access", {"rules": [{"claim-values": ["a"]}]})
    _, problems = build([{"llm-model-access": RULES}], section="outbound")
    assert problems
