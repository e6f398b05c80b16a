"""The admin API on a real gateway process with the SQLite store: auth, every endpoint, and
the refusals (each a JSON error, nothing written)."""

from __future__ import annotations

import hashlib
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.admin_helpers import TOKEN, TOKEN_ENV, admin_client, admin_config
from tests.e2e.helpers import CHAT_BODY, assert_error, wait_until
from tests.support import DemoBackend, Gateway

KEY = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend) -> dict[str, Any]:
    return admin_config(demo_backend.url)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, gateway_config: dict[str, Any]
) -> Iterator[Gateway]:
    gw = Gateway(Path(tmp_path_factory.mktemp("admin")), gateway_config, env=TOKEN_ENV)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def admin(gateway: Gateway, gateway_config: dict[str, Any]) -> Iterator[httpx.Client]:
    with admin_client(gateway_config) as client:
        yield client


def create(admin: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("product", "starter")
    reply = admin.post("/subscriptions", json=body)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def ids(admin: httpx.Client) -> list[str]:
    return [sub["id"] for sub in admin.get("/subscriptions").json()["value"]]


# -- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-of-some-length"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_a_request_without_the_right_token_is_refused(
    gateway_config: dict[str, Any], gateway: Gateway, headers: dict[str, str]
) -> None:
    with admin_client(gateway_config, token=None) as anonymous:
        for path in ("/products", "/subscriptions", "/openapi.json", "/no-such-route"):
            reply = anonymous.get(path, headers=headers)
            assert_error(reply, 401, "token")
            assert reply.headers["www-authenticate"].startswith("Bearer")
        # Nothing is written without the token either.
        refused = anonymous.post(
            "/subscriptions", json={"displayName": "x", "product": "starter"}, headers=headers
        )
        assert_error(refused, 401)


def test_the_admin_api_is_not_served_on_the_gateway_listener(
    gateway: Gateway, admin: httpx.Client
) -> None:
    reply = httpx.get(gateway.url + "/subscriptions", headers=dict(admin.headers))
    assert reply.status_code == 404
    assert admin.get("/products").status_code == 200


# -- products --------------------------------------------------------------------------


def test_products_are_listed_from_the_config(admin: httpx.Client) -> None:
    listing = admin.get("/products").json()
    assert listing["count"] == 2
    assert [p["id"] for p in listing["value"]] == ["starter", "premium"]
    premium = admin.get("/products/premium").json()
    assert premium == {
        "id": "premium",
        "displayName": "Premium",
        "description": "Every API",
        "state": "published",
        "subscriptionRequired": True,
        "apis": ["openai", "azure"],
    }
    assert_error(admin.get("/products/nope"), 404, "product 'nope' not found")


# -- create, read, list --------------------------------------------------------------------


def test_create_returns_both_keys_once(admin: httpx.Client) -> None:
    reply = admin.post(
        "/subscriptions",
        json={
            "displayName": "Team Alpha",
            "product": "starter",
            "id": "alpha",
            "ownerId": "alice@example.com",
            "expirationDate": "2099-12-31T00:00:00+01:00",
        },
    )
    assert reply.status_code == 201, reply.text
    assert reply.headers["location"] == "/subscriptions/alpha"
    assert reply.headers["cache-control"] == "no-store"
    created = reply.json()
    assert KEY.match(created["primaryKey"]) and KEY.match(created["secondaryKey"])
    assert created["primaryKey"] != created["secondaryKey"]
    assert created["scope"] == "/products/starter"
    assert created["state"] == "active"
    assert created["ownerId"] == "alice@example.com"
    assert created["expirationDate"] == "2099-12-30T23:00:00Z"  # stored in UTC
    shown = admin.get("/subscriptions/alpha").json()
    assert "primaryKey" not in shown and "secondaryKey" not in shown
    assert shown == {k: v for k, v in created.items() if not k.endswith("Key")}
    listing = admin.get("/subscriptions").text
    assert created["primaryKey"] not in listing and created["secondaryKey"] not in listing


def test_create_with_a_scope_an_api_or_every_api(admin: httpx.Client) -> None:
    api = create(admin, displayName="One API", product=None, scope="/apis/azure")
    assert api["scope"] == "/apis/azure"
    assert api["id"].startswith("sub-")  # generated
    everything = create(admin, displayName="All APIs", product=None, scope="/apis")
    assert everything["scope"] == "/apis"
    product = create(admin, displayName="By scope", product=None, scope="/products/premium")
    assert product["scope"] == "/products/premium"
    submitted = create(admin, displayName="Waiting", state="submitted")
    assert submitted["state"] == "submitted"


def test_list_filters_by_product_and_state(admin: httpx.Client) -> None:
    create(admin, displayName="P1", product="premium", id="filter-p1")
    create(admin, displayName="P2", product="premium", id="filter-p2", state="submitted")
    premium = admin.get("/subscriptions", params={"product": "premium"}).json()
    premium_ids = {sub["id"] for sub in premium["value"]}
    assert {"filter-p1", "filter-p2"} <= premium_ids
    assert all(sub["scope"] == "/products/premium" for sub in premium["value"])
    assert premium["count"] == len(premium["value"])
    submitted = admin.get("/subscriptions", params={"product": "premium", "state": "submitted"})
    assert [sub["id"] for sub in submitted.json()["value"]] == ["filter-p2"]
    ordered = ids(admin)
    assert ordered == sorted(ordered)
    assert_error(admin.get("/subscriptions", params={"state": "sleeping"}), 400, "unknown state")
    assert_error(admin.get("/subscriptions", params={"owner": "x"}), 400, "unknown query")
    assert_error(admin.get("/subscriptions?state=active&state=submitted"), 400, "more than once")


BAD_CREATES: list[tuple[Any, str]] = [
    ({"displayName": "x"}, "exactly one of 'scope' or 'product'"),
    ({"displayName": "x", "product": "starter", "scope": "/apis"}, "exactly one"),
    ({"product": "starter"}, "displayName: Field required"),
    ({"displayName": "x", "product": "nope"}, "unknown product 'nope'"),
    ({"displayName": "x", "scope": "/apis/nope"}, "unknown API 'nope'"),
    ({"displayName": "x", "scope": "/users/bob"}, "invalid scope"),
    ({"displayName": 5, "product": "starter"}, "displayName: Input should be a valid string"),
    ({"displayName": "x", "product": ["starter"]}, "product: Input should be a valid string"),
    ({"displayName": "x", "product": "starter", "ownerId": True}, "ownerId"),
    ({"displayName": "x", "product": "starter", "colour": "red"}, "colour: unknown field"),
    ({"display_name": "x", "product": "starter"}, "display_name: unknown field"),
    ({"displayName": "x" * 201, "product": "starter"}, "at most 200"),
    ({"displayName": "a\nb", "product": "starter"}, "printable"),
    ({"displayName": "  ", "product": "starter"}, "displayName is required"),
    ({"displayName": "x", "product": "starter", "id": "bad id!"}, "id must be"),
    ({"displayName": "x", "product": "starter", "ownerId": "a b"}, "ownerId must be"),
    ({"displayName": "x", "product": "starter", "expirationDate": "soon"}, "invalid date-time"),
    ({"displayName": "x", "product": "starter", "expirationDate": "2001-01-01"}, "future"),
    ({"displayName": "x", "product": "starter", "state": "suspended"}, "state: Input should be"),
    ([{"displayName": "x"}], "must be a JSON object"),
    ("just text", "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "mention"), BAD_CREATES)
def test_a_bad_create_is_refused_and_writes_nothing(
    admin: httpx.Client, body: Any, mention: str
) -> None:
    before = admin.get("/audit", params={"limit": 1000}).json()["count"]
    assert_error(admin.post("/subscriptions", json=body), 400, mention)
    assert admin.get("/audit", params={"limit": 1000}).json()["count"] == before


@pytest.mark.parametrize(
    ("content", "mention"),
    [
        (b'{"displayName": "x", ', "not valid JSON"),
        (b'{"displayName": "x", "displayName": "y", "product": "starter"}', "duplicate key"),
        (b'{"displayName": NaN, "product": "starter"}', "NaN"),
        (b"\xff\xfe", "not UTF-8"),
        (b"", "JSON object body is required"),
    ],
)
def test_malformed_json_is_a_400(admin: httpx.Client, content: bytes, mention: str) -> None:
    reply = admin.post(
        "/subscriptions", content=content, headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 400, mention)


def test_a_duplicate_id_is_a_409(admin: httpx.Client) -> None:
    first = create(admin, displayName="Dup", id="dup")
    reply = admin.post(
        "/subscriptions", json={"displayName": "Dup 2", "product": "premium", "id": "dup"}
    )
    assert_error(reply, 409, "already exists")
    kept = admin.get("/subscriptions/dup").json()
    assert kept["displayName"] == "Dup" and kept["createdDate"] == first["createdDate"]


def test_a_body_over_64_kib_is_a_413(admin: httpx.Client) -> None:
    big = {"displayName": "x", "product": "starter", "ownerId": "a" * 70_000}
    assert_error(admin.post("/subscriptions", json=big), 413)
    chunked = admin.post("/subscriptions", content=iter([b'{"displayName": "', b"y" * 70_000]))
    assert_error(chunked, 413)


def test_unknown_routes_and_methods(admin: httpx.Client) -> None:
    assert_error(admin.get("/nothing-here"), 404, "not found")
    assert_error(admin.get("/subscriptions/nope"), 404, "subscription 'nope' not found")
    wrong = admin.delete("/subscriptions/alpha")
    assert_error(wrong, 405)
    assert set(wrong.headers["allow"].split(",")) == {"GET", "PATCH"}
    assert_error(admin.put("/products"), 405)
    assert_error(admin.get("/subscriptions/alpha/suspend"), 405)


# -- changes -------------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields(admin: httpx.Client) -> None:
    created = create(admin, displayName="Patchy", id="patchy", expirationDate="2098-01-01")
    changed = admin.patch(
        "/subscriptions/patchy", json={"displayName": "Patched", "ownerId": "bob"}
    ).json()
    assert changed["displayName"] == "Patched" and changed["ownerId"] == "bob"
    assert changed["expirationDate"] == created["expirationDate"] == "2098-01-01T00:00:00Z"
    assert changed["updatedDate"] > created["updatedDate"]
    cleared = admin.patch(
        "/subscriptions/patchy", json={"expirationDate": None, "ownerId": None}
    ).json()
    assert cleared["expirationDate"] is None and cleared["ownerId"] is None
    assert cleared["displayName"] == "Patched"
    commented = admin.patch(
        "/subscriptions/patchy", json={"state": "suspended", "stateComment": "unpaid"}
    ).json()
    assert (commented["state"], commented["stateComment"]) == ("suspended", "unpaid")


@pytest.fixture(scope="module")
def stable(admin: httpx.Client) -> dict[str, Any]:
    return create(admin, displayName="Stable", id="stable")


@pytest.mark.parametrize(
    ("body", "mention"),
    [
        ({}, "nothing to change"),
        ({"displayName": None}, "displayName: Input should be a valid string"),
        ({"scope": "/apis"}, "scope: unknown field"),
        ({"primaryKey": "abc"}, "primaryKey: unknown field"),
        ({"expirationDate": "31/12/2099"}, "invalid date-time"),
        ({"state": "dormant"}, "unknown state"),
        ({"ownerId": 7}, "ownerId"),
    ],
)
def test_a_bad_patch_is_refused(
    admin: httpx.Client, stable: dict[str, Any], body: Any, mention: str
) -> None:
    before = admin.get("/subscriptions/stable").json()
    assert_error(admin.patch("/subscriptions/stable", json=body), 400, mention)
    assert admin.get("/subscriptions/stable").json() == before
    assert_error(admin.patch("/subscriptions/nope", json={"displayName": "x"}), 404)


def test_suspend_activate_cancel(admin: httpx.Client) -> None:
    create(admin, displayName="Lifecycle", id="life")
    suspended = admin.post("/subscriptions/life/suspend", json={"comment": "over budget"})
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["state"] == "suspended"
    assert suspended.json()["stateComment"] == "over budget"
    active = admin.post("/subscriptions/life/activate")  # no body at all
    assert active.json()["state"] == "active" and active.json()["stateComment"] is None
    assert_error(admin.post("/subscriptions/life/suspend", json={"reason": "x"}), 400, "reason")
    cancelled = admin.post("/subscriptions/life/cancel", json={"comment": "team left"})
    assert cancelled.json()["state"] == "cancelled"
    # Cancelled is final: no way back, not even through PATCH, and no new keys.
    assert_error(admin.post("/subscriptions/life/activate"), 409, "cancelled")
    assert_error(admin.patch("/subscriptions/life", json={"state": "active"}), 409, "cancelled")
    regenerate = admin.post("/subscriptions/life/regenerate-key", json={"key": "primary"})
    assert_error(regenerate, 409, "cancelled")
    assert admin.get("/subscriptions/life").json()["state"] == "cancelled"
    assert_error(admin.post("/subscriptions/nope/suspend"), 404)


def test_an_expired_subscription_shows_as_expired_and_needs_a_later_date(
    admin: httpx.Client,
) -> None:
    create(admin, displayName="Old", id="old")
    admin.patch("/subscriptions/old", json={"expirationDate": "2000-01-01T00:00:00Z"})
    shown = admin.get("/subscriptions/old").json()
    assert (shown["state"], shown["storedState"]) == ("expired", "active")
    assert "old" in [s["id"] for s in admin.get("/subscriptions?state=expired").json()["value"]]
    assert_error(admin.post("/subscriptions/old/activate"), 409, "expired")


def test_regenerate_key_returns_a_new_key_for_that_slot_only(admin: httpx.Client) -> None:
    created = create(admin, displayName="Rotating", id="rotating")
    primary = admin.post("/subscriptions/rotating/regenerate-key", json={"key": "primary"})
    assert primary.status_code == 200, primary.text
    new = primary.json()
    assert KEY.match(new["primaryKey"]) and "secondaryKey" not in new
    assert new["primaryKey"] not in (created["primaryKey"], created["secondaryKey"])
    secondary = admin.post(
        "/subscriptions/rotating/regenerate-key", json={"key": "secondary"}
    ).json()
    assert "primaryKey" not in secondary
    assert secondary["secondaryKey"] != created["secondaryKey"]
    assert "primaryKey" not in admin.get("/subscriptions/rotating").json()
    for body, mention in (
        ({"key": "tertiary"}, "key: Input should be 'primary' or 'secondary'"),
        ({}, "key: Field required"),
        ({"key": "primary", "value": "mine"}, "value: unknown field"),
    ):
        assert_error(admin.post("/subscriptions/rotating/regenerate-key", json=body), 400, mention)


# -- audit ---------------------------------------------------------------------------------


def test_audit_records_who_did_what_newest_first(admin: httpx.Client) -> None:
    alice = {"X-Aigw-Actor": "alice"}
    admin.post(
        "/subscriptions",
        json={"displayName": "Audited", "product": "starter", "id": "audited"},
        headers=alice,
    )
    admin.post("/subscriptions/audited/suspend", json={"comment": "check"})
    admin.post("/subscriptions/audited/regenerate-key", json={"key": "secondary"}, headers=alice)
    entries = admin.get("/subscriptions/audited/audit").json()
    assert entries["count"] == 3
    actions = [entry["action"] for entry in entries["value"]]
    assert actions == ["regenerate-secondary-key", "suspend", "create"]
    actors = [entry["actor"] for entry in entries["value"]]
    assert actors == [
        "admin-api@127.0.0.1 (alice)",
        "admin-api@127.0.0.1",
        "admin-api@127.0.0.1 (alice)",
    ]
    assert entries["value"][1]["details"] == {"state": "suspended", "stateComment": "check"}
    assert {entry["subscriptionId"] for entry in entries["value"]} == {"audited"}
    times = [entry["at"] for entry in entries["value"]]
    assert times == sorted(times, reverse=True)
    limited = admin.get("/subscriptions/audited/audit", params={"limit": 1}).json()
    assert [entry["action"] for entry in limited["value"]] == ["regenerate-secondary-key"]
    everything = admin.get("/audit", params={"limit": 2}).json()
    assert everything["count"] == 2
    assert everything["value"][0]["subscriptionId"] == "audited"
    assert_error(admin.get("/subscriptions/nope/audit"), 404)


@pytest.mark.parametrize("limit", ["0", "1001", "ten", "-1", "1.5"])
def test_audit_limit_must_be_1_to_1000(admin: httpx.Client, limit: str) -> None:
    assert_error(admin.get("/audit", params={"limit": limit}), 400, "limit")


@pytest.mark.parametrize("actor", ["x" * 101, "", "tab\there"])
def test_a_bad_actor_header_is_refused(admin: httpx.Client, actor: str) -> None:
    reply = admin.post(
        "/subscriptions",
        json={"displayName": "Nobody", "product": "starter"},
        headers={"X-Aigw-Actor": actor},
    )
    assert_error(reply, 400, "X-Aigw-Actor")


def test_keys_and_hashes_never_reach_the_audit_log_or_the_logs(
    admin: httpx.Client, gateway: Gateway
) -> None:
    created = create(admin, displayName="Secretive", id="secretive")
    keys = [created["primaryKey"], created["secondaryKey"]]
    for slot in ("primary", "secondary"):
        reply = admin.post("/subscriptions/secretive/regenerate-key", json={"key": slot})
        keys.append(reply.json()[f"{slot}Key"])
    secrets = keys + [hashlib.sha256(key.encode()).hexdigest() for key in keys] + [TOKEN]
    readable = [
        admin.get("/audit", params={"limit": 1000}).text,
        admin.get("/subscriptions/secretive/audit").text,
        admin.get("/subscriptions").text,
        admin.get("/subscriptions/secretive").text,
    ]
    assert wait_until(lambda: "regenerate-key 200" in gateway.stderr())
    logs = gateway.stdout() + gateway.stderr()
    for text in [*readable, logs]:
        for secret in secrets:
            assert secret not in text


# -- description and reload ------------------------------------------------------------


def test_openapi_document_lists_every_path(admin: httpx.Client) -> None:
    reply = admin.get("/openapi.json")
    assert reply.status_code == 200
    document = reply.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/openapi.json",
        "/products",
        "/products/{id}",
        "/subscriptions",
        "/subscriptions/{id}",
        "/subscriptions/{id}/suspend",
        "/subscriptions/{id}/activate",
        "/subscriptions/{id}/cancel",
        "/subscriptions/{id}/regenerate-key",
        "/subscriptions/{id}/audit",
        "/audit",
        "/backends",
        "/backends/{id}",
        "/usage/report",
    }
    assert set(document["paths"]["/subscriptions/{id}"]) >= {"get", "patch"}
    # Every $ref points at something the document defines.
    text = reply.text
    for ref in set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in document["components"][ref[0]], ref


def test_a_reload_rotates_the_admin_token(tmp_path: Path, demo_backend: DemoBackend) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text("first-admin-token-0123456789")
    config = admin_config(demo_backend.url)
    config["named-values"] = {"admin-token": {"file": str(token_file), "secret": True}}
    gateway = Gateway(tmp_path, config)
    try:
        with (
            admin_client(config, token="first-admin-token-0123456789") as first,
            admin_client(config, token="second-admin-token-0123456789") as second,
        ):
            assert first.get("/products").status_code == 200
            assert_error(second.get("/products"), 401)
            token_file.write_text("second-admin-token-0123456789")
            gateway.signal(signal.SIGHUP)
            assert wait_until(lambda: second.get("/products").status_code == 200)
            assert_error(first.get("/products"), 401)
    finally:
        gateway.stop()


def test_every_worker_serves_the_admin_api_and_stops_with_the_gateway(
    tmp_path: Path, demo_backend: DemoBackend
) -> None:
    config = admin_config(demo_backend.url)
    gateway = Gateway(tmp_path, config, "--workers", "2", env=TOKEN_ENV)
    try:
        assert wait_until(lambda: gateway.stderr().count("admin API listening") == 2, 15)
        with admin_client(config) as client:
            for n in range(10):  # new connections spread over both workers
                reply = client.post(
                    "/subscriptions",
                    json={"displayName": f"W{n}", "product": "starter", "id": f"w{n}"},
                    headers={"Connection": "close"},
                )
                assert reply.status_code == 201, reply.text
            # Every worker reads the one store.
            for _ in range(10):
                listing = client.get("/subscriptions", headers={"Connection": "close"})
                assert listing.json()["count"] == 10
    finally:
        assert gateway.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{config['admin']['port']}/products", timeout=2)


def test_changes_made_here_are_enforced_from_the_next_request_on(
    admin: httpx.Client, gateway: Gateway
) -> None:
    def status(key: str) -> int:
        reply = httpx.post(
            f"{gateway.url}/keyed/v1/chat/completions",
            json=CHAT_BODY,
            headers={"Ocp-Apim-Subscription-Key": key},
            timeout=10,
        )
        return reply.status_code

    created = create(admin, displayName="Immediate")
    primary, secondary = created["primaryKey"], created["secondaryKey"]
    # No waiting anywhere below: the process that made the change applies it at once.
    assert status(primary) == 200 and status(secondary) == 200
    assert admin.post(f"/subscriptions/{created['id']}/suspend").status_code == 200
    assert status(primary) == 401 and status(secondary) == 401
    assert admin.post(f"/subscriptions/{created['id']}/activate").status_code == 200
    assert status(primary) == 200
    rotated = admin.post(f"/subscriptions/{created['id']}/regenerate-key", json={"key": "primary"})
    assert rotated.status_code == 200
    assert status(primary) == 401
    assert status(rotated.json()["primaryKey"]) == 200 and status(secondary) == 200


def test_no_admin_request_failed_unexpectedly(gateway: Gateway) -> None:
    # Runs last in this module: every refusal above was deliberate, none a crash.
    assert "admin API request failed" not in gateway.stderr()
    assert "Traceback" not in gateway.stderr()
