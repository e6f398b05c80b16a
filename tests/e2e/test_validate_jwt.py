"""validate-jwt and llm-model-access through the real gateway, against a real OpenID Connect
provider (oidc-provider under Node.js) issuing client-credentials tokens: the openai SDK with
a bearer token, every rejection (never a backend call, never a 500), claims in expressions,
model access per role, key rotation, a flood of unknown key ids, and the provider going down."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.helpers import (
    CHAT_BODY,
    RecordingBackend,
    assert_error,
    recording_backend,
    request_count,
    wait_until,
)
from tests.oidc_provider import APP_CHATBOT, APP_NONE, APP_PROD, OidcProvider
from tests.support import Gateway

AUDIENCE = "api://aigw"
MODELS = ["gpt-4o-prod", "gpt-4o-mini", "gpt-4.1-nano", "text-embedding-3-small"]


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with OidcProvider(Path(tmp_path_factory.mktemp("idp"))) as provider:
        yield provider


@pytest.fixture(scope="module")
def echo() -> Iterator[RecordingBackend]:
    yield from recording_backend("echo")


def jwt_policies(idp: OidcProvider, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "validate-jwt": {
                "openid-config": [{"url": idp.discovery_url, "unknown-key-cooldown": 2}],
                "audiences": [AUDIENCE],
                "output-token-variable-name": "jwt",
                **extra,
            }
        },
        {
            "llm-model-access": {
                "rules": [
                    {"claim-values": ["ProdWorkload"], "models": ["gpt-4o-prod", "gpt-4.1-*"]},
                    {"claim-values": ["Chatbot"], "models": ["gpt-4o-mini"]},
                    {"claim-values": ["*"], "models": ["text-embedding-3-small"]},
                ]
            }
        },
    ]


class GzipModels(BaseHTTPRequestHandler):
    """A backend that sends its model list gzip-compressed whatever the client asked for,
    and remembers the Accept-Encoding it got."""

    accept_encoding: list[str | None] = []

    def do_GET(self) -> None:
        GzipModels.accept_encoding.append(self.headers.get("accept-encoding"))
        listing = {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]}
        body = gzip.compress(json.dumps(listing).encode())
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def gzip_backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), GzipModels)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    idp: OidcProvider,
    echo: RecordingBackend,
    gzip_backend: str,
) -> Iterator[Gateway]:
    open_api = {"subscription-required": False}
    config = {
        "gateway": {"host": "127.0.0.1"},
        "backends": {
            "demo": {"type": "demo", "demo": {"extra-models": MODELS}},
            "echo": {"url": echo.url},
            "gzip": {"url": gzip_backend},
        },
        "policies": {
            "outbound": [
                {"set-header": {"name": "x-oid", "value": '@(context.Claims?["oid"] ?? "none")'}},
                {
                    "set-header": {
                        "name": "x-roles",
                        "value": '@(context.Claims?.GetValueOrDefault("roles", "") ?? "none")',
                    }
                },
            ],
            "on-error": [
                {"set-header": {"name": "x-error", "value": "@(context.LastError.Reason)"}}
            ],
        },
        "apis": {
            "openai": {
                "type": "openai",
                "path": "",
                "backend": "demo",
                **open_api,
                "policies": {"inbound": jwt_policies(idp)},
            },
            "echo": {
                "type": "openai",
                "path": "echo",
                "backend": "echo",
                **open_api,
                "policies": {"inbound": jwt_policies(idp)},
            },
            "gzip": {
                "type": "openai",
                "path": "gzip",
                "backend": "gzip",
                **open_api,
                "policies": {"inbound": jwt_policies(idp)},
            },
            "keeps": {
                "type": "openai",
                "path": "keeps",
                "backend": "echo",
                **open_api,
                "policies": {"inbound": jwt_policies(idp, **{"keep-token": True})},
            },
        },
    }
    gw = Gateway(Path(tmp_path_factory.mktemp("jwt-gateway")), config)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


def sdk(gateway: Gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)


def chat(
    http: httpx.Client, token: str | None, model: str = "gpt-4o-prod", api: str = ""
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    prefix = f"/{api}" if api else ""
    return http.post(
        f"{prefix}/v1/chat/completions", json={**CHAT_BODY, "model": model}, headers=headers
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(
    token: str, *, header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None
) -> str:
    """The token with its header and/or payload replaced, signature kept."""
    head, payload, signature = token.split(".")
    if header is not None:
        head = b64(json.dumps(header).encode())
    if claims is not None:
        payload = b64(json.dumps(claims).encode())
    return f"{head}.{payload}.{signature}"


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, payload, _ = token.split(".")
    decode = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
    return decode(head), decode(payload)


# -- admitted -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256"])
def test_the_openai_sdk_with_a_provider_token(
    gateway: Gateway, idp: OidcProvider, alg: str
) -> None:
    client = sdk(gateway, idp.token("app-prod", alg=alg))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-prod", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content
    assert raw.http_response.headers["x-oid"] == APP_PROD.oid
    assert raw.http_response.headers["x-roles"] == "ProdWorkload"
    stream = client.chat.completions.create(
        model="gpt-4.1-nano", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert any(chunk.choices and chunk.choices[0].delta.content for chunk in stream)


def test_the_token_never_reaches_the_backend_unless_kept(
    http: httpx.Client, idp: OidcProvider
) -> None:
    token = idp.token("app-prod")
    seen = chat(http, token, api="echo").json()
    assert "authorization" not in seen["headers"] and token not in json.dumps(seen)
    kept = chat(http, token, api="keeps").json()
    assert kept["headers"]["authorization"] == f"Bearer {token}"


# -- refused: 401, no backend call ----------------------------------------------------------


def test_no_token_is_401_jwt_not_present(http: httpx.Client, echo: RecordingBackend) -> None:
    before = request_count(echo)
    response = chat(http, None, api="echo")
    body = assert_error(response, 401)
    assert body["message"] == "JWT not present."
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-error"] == "TokenNotPresent"
    assert request_count(echo) == before


def bad_tokens(idp: OidcProvider) -> dict[str, tuple[str, str]]:
    """name → (token, LastError reason)."""
    good = idp.token("app-prod")
    header, claims = parts(good)
    return {
        "garbage": ("not-a-jwt", "JwtInvalid"),
        "two segments": (".".join(good.split(".")[:2]), "JwtInvalid"),
        "bad base64": (good.replace(".", ".*", 1), "JwtInvalid"),
        "header not json": (b64(b"{nope") + "." + good.split(".", 1)[1], "JwtInvalid"),
        "bit-flipped signature": (
            good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:],
            "TokenSignatureInvalid",
        ),
        "edited payload": (
            forged(good, claims={**claims, "roles": ["ProdWorkload", "Admin"]}),
            "TokenSignatureInvalid",
        ),
        "alg none": (
            forged(good, header={**header, "alg": "none"}).rsplit(".", 1)[0] + ".",
            "TokenSignatureInvalid",
        ),
        "alg NoNe": (forged(good, header={**header, "alg": "NoNe"}), "TokenSignatureInvalid"),
        "embedded jwk": (
            forged(good, header={**header, "jwk": {"kty": "oct", "k": "AAAA"}}),
            "JwtInvalid",
        ),
        "jku": (forged(good, header={**header, "jku": "http://127.0.0.1:1/keys"}), "JwtInvalid"),
        "crit": (forged(good, header={**header, "crit": ["exp"]}), "JwtInvalid"),
        "HS256 with the public key": (
            forged(good, header={**header, "alg": "HS256"}),
            "TokenSignatureKeyNotFound",
        ),
        "expired": (idp.token("app-prod", claims={"exp": 1_000_000_000}), "TokenExpired"),
        "no exp": (idp.token("app-prod", claims={"exp": None}), "TokenExpirationMissing"),
        "not yet valid": (idp.token("app-prod", claims={"nbf": 4_000_000_000}), "TokenNotYetValid"),
        "wrong audience": (
            idp.token("app-prod", resource="api://other"),
            "TokenAudienceNotAllowed",
        ),
        "audience case": (idp.token("app-prod", resource="API://aigw"), "TokenAudienceNotAllowed"),
        "wrong issuer": (
            idp.token("app-prod", claims={"iss": idp.issuer + "/"}),
            "TokenIssuerNotAllowed",
        ),
        "oversized": (forged(good, claims={**claims, "pad": "x" * 20_000}), "JwtInvalid"),
    }


def test_every_bad_token_is_401_invalid_jwt_without_a_backend_call(
    http: httpx.Client, idp: OidcProvider, echo: RecordingBackend
) -> None:
    before = request_count(echo)
    for name, (token, reason) in bad_tokens(idp).items():
        response = chat(http, token, api="echo")
        body = assert_error(response, 401)
        assert body["message"] == "Invalid JWT.", name
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"', name
        assert response.headers["x-error"] == reason, (name, response.headers["x-error"])
    assert request_count(echo) == before


def test_a_token_sent_twice_or_with_another_scheme_is_refused(
    http: httpx.Client, idp: OidcProvider
) -> None:
    token = idp.token("app-prod")
    twice = http.post(
        "/v1/chat/completions",
        json=CHAT_BODY,
        headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
    )
    assert_error(twice, 401)
    also_in_query = http.post(
        f"/v1/chat/completions?access_token={token}",
        json=CHAT_BODY,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_error(also_in_query, 401)
    basic = http.post(
        "/v1/chat/completions", json=CHAT_BODY, headers={"Authorization": f"Basic {token}"}
    )
    assert_error(basic, 401)


# -- model access ---------------------------------------------------------------------------


def test_roles_decide_which_models_a_caller_may_use(http: httpx.Client, idp: OidcProvider) -> None:
    prod, chatbot, none = (idp.token(c.client_id) for c in (APP_PROD, APP_CHATBOT, APP_NONE))
    assert chat(http, prod, "gpt-4o-prod").status_code == 200
    assert chat(http, prod, "GPT-4.1-nano").status_code == 200  # case-insensitive
    assert chat(http, chatbot, "gpt-4o-mini").status_code == 200
    denied = chat(http, chatbot, "gpt-4o-prod")
    body = assert_error(denied, 403)
    assert body["message"] == "Access to this model is not allowed."
    assert denied.headers["x-error"] == "ModelAccessDenied"
    assert_error(chat(http, none, "gpt-4o-mini"), 403)
    embedded = http.post(
        "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "hi"},
        headers={"Authorization": f"Bearer {none}"},
    )
    assert embedded.status_code == 200  # the "*" rule: any validated caller


def test_the_model_list_shows_only_what_the_caller_may_use(
    gateway: Gateway, idp: OidcProvider
) -> None:
    def listed(client_id: str) -> list[str]:
        return sorted(model.id for model in sdk(gateway, idp.token(client_id)).models.list())

    assert listed("app-prod") == ["gpt-4.1-nano", "gpt-4o-prod", "text-embedding-3-small"]
    assert listed("app-chatbot") == ["gpt-4o-mini", "text-embedding-3-small"]
    assert listed("app-none") == ["text-embedding-3-small"]


def test_a_gzip_model_list_is_filtered_too(gateway: Gateway, idp: OidcProvider) -> None:
    # The openai SDK asks for gzip; the gateway asks the backend for an uncompressed list
    # but copes with one compressed anyway.
    client = openai.OpenAI(
        base_url=gateway.url + "/gzip/v1", api_key=idp.token("app-chatbot"), max_retries=0
    )
    raw = client.models.with_raw_response.list()
    assert sorted(model.id for model in raw.parse()) == ["gpt-4o-mini", "text-embedding-3-small"]
    assert "content-encoding" not in raw.http_response.headers
    assert GzipModels.accept_encoding[-1] == "identity"


# -- keys over time -------------------------------------------------------------------------


def test_a_flood_of_unknown_key_ids_costs_the_provider_one_fetch(
    http: httpx.Client, idp: OidcProvider
) -> None:
    good = idp.token("app-prod")
    assert chat(http, good).status_code == 200
    header, _ = parts(good)
    fetches, started = idp.jwks_fetches, time.monotonic()
    for _ in range(40):
        response = chat(http, forged(good, header={**header, "kid": uuid.uuid4().hex}))
        assert response.status_code == 401
        assert response.headers["x-error"] == "TokenSignatureKeyNotFound"
        assert chat(http, good).status_code == 200  # valid traffic goes on
    # One refetch per cool-down (2 s here) at the most, however many unknown kids arrive.
    assert idp.jwks_fetches - fetches <= 1 + int((time.monotonic() - started) / 2)


def test_key_rotation_is_picked_up_by_the_new_key_id(http: httpx.Client, idp: OidcProvider) -> None:
    before = idp.token("app-prod")  # never used before the rotation: not in any cache
    assert wait_until(lambda: idp.jwks_fetches >= 1)
    idp.rotate_keys(keep_old=False)
    after = idp.token("app-prod")
    assert parts(after)[0]["kid"] != parts(before)[0]["kid"]
    # The first token with the new kid may hit the cool-down of the flood test above.
    assert wait_until(lambda: chat(http, after).status_code == 200, timeout=6)
    retired = chat(http, before)
    assert retired.status_code == 401 and retired.headers["x-error"] in (
        "TokenSignatureKeyNotFound",
        "TokenSignatureInvalid",
    )


def test_cached_keys_keep_working_while_the_provider_is_down(
    http: httpx.Client, idp: OidcProvider
) -> None:
    token = idp.token("app-chatbot", alg="ES256")
    assert wait_until(lambda: chat(http, token, "gpt-4o-mini").status_code == 200, timeout=6)
    fresh = idp.token("app-chatbot")  # minted before the outage, never seen by the gateway
    idp.stop()
    try:
        assert chat(http, fresh, "gpt-4o-mini").status_code == 200
    finally:
        idp.start()


def test_a_gateway_started_while_the_provider_is_down_fails_closed_then_recovers(
    tmp_path: Path, idp: OidcProvider
) -> None:
    token = idp.token("app-prod")
    idp.stop()
    config = {
        "backends": {"demo": {"type": "demo"}},
        "apis": {
            "openai": {
                "type": "openai",
                "backend": "demo",
                "subscription-required": False,
                "policies": {"inbound": jwt_policies(idp)},
            }
        },
    }
    gateway = Gateway(tmp_path, config)
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            refused = chat(client, token)
            assert_error(refused, 401)
            idp.start()
            assert wait_until(lambda: chat(client, token).status_code == 200, timeout=8)
    finally:
        gateway.stop()
        if not idp.running:
            idp.start()
    assert "Traceback" not in gateway.stderr()
