"""Subscription keys through the real gateway: APIM's authorization matrix, where keys are read,
that they never reach a backend, rotation, suspension and expiry without a restart, and the
openai SDK with custom key headers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import AZURE_API_VERSION
from tests.e2e.helpers import (
    CHAT_BODY,
    RecordingBackend,
    access_record,
    assert_error,
    recording_backend,
    wait_until,
)
from tests.e2e.subscriptions import StoreAdmin
from tests.support import DemoBackend, Gateway

KEY_HEADER = "Ocp-Apim-Subscription-Key"
PRODUCTS = {
    "team": ["keyed", "nosub", "openprod", "azure", "bearer"],
    "free": ["openprod", "openprod-nosub"],
    "other": ["other"],
}
SHOW_CONTEXT = [
    {"set-header": {"name": "x-subscription", "value": '@(context.Subscription?.Id ?? "none")'}},
    {"set-header": {"name": "x-product", "value": '@(context.Product?.Id ?? "none")'}},
    {"set-header": {"name": "x-user", "value": '@(context.User?.Id ?? "none")'}},
]


def echo_api(path: str, **extra: Any) -> dict[str, Any]:
    return {"type": "openai", "path": path, "backend": "echo", **extra}


@pytest.fixture(scope="module")
def echo() -> Iterator[RecordingBackend]:
    yield from recording_backend("echo")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("subscriptions"))


@pytest.fixture(scope="module")
def gateway(workdir: Path, demo_backend: DemoBackend, echo: RecordingBackend) -> Iterator[Gateway]:
    config = {
        "gateway": {"host": "127.0.0.1"},
        "store": {"url": "sqlite:subs.db", "refresh-interval": 0.2},
        "backends": {"demo": {"url": demo_backend.url}, "echo": {"url": echo.url}},
        "policies": {
            "outbound": SHOW_CONTEXT,
            "on-error": [
                *SHOW_CONTEXT,
                {"set-header": {"name": "x-error", "value": "@(context.LastError.Reason)"}},
            ],
        },
        "products": {
            "team": {
                "apis": PRODUCTS["team"],
                "policies": {
                    "outbound": [
                        "base",
                        {"set-header": {"name": "x-team-policy", "value": "ran"}},
                    ]
                },
            },
            "free": {"subscription-required": False, "apis": PRODUCTS["free"]},
            "other": {"apis": PRODUCTS["other"]},
        },
        "apis": {
            "keyed": echo_api("keyed"),
            "nosub": echo_api("nosub", **{"subscription-required": False}),
            "openprod": echo_api("openprod"),
            "openprod-nosub": echo_api("openprod-nosub", **{"subscription-required": False}),
            "other": echo_api("other"),
            "azure": {
                "type": "azure-openai",
                "path": "openai",
                "backend": "demo",
                "subscription-key-parameter-names": {"header": "api-key"},
            },
            "bearer": {
                "type": "openai",
                "path": "",
                "backend": "demo",
                "subscription-key-parameter-names": {"header": "Authorization"},
            },
        },
    }
    gw = Gateway(workdir, config)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def admin(gateway: Gateway, workdir: Path) -> StoreAdmin:
    return StoreAdmin("sqlite:subs.db", workdir, PRODUCTS)


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def keys(admin: StoreAdmin, client: httpx.Client) -> dict[str, str]:
    """One key per scope, created before the gateway's first poll picks them up."""
    made = {
        "team": admin.keys("/products/team", owner_id="alice")[1],
        "other-product": admin.keys("/products/other")[1],
        "keyed-api": admin.keys("/apis/keyed")[1],
        "all-apis": admin.keys("/apis")[1],
    }
    assert wait_until(lambda: chat(client, "keyed", made["all-apis"]).status_code == 200)
    return made


def chat(
    client: httpx.Client, api: str, key: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    sent = {KEY_HEADER: key} if key is not None else {}
    return client.post(
        f"/{api}/v1/chat/completions", json=CHAT_BODY, headers={**sent, **(headers or {})}
    )


def context_of(response: httpx.Response) -> tuple[str, str]:
    return response.headers["x-subscription"], response.headers["x-product"]


# -- APIM's matrix -------------------------------------------------------------------------
# Rows: (is there an open product?, does the API require a subscription?).


@pytest.mark.parametrize(
    ("key_name", "product"),
    [("team", "team"), ("keyed-api", "none"), ("all-apis", "none")],
)
def test_products_required_api_required_accepts_keys_in_scope(
    client: httpx.Client, keys: dict[str, str], key_name: str, product: str
) -> None:
    response = chat(client, "keyed", keys[key_name])
    assert response.status_code == 200, response.text
    assert response.headers["x-subscription"] != "none"
    assert response.headers["x-product"] == product
    # Product policies run only for calls made with that product's key.
    assert ("x-team-policy" in response.headers) == (product == "team")


def test_products_required_api_required_denies_other_keys_and_no_key(
    client: httpx.Client, keys: dict[str, str]
) -> None:
    denied = chat(client, "keyed", keys["other-product"])
    assert_error(denied, 401, "invalid subscription key")
    assert denied.headers["x-error"] == "SubscriptionKeyInvalid"
    missing = chat(client, "keyed")
    body = assert_error(missing, 401, "missing subscription key")
    assert body["message"] == (
        "Access denied due to missing subscription key. "
        "Make sure to include subscription key when making requests to an API."
    )
    assert missing.headers["www-authenticate"] == (
        f'AzureApiManagementKey realm="{client.base_url}/keyed",name="{KEY_HEADER}",type="header"'
    )
    assert missing.headers["x-error"] == "SubscriptionKeyNotFound"
    assert assert_error(chat(client, "keyed", "no-such-key"), 401)


@pytest.mark.parametrize(
    ("headers", "mention"),
    [({}, "missing subscription key"), ({KEY_HEADER: "no-such-key"}, "invalid subscription key")],
)
def test_the_key_is_checked_before_the_body(
    client: httpx.Client, headers: dict[str, str], mention: str
) -> None:
    # APIM's subscription check comes right after routing: a caller without a valid key
    # learns nothing about what the API expects in a body, and costs no JSON parsing.
    response = client.post(
        "/keyed/v1/chat/completions",
        content=b"not json",
        headers={"content-type": "application/json", **headers},
    )
    assert_error(response, 401, mention)


@pytest.mark.parametrize("key_name", ["team", "other-product", "bogus", None])
def test_products_required_api_not_required_allows_any_key_and_none(
    client: httpx.Client, keys: dict[str, str], key_name: str | None
) -> None:
    key = keys.get(key_name or "", "bogus") if key_name else None
    response = chat(client, "nosub", key)
    assert response.status_code == 200
    # The key is ignored (APIM): the call runs without a subscription context.
    assert context_of(response) == ("none", "none")


def test_open_product_api_required(client: httpx.Client, keys: dict[str, str]) -> None:
    in_scope = chat(client, "openprod", keys["team"])
    assert in_scope.status_code == 200 and in_scope.headers["x-product"] == "team"
    assert chat(client, "openprod", keys["all-apis"]).status_code == 200
    anonymous = chat(client, "openprod")
    assert anonymous.status_code == 200
    assert context_of(anonymous) == ("none", "free")
    # A key of another scope is refused; a key that matches nothing is ignored (APIM's flow).
    assert_error(chat(client, "openprod", keys["other-product"]), 401, "invalid")
    unknown = chat(client, "openprod", "no-such-key")
    assert unknown.status_code == 200 and context_of(unknown) == ("none", "free")


@pytest.mark.parametrize("key_name", ["team", "other-product", "bogus", None])
def test_open_product_api_not_required_allows_everything_in_the_open_product(
    client: httpx.Client, keys: dict[str, str], key_name: str | None
) -> None:
    key = keys.get(key_name or "", "bogus") if key_name else None
    response = chat(client, "openprod-nosub", key)
    assert response.status_code == 200
    assert context_of(response) == ("none", "free")


# -- the key never travels on; where it is read ----------------------------------------------


def test_the_key_never_reaches_the_backend(
    client: httpx.Client, keys: dict[str, str], echo: RecordingBackend
) -> None:
    key = keys["team"]
    response = client.post(
        "/keyed/v1/chat/completions?subscription-key=" + key + "&keep=1",
        json=CHAT_BODY,
        headers={KEY_HEADER: key, "x-request-id": "no-key-upstream"},
    )
    assert response.status_code == 200
    seen = response.json()
    assert key not in str(seen)
    assert KEY_HEADER.lower() not in seen["headers"]
    assert seen["raw_query"] == "keep=1"
    recorded = [
        r for r in echo.recorder.requests if r["headers"].get("x-request-id") == "no-key-upstream"
    ]
    assert recorded and key not in str(recorded)


def test_query_parameter_is_read_only_without_the_header(
    client: httpx.Client, keys: dict[str, str]
) -> None:
    key = keys["team"]
    by_query = client.post(f"/keyed/v1/chat/completions?subscription-key={key}", json=CHAT_BODY)
    assert by_query.status_code == 200 and by_query.headers["x-product"] == "team"
    header_wins = client.post(
        f"/keyed/v1/chat/completions?subscription-key={key}",
        json=CHAT_BODY,
        headers={KEY_HEADER: "wrong"},
    )
    assert_error(header_wins, 401, "invalid")


def test_a_key_header_sent_twice_is_a_bad_request(
    client: httpx.Client, keys: dict[str, str]
) -> None:
    key = keys["team"]
    response = client.post(
        "/keyed/v1/chat/completions",
        json=CHAT_BODY,
        headers=[(KEY_HEADER, key), (KEY_HEADER, key)],
    )
    assert_error(response, 400, "more than once")


def test_access_log_names_the_subscription_never_the_key(
    gateway: Gateway, client: httpx.Client, keys: dict[str, str]
) -> None:
    key = keys["team"]
    response = chat(client, "keyed", key, headers={"x-request-id": "log-sub"})
    assert response.status_code == 200
    record = access_record(gateway.stdout, "log-sub")
    assert record["subscription"] == response.headers["x-subscription"]
    assert record["product"] == "team"
    assert key not in gateway.stdout() + gateway.stderr()


# -- the openai SDK with its own key headers ------------------------------------------------


def test_azure_openai_sdk_sends_its_key_as_api_key(gateway: Gateway, keys: dict[str, str]) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=gateway.url,
        api_key=keys["team"],
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )
    raw = client.chat.completions.with_raw_response.create(
        model="demo-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.http_response.headers["x-product"] == "team"
    assert raw.parse().choices[0].message.content
    bad = openai.AzureOpenAI(
        azure_endpoint=gateway.url, api_key="wrong", api_version=AZURE_API_VERSION, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(
            model="demo-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 401


def test_openai_sdk_sends_its_key_as_a_bearer_token(gateway: Gateway, keys: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=keys["all-apis"], max_retries=0)
    stream = client.chat.completions.create(
        model="demo-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert any(chunk.choices and chunk.choices[0].delta.content for chunk in stream)
    anonymous = openai.OpenAI(base_url=gateway.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.embeddings.create(model="demo-model", input="hello")


# -- changes take effect without a restart ---------------------------------------------------


def test_rotation_old_primary_stops_secondary_keeps_working(
    admin: StoreAdmin, client: httpx.Client
) -> None:
    sub_id, primary, secondary = admin.keys("/products/team")
    assert wait_until(lambda: chat(client, "keyed", primary).status_code == 200)
    new_primary = admin.regenerate(sub_id, "primary")
    assert new_primary not in (primary, secondary)
    assert wait_until(lambda: chat(client, "keyed", primary).status_code == 401, timeout=2)
    assert chat(client, "keyed", secondary).status_code == 200
    assert chat(client, "keyed", new_primary).status_code == 200


def test_suspension_and_reactivation_take_effect_within_two_seconds(
    admin: StoreAdmin, client: httpx.Client
) -> None:
    sub_id, key, _ = admin.keys("/apis/keyed")
    assert wait_until(lambda: chat(client, "keyed", key).status_code == 200)
    admin.set_state(sub_id, "suspended")
    assert wait_until(lambda: chat(client, "keyed", key).status_code == 401, timeout=2)
    admin.set_state(sub_id, "active")
    assert wait_until(lambda: chat(client, "keyed", key).status_code == 200, timeout=2)
    admin.set_state(sub_id, "cancelled")
    assert wait_until(lambda: chat(client, "keyed", key).status_code == 401, timeout=2)


def test_an_expired_subscription_stops_working_at_its_expiry(
    admin: StoreAdmin, client: httpx.Client
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    _, key, _ = admin.keys("/apis", expires_at=expires)
    assert wait_until(lambda: chat(client, "keyed", key).status_code == 200, timeout=1.2)
    assert wait_until(lambda: datetime.now(UTC) >= expires, timeout=3)
    assert_error(chat(client, "keyed", key), 401, "invalid subscription key")
