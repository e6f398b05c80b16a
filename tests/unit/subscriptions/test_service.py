"""SubscriptionService against the real SQLite store: validation, state rules, key rotation,
audit, and that the local index learns each change at once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aigw.clock import ManualClock
from aigw.subscriptions.directory import SubscriptionIndex
from aigw.subscriptions.keys import hash_key
from aigw.subscriptions.model import Subscription
from aigw.subscriptions.service import (
    ProductEntry,
    ServiceError,
    SubscriptionService,
    parse_datetime,
)
from aigw.subscriptions.sqlite_store import SqliteStore
from aigw.subscriptions.store import StoreUnavailable

PRODUCTS = {
    "team": ProductEntry("team", "Team", None, "published", True, ("chat",)),
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "subs.db")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def index() -> SubscriptionIndex:
    return SubscriptionIndex()


@pytest.fixture
def service(
    store: SqliteStore, clock: ManualClock, index: SubscriptionIndex
) -> SubscriptionService:
    return SubscriptionService(
        store, PRODUCTS, frozenset({"chat"}), clock, on_change=lambda s: index.apply([s])
    )


async def create(service: SubscriptionService, **options: object) -> Subscription:
    options.setdefault("display_name", "Team A")
    options.setdefault("product", "team")
    subscription, _ = await service.create(actor="tester", **options)  # type: ignore[arg-type]
    return subscription


async def test_create_issues_two_distinct_keys_and_stores_only_their_hashes(
    service: SubscriptionService, store: SqliteStore, index: SubscriptionIndex
) -> None:
    subscription, keys = await service.create(
        actor="tester", display_name=" Team A ", product="team", owner_id="alice"
    )
    assert keys.primary and keys.secondary and keys.primary != keys.secondary
    assert len(keys.primary) == 64  # 256 bits, hex
    stored = await store.get(subscription.id)
    assert stored is not None
    assert stored.primary_key_hash == hash_key(keys.primary)
    assert keys.primary not in repr(stored) and keys.primary not in str(
        stored.public(stored.created_at)
    )
    assert stored.display_name == "Team A" and stored.owner_id == "alice"
    assert str(stored.scope) == "/products/team" and stored.state == "active"
    # The process that made the change enforces it at once.
    assert index.find(keys.primary) == stored and index.find(keys.secondary) == stored


@pytest.mark.parametrize(
    ("options", "status", "mention"),
    [
        ({"product": "nope"}, 400, "unknown product"),
        ({"product": None, "scope": "/apis/ghost"}, 400, "unknown API"),
        ({"product": None, "scope": "/things/x"}, 400, "invalid scope"),
        ({"scope": "/apis"}, 400, "exactly one"),
        ({"display_name": ""}, 400, "displayName"),
        ({"display_name": "x" * 201}, 400, "displayName"),
        ({"display_name": "bad\nname"}, 400, "displayName"),
        # C1 controls (\x9b is a terminal's CSI) and bidi overrides would reach the CLI's tables.
        ({"display_name": "bad\x9b31mname"}, 400, "displayName"),
        ({"display_name": "bad\u202ename"}, 400, "displayName"),
        ({"subscription_id": "-bad"}, 400, "id must"),
        # `$` alone would let a trailing newline through (into headers, tables and logs).
        ({"subscription_id": "team-a\n"}, 400, "id must"),
        ({"owner_id": "has space"}, 400, "ownerId"),
        ({"owner_id": "alice\n"}, 400, "ownerId"),
        ({"state": "suspended"}, 400, "'active' or 'submitted'"),
    ],
)
async def test_create_refuses_bad_input_and_writes_nothing(
    service: SubscriptionService,
    store: SqliteStore,
    options: dict[str, object],
    status: int,
    mention: str,
) -> None:
    with pytest.raises(ServiceError) as caught:
        await create(service, **options)
    assert caught.value.status == status and mention in caught.value.message
    assert await store.list_all() == []
    assert await store.audit_log() == []


async def test_a_state_comment_must_be_printable(
    service: SubscriptionService, store: SqliteStore
) -> None:
    made = await create(service)
    with pytest.raises(ServiceError, match="comment"):
        await service.set_state(made.id, "suspended", actor="tester", comment="late\x9b31m")
    assert (await store.get(made.id)) == made


async def test_expiry_must_be_in_the_future_at_creation(
    service: SubscriptionService, clock: ManualClock
) -> None:
    with pytest.raises(ServiceError, match="future"):
        await create(service, expires_at=clock.now())
    naive = (clock.now() + timedelta(days=1)).replace(tzinfo=None)
    made = await create(service, expires_at=naive)
    assert made.expires_at == clock.now() + timedelta(days=1)  # naive means UTC


async def test_duplicate_id_is_a_conflict(service: SubscriptionService, store: SqliteStore) -> None:
    await create(service, subscription_id="team-a")
    with pytest.raises(ServiceError) as caught:
        await create(service, subscription_id="team-a", display_name="Other")
    assert caught.value.status == 409
    assert [s.display_name for s in await store.list_all()] == ["Team A"]


async def test_suspend_activate_cancel_and_cancelled_is_final(
    service: SubscriptionService,
) -> None:
    made = await create(service)
    suspended = await service.set_state(made.id, "suspended", actor="tester", comment="late bill")
    assert suspended.state == "suspended" and suspended.state_comment == "late bill"
    assert (
        await service.set_state(made.id, "active", actor="tester", comment=None)
    ).state == "active"
    await service.set_state(made.id, "cancelled", actor="tester", comment=None)
    with pytest.raises(ServiceError) as caught:
        await service.set_state(made.id, "active", actor="tester", comment=None)
    assert caught.value.status == 409
    with pytest.raises(ServiceError):
        await service.regenerate_key(made.id, "primary", actor="tester")


async def test_an_expired_subscription_shows_expired_and_needs_a_new_date_to_activate(
    service: SubscriptionService, clock: ManualClock
) -> None:
    made = await create(service, expires_at=clock.now() + timedelta(hours=1))
    await service.set_state(made.id, "suspended", actor="tester", comment=None)
    clock.advance(3600)
    with pytest.raises(ServiceError, match="expired"):
        await service.set_state(made.id, "active", actor="tester", comment=None)
    later = clock.now() + timedelta(days=30)
    renewed = await service.update(made.id, actor="tester", expires_at=later, state="active")
    assert renewed.effective_state(clock.now()) == "active"
    clock.advance(31 * 86400)
    assert [s.id for s in await service.find(state="expired")] == [made.id]


async def test_regenerating_one_key_leaves_the_other(
    service: SubscriptionService, index: SubscriptionIndex
) -> None:
    made, keys = await service.create(actor="tester", display_name="A", product="team")
    _, fresh = await service.regenerate_key(made.id, "primary", actor="tester")
    assert fresh.primary and fresh.secondary is None and fresh.primary != keys.primary
    assert keys.primary is not None and keys.secondary is not None
    assert index.find(keys.primary) is None
    assert index.find(fresh.primary) is not None and index.find(keys.secondary) is not None


async def test_every_change_is_audited_without_keys(
    service: SubscriptionService, store: SqliteStore
) -> None:
    made, keys = await service.create(actor="alice", display_name="A", product="team")
    await service.update(made.id, actor="bob", display_name="B")
    await service.set_state(made.id, "suspended", actor="carol", comment=None)
    _, fresh = await service.regenerate_key(made.id, "secondary", actor="dave")
    entries = await service.audit(made.id)
    assert [(e.actor, e.action) for e in entries] == [
        ("dave", "regenerate-secondary-key"),
        ("carol", "suspend"),
        ("bob", "update"),
        ("alice", "create"),
    ]
    text = str([e.public() for e in entries])
    current = await store.get(made.id)
    assert current is not None
    for secret in (keys.primary, keys.secondary, fresh.secondary, current.primary_key_hash):
        assert secret and secret not in text


async def test_update_retries_when_another_writer_got_there_first(
    service: SubscriptionService, store: SqliteStore, clock: ManualClock
) -> None:
    made = await create(service)
    other = SubscriptionService(store, PRODUCTS, frozenset({"chat"}), clock)
    original_get = service.get
    raced = False

    async def get_then_race(subscription_id: str) -> Subscription:
        nonlocal raced
        current = await original_get(subscription_id)
        if not raced:  # another admin writes between our read and our write
            raced = True
            await other.update(subscription_id, actor="other", owner_id="bob")
        return current

    service.get = get_then_race  # type: ignore[method-assign]
    updated = await service.update(made.id, actor="tester", display_name="Renamed")
    assert updated.display_name == "Renamed" and updated.owner_id == "bob"


async def test_unknown_ids_and_empty_changes(service: SubscriptionService) -> None:
    with pytest.raises(ServiceError) as caught:
        await service.get("ghost")
    assert caught.value.status == 404
    made = await create(service)
    with pytest.raises(ServiceError, match="nothing to change"):
        await service.update(made.id, actor="tester")


# What a PostgreSQL store reports in an outage: the server's name and address.
OUTAGE = (
    "PostgreSQL at db-prod.internal.example:5432/aigw: Multiple exceptions: [Errno 111]"
    " Connect call failed ('10.20.30.40', 5432)"
)


class UnavailableStore:
    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable(OUTAGE)

        return fail


async def test_an_unavailable_store_is_a_fixed_503_and_the_detail_goes_to_the_log(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    store: Any = UnavailableStore()
    service = SubscriptionService(store, PRODUCTS, frozenset({"chat"}), clock)
    for call in (
        service.get("a"),
        service.find(),
        service.audit(),
        service.create(actor="tester", display_name="Team A", product="team"),
        service.update("a", actor="tester", display_name="Renamed"),
    ):
        with (
            caplog.at_level(logging.ERROR, logger="aigw.subscriptions"),
            pytest.raises(ServiceError) as caught,
        ):
            await call
        # The admin API answers with this: no host, address or driver text for its callers.
        assert (caught.value.status, caught.value.message) == (
            503,
            "subscription store unavailable; try again later",
        )
        assert "db-prod" not in caught.value.message and "10.20.30.40" not in str(caught.value)
    assert caplog.text.count(OUTAGE) == 5  # the operator still learns why


def test_parse_datetime_accepts_iso_and_refuses_the_rest() -> None:
    assert parse_datetime("2027-01-31T00:00:00Z").isoformat() == "2027-01-31T00:00:00+00:00"
    assert parse_datetime("2027-01-31").tzinfo is not None
    with pytest.raises(ServiceError):
        parse_datetime("next tuesday")


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_parse_datetime_refuses_a_date_that_leaves_the_calendar_in_utc(text: str) -> None:
    # Valid ISO 8601, but out of range once moved to UTC: a 400, not a crash (500).
    with pytest.raises(ServiceError) as caught:
        parse_datetime(text)
    assert caught.value.status == 400
