"""TokenCache with a fake provider and a manual clock: single flight, refresh ahead of
expiry in the background, back-off, and failures with and without a cached token."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pytest

from aigw.clock import ManualClock
from aigw.identity import AccessToken, TokenCache, TokenUnavailable
from aigw.identity.cache import refresh_ahead

RESOURCE = "https://cognitiveservices.azure.com"


class FakeProvider:
    kind = "managed"
    client_id: str | None = "client-1"

    def __init__(self, clock: ManualClock, lifetime: float = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.fail: str | None = None
        self.gate: asyncio.Event | None = None

    async def token(self, resource: str) -> AccessToken:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise TokenUnavailable(self.fail)
        now = self.clock.now().timestamp()
        return AccessToken(f"token-{self.calls}", now + self.lifetime)


def make(lifetime: float = 3600) -> tuple[TokenCache, FakeProvider, ManualClock]:
    clock = ManualClock()
    provider = FakeProvider(clock, lifetime)
    return TokenCache(provider, RESOURCE, clock), provider, clock


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_refresh_window() -> None:
    assert refresh_ahead(3600) == 360  # 10 % of an hour is more than 5 minutes
    assert refresh_ahead(86400) == 8640
    assert refresh_ahead(1200) == 300  # 5 minutes
    assert refresh_ahead(10) == 5  # short-lived: half its life


async def test_single_flight_for_a_burst_of_first_requests() -> None:
    cache, provider, _ = make()
    provider.gate = asyncio.Event()
    waiting = [asyncio.create_task(cache.get()) for _ in range(1000)]
    await settle()
    provider.gate.set()
    tokens = await asyncio.gather(*waiting)
    assert provider.calls == 1
    assert {t.token for t in tokens} == {"token-1"}
    assert cache.acquired == 1


async def test_reused_until_the_refresh_window_then_refreshed_in_the_background() -> None:
    cache, provider, clock = make(lifetime=3600)
    assert (await cache.get()).token == "token-1"
    clock.advance(3600 - 361)
    assert (await cache.get()).token == "token-1"
    assert provider.calls == 1
    clock.advance(2)  # inside the last 10 %
    provider.gate = asyncio.Event()
    # The request that notices goes on with the cached token; the refresh runs meanwhile.
    assert (await cache.get()).token == "token-1"
    assert (await cache.get()).token == "token-1"
    await settle()
    assert provider.calls == 2  # one refresh, however many requests
    provider.gate.set()
    await settle()
    assert (await cache.get()).token == "token-2"
    await cache.close()


async def test_failed_refresh_keeps_the_valid_token_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, provider, clock = make(lifetime=3600)
    await cache.get()
    clock.advance(3300)
    provider.fail = "endpoint down"
    with caplog.at_level(logging.WARNING, "aigw.identity"):
        assert (await cache.get()).token == "token-1"
        await settle()
    assert provider.calls == 2
    assert "still using the cached token" in caplog.text
    # Within the back-off no new attempt; afterwards another one, still serving token-1.
    assert (await cache.get()).token == "token-1"
    await settle()
    assert provider.calls == 2
    clock.advance(1.5)
    assert (await cache.get()).token == "token-1"
    await settle()
    assert provider.calls == 3
    provider.fail = None
    clock.advance(2.5)
    await cache.get()
    await settle()
    assert (await cache.get()).token == "token-4"  # the fourth call


async def test_a_long_back_off_ends_when_the_cached_token_does() -> None:
    # A refresh that fails late in the token's life backs off for up to a minute; once the
    # token may no longer be sent, a recovered endpoint is asked at once, not a minute later.
    clock = ManualClock()
    provider = FakeProvider(clock, lifetime=3600)
    cache = TokenCache(provider, RESOURCE, clock, retry_base=60)
    await cache.get()
    clock.advance(3560)  # refresh window, 10 s before the token is withdrawn
    provider.fail = "endpoint down"
    assert (await cache.get()).token == "token-1"
    await settle()
    assert provider.calls == 2
    provider.fail = None
    clock.advance(15)  # the token is withdrawn; the 60 s back-off has not passed
    assert (await cache.get()).token == "token-3"


async def test_no_valid_token_raises_a_clear_error_and_backs_off() -> None:
    cache, provider, clock = make()
    provider.fail = "connection refused"
    with pytest.raises(TokenUnavailable, match=r"managed identity .*client-1.* connection refused"):
        await cache.get()
    # Inside the back-off: fails at once without calling the endpoint again.
    with pytest.raises(TokenUnavailable):
        await cache.get()
    assert provider.calls == 1
    clock.advance(1.1)
    provider.fail = None
    assert (await cache.get()).token == "token-2"


async def test_expired_token_means_waiting_for_a_new_one() -> None:
    cache, provider, clock = make(lifetime=100)
    await cache.get()
    clock.advance(99)  # inside the expiry margin: not sent any more
    assert (await cache.get()).token == "token-2"
    assert provider.calls == 2


async def test_a_provider_that_hangs_times_out() -> None:
    clock = ManualClock()
    provider = FakeProvider(clock)
    provider.gate = asyncio.Event()  # never set
    cache = TokenCache(provider, RESOURCE, clock, timeout=0.05)
    with pytest.raises(TokenUnavailable, match="no answer within"):
        await cache.get()


async def test_a_cancelled_waiter_does_not_cancel_the_acquisition() -> None:
    cache, provider, _ = make()
    provider.gate = asyncio.Event()
    first = asyncio.create_task(cache.get())
    second = asyncio.create_task(cache.get())
    await settle()
    first.cancel()
    provider.gate.set()
    assert (await second).token == "token-1"


async def test_acquisition_is_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    cache, _, _ = make()
    with caplog.at_level(logging.INFO, "aigw.identity"):
        await cache.get()
    record = next(r for r in caplog.records if r.getMessage() == "backend token acquired")
    assert record.__dict__["identity"] == "managed"
    assert record.__dict__["client_id"] == "client-1"
    assert record.__dict__["resource"] == RESOURCE
    assert record.__dict__["expires_on"].startswith("2026-01-01T01:00:00")
    assert "token-1" not in caplog.text
    assert "token-1" not in repr(await cache.get())


class CountedEvents:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def event(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        self.seen.append((name, dict(labels)))


async def test_acquisitions_and_failures_are_counted_as_metrics() -> None:
    cache, provider, clock = make(lifetime=3600)
    events = CountedEvents()
    cache.events = events
    await cache.get()
    provider.fail = "endpoint down"
    clock.advance(3600)
    with pytest.raises(TokenUnavailable):
        await cache.get()
    kind = provider.kind
    assert events.seen == [
        ("identity_token_acquisitions", {"identity": kind, "result": "ok"}),
        ("identity_token_acquisitions", {"identity": kind, "result": "error"}),
    ]
