"""The subscription check on its own: APIM's authorization algorithm, key extraction, index."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from aigw.clock import ManualClock
from aigw.context import ApiInfo, OperationInfo, ProductInfo, RequestContext, RequestView
from aigw.headers import Headers
from aigw.subscriptions.directory import SubscriptionIndex
from aigw.subscriptions.gate import (
    INVALID_KEY_MESSAGE,
    MISSING_KEY_MESSAGE,
    KeyLocation,
    SubscriptionGate,
    SubscriptionKeyAmbiguous,
    SubscriptionKeyInvalid,
    SubscriptionKeyNotFound,
)
from aigw.subscriptions.keys import MAX_KEY_LENGTH, hash_key, new_key
from aigw.subscriptions.model import Scope, Subscription

CLOCK = ManualClock()
OPEN = ProductInfo("starter", "Starter", "published", False)
TEAM = ProductInfo("team", "Team", "published", True)
DEFAULT_KEYS = KeyLocation("Ocp-Apim-Subscription-Key", "subscription-key")


def subscription(
    scope: str, key: str, *, state: str = "active", revision: int = 1, **extra: Any
) -> Subscription:
    now = CLOCK.now()
    return Subscription(
        id=extra.pop("id", f"sub-{key[:6]}"),
        display_name="Team A app",
        scope=Scope.parse(scope),
        state=state,  # type: ignore[arg-type]
        created_at=now,
        updated_at=now,
        primary_key_hash=hash_key(key),
        secondary_key_hash=hash_key(extra.pop("secondary", new_key())),
        revision=revision,
        **extra,
    )


def gate(
    index: SubscriptionIndex,
    *,
    required: bool = True,
    open_product: bool = False,
    location: KeyLocation = DEFAULT_KEYS,
) -> SubscriptionGate:
    products = {"team": TEAM, **({"starter": OPEN} if open_product else {})}
    return SubscriptionGate(
        api_id="chat",
        api_path="openai",
        required=required,
        location=location,
        open_product=OPEN if open_product else None,
        products=products,
        index=index,
    )


def request(headers: list[tuple[str, str]] = (), query: str = "") -> RequestContext:  # type: ignore[assignment]
    view = RequestView(
        method="POST",
        scheme="http",
        host="gw.example:8080",
        path="/openai/x",
        query_string=query,
        headers=Headers(headers),
        client_ip="127.0.0.1",
    )
    return RequestContext(
        "r1",
        view,
        ApiInfo("chat", "Chat", "openai", "azure-openai"),
        OperationInfo("chat-completions", "chat", "POST", "/x"),
        CLOCK,
    )


def keyed(key: str) -> RequestContext:
    return request([("Ocp-Apim-Subscription-Key", key)])


@pytest.fixture
def index() -> SubscriptionIndex:
    return SubscriptionIndex()


# -- APIM's matrix: (open product?, API requires a subscription?) x (key?) -----------------


@pytest.mark.parametrize("scope", ["/products/team", "/apis/chat", "/apis"])
def test_a_key_in_scope_is_accepted_when_everything_requires_a_subscription(
    index: SubscriptionIndex, scope: str
) -> None:
    key = new_key()
    index.apply([subscription(scope, key, owner_id="alice")])
    ctx = keyed(key)
    gate(index).admit(ctx)
    assert ctx.subscription is not None and ctx.subscription.id == f"sub-{key[:6]}"
    assert ctx.subscription.key == key
    assert ctx.user is not None and ctx.user.id == "alice"
    # Product policies apply only to product keys, as in APIM.
    assert ctx.product == (TEAM if scope == "/products/team" else None)


@pytest.mark.parametrize("scope", ["/products/other", "/apis/other"])
def test_a_key_for_another_scope_is_denied(index: SubscriptionIndex, scope: str) -> None:
    key = new_key()
    index.apply([subscription(scope, key)])
    with pytest.raises(SubscriptionKeyInvalid) as caught:
        gate(index).admit(keyed(key))
    assert caught.value.status_code == 401
    assert caught.value.message == INVALID_KEY_MESSAGE


def test_no_key_is_denied_with_a_challenge_naming_the_header(index: SubscriptionIndex) -> None:
    location = KeyLocation("api-key", "subscription-key")
    with pytest.raises(SubscriptionKeyNotFound) as caught:
        gate(index, location=location).admit(request())
    assert caught.value.message == MISSING_KEY_MESSAGE
    assert caught.value.reason == "SubscriptionKeyNotFound"
    assert caught.value.headers == [
        (
            "www-authenticate",
            'AzureApiManagementKey realm="http://gw.example:8080/openai",name="api-key",'
            'type="header"',
        )
    ]


def test_api_without_subscription_ignores_any_key(index: SubscriptionIndex) -> None:
    key = new_key()
    index.apply([subscription("/products/team", key)])
    for ctx in (keyed(key), keyed("not-a-key"), request()):
        gate(index, required=False).admit(ctx)
        assert ctx.subscription is None and ctx.product is None
        assert "ocp-apim-subscription-key" not in ctx.request.headers


def test_open_product_admits_calls_without_key_in_its_context(index: SubscriptionIndex) -> None:
    ctx = request()
    gate(index, open_product=True).admit(ctx)
    assert ctx.product == OPEN and ctx.subscription is None


def test_open_product_turns_a_wrong_key_into_an_anonymous_call(index: SubscriptionIndex) -> None:
    ctx = keyed("wrong")
    gate(index, open_product=True).admit(ctx)
    assert ctx.product == OPEN and ctx.subscription is None


@pytest.mark.parametrize(
    ("scope", "state"), [("/products/other", "active"), ("/apis", "suspended")]
)
def test_open_product_refuses_a_real_key_that_is_not_valid_here(
    index: SubscriptionIndex, scope: str, state: str
) -> None:
    key = new_key()
    index.apply([subscription(scope, key, state=state)])
    with pytest.raises(SubscriptionKeyInvalid):
        gate(index, open_product=True).admit(keyed(key))


def test_open_product_still_runs_a_valid_key_in_its_own_product(index: SubscriptionIndex) -> None:
    key = new_key()
    index.apply([subscription("/products/team", key)])
    ctx = keyed(key)
    gate(index, open_product=True).admit(ctx)
    assert ctx.product == TEAM and ctx.subscription is not None


def test_open_product_with_api_not_requiring_subscription(index: SubscriptionIndex) -> None:
    key = new_key()
    index.apply([subscription("/products/team", key)])
    ctx = keyed(key)
    gate(index, open_product=True, required=False).admit(ctx)
    assert ctx.product == OPEN and ctx.subscription is None


# -- states, expiry, rotation ------------------------------------------------------------


@pytest.mark.parametrize("state", ["suspended", "submitted", "rejected", "cancelled", "expired"])
def test_only_active_subscriptions_authorize(index: SubscriptionIndex, state: str) -> None:
    key = new_key()
    index.apply([subscription("/apis", key, state=state)])
    with pytest.raises(SubscriptionKeyInvalid):
        gate(index).admit(keyed(key))


def test_expiry_takes_effect_at_that_instant(index: SubscriptionIndex) -> None:
    key = new_key()
    expires = CLOCK.now() + timedelta(seconds=10)
    index.apply([subscription("/apis", key, expires_at=expires)])
    gate(index).admit(keyed(key))
    CLOCK.advance(9.999)
    gate(index).admit(keyed(key))
    CLOCK.advance(0.001)
    with pytest.raises(SubscriptionKeyInvalid):
        gate(index).admit(keyed(key))


def test_both_keys_work_and_a_regenerated_key_replaces_only_its_slot(
    index: SubscriptionIndex,
) -> None:
    primary, secondary, rotated = new_key(), new_key(), new_key()
    original = subscription("/apis", primary, secondary=secondary, id="s1")
    index.apply([original])
    gate(index).admit(keyed(primary))
    gate(index).admit(keyed(secondary))
    index.apply([original.with_changes(primary_key_hash=hash_key(rotated), revision=2)])
    with pytest.raises(SubscriptionKeyInvalid):
        gate(index).admit(keyed(primary))
    gate(index).admit(keyed(secondary))
    gate(index).admit(keyed(rotated))


def test_a_late_copy_of_a_subscription_never_undoes_a_newer_one(
    index: SubscriptionIndex,
) -> None:
    key = new_key()
    active = subscription("/apis", key, id="s1", revision=5)
    index.apply([active.with_changes(state="suspended", revision=6)])
    index.apply([active])  # e.g. a poll that read the row before the suspension
    with pytest.raises(SubscriptionKeyInvalid):
        gate(index).admit(keyed(key))


# -- where the key is read, and that it never travels on -----------------------------------


def test_header_wins_over_query_and_both_are_removed(index: SubscriptionIndex) -> None:
    good, other = new_key(), new_key()
    index.apply([subscription("/apis", good)])
    ctx = request(
        [("Ocp-Apim-Subscription-Key", good)],
        query=f"api-version=1&subscription-key={other}",
    )
    gate(index).admit(ctx)
    assert ctx.subscription is not None and ctx.subscription.key == good
    assert "ocp-apim-subscription-key" not in ctx.request.headers
    assert ctx.request.query_string == "api-version=1"


def test_query_is_used_only_when_the_header_is_absent(index: SubscriptionIndex) -> None:
    key = new_key()
    index.apply([subscription("/apis", key)])
    ctx = request(query=f"subscription-key={key}&api-version=2024-10-21")
    gate(index).admit(ctx)
    assert ctx.subscription is not None
    assert ctx.request.query_string == "api-version=2024-10-21"
    # A key in the query is not a key in the header: the header is what counts when present.
    with pytest.raises(SubscriptionKeyInvalid):
        gate(index).admit(
            request([("Ocp-Apim-Subscription-Key", "bad")], query=f"subscription-key={key}")
        )


def test_a_percent_encoded_query_name_is_still_found_and_removed(
    index: SubscriptionIndex,
) -> None:
    key = new_key()
    index.apply([subscription("/apis", key)])
    ctx = request(query=f"subscription%2Dkey={key}")
    gate(index).admit(ctx)
    assert ctx.subscription is not None and ctx.request.query_string == ""


def test_authorization_header_carries_the_key_as_a_bearer_token(
    index: SubscriptionIndex,
) -> None:
    key = new_key()
    index.apply([subscription("/apis", key)])
    bearer = KeyLocation("Authorization", "subscription-key")
    ctx = request([("Authorization", f"bearer {key}")])
    gate(index, location=bearer).admit(ctx)
    assert ctx.subscription is not None and "authorization" not in ctx.request.headers
    with pytest.raises(SubscriptionKeyInvalid):  # another scheme is never a key
        gate(index, location=bearer).admit(request([("Authorization", f"Basic {key}")]))


def test_a_key_sent_twice_is_a_bad_request(index: SubscriptionIndex) -> None:
    key = new_key()
    index.apply([subscription("/apis", key)])
    twice = request([("Ocp-Apim-Subscription-Key", key), ("ocp-apim-subscription-key", key)])
    with pytest.raises(SubscriptionKeyAmbiguous) as caught:
        gate(index).admit(twice)
    assert caught.value.status_code == 400
    with pytest.raises(SubscriptionKeyAmbiguous):
        gate(index).admit(request(query=f"subscription-key={key}&subscription-key={key}"))


def test_an_empty_key_counts_as_missing(index: SubscriptionIndex) -> None:
    with pytest.raises(SubscriptionKeyNotFound):
        gate(index).admit(keyed(""))


def test_over_long_and_non_ascii_keys_are_invalid_not_errors(index: SubscriptionIndex) -> None:
    with pytest.raises(SubscriptionKeyInvalid):
        gate(index).admit(keyed("k" * (MAX_KEY_LENGTH + 1)))
    with pytest.raises(SubscriptionKeyInvalid):
        gate(index).admit(request(query="subscription-key=%C3%A9%ED%A0%80"))
