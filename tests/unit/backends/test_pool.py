"""Pools and guarded backends over fake members: failover, breakers, 503, first byte, affinity."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from aigw.backends.guarded import BackendUnavailable
from aigw.clock import ManualClock
from aigw.errors import BackendConnectionFailure, BackendTimeout
from tests.unit.backends.fakes import FakeBackend, Reply, body_of, guarded, pool, request, rule

THROTTLE_RULE = rule("throttle", **{"accept-retry-after": True, "trip-duration": 30})
ERRORS_RULE = rule(
    "errors",
    **{
        "failure-condition": {
            "count": 1,
            "status-code-ranges": ["500-599"],
            "error-reasons": ["connection-failure", "timeout", "stalled"],
        },
        "trip-duration": 10,
    },
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def throttled(seconds: int) -> Reply:
    return Reply(429, headers=[("retry-after", str(seconds)), ("x-member-note", "busy")])


async def test_the_first_good_answer_is_returned_with_the_body_sent_as_is(
    clock: ManualClock,
) -> None:
    ptu = FakeBackend("ptu", default=Reply(chunks=[b"hello ", b"world"]))
    the_pool = pool([(guarded(ptu, clock), 1, 1)], clock)
    body = b'{"model":  "m",\n "messages": []}'
    response = await the_pool.send(request(body))
    assert response.status_code == 200
    assert await body_of(response) == b"hello world"
    assert ptu.bodies == [body]


async def test_ptu_throttling_spills_over_to_payg_and_comes_back_after_retry_after(
    clock: ManualClock,
) -> None:
    ptu = FakeBackend("ptu", script=[throttled(2)])
    payg_a, payg_b = FakeBackend("payg-a"), FakeBackend("payg-b")
    ptu_member = guarded(ptu, clock, THROTTLE_RULE)
    the_pool = pool(
        [
            (ptu_member, 1, 1),
            (guarded(payg_a, clock, THROTTLE_RULE), 2, 1),
            (guarded(payg_b, clock, THROTTLE_RULE), 2, 1),
        ],
        clock,
    )
    body = b'{"exact": "bytes"}'
    # The same client request: PTU says 429, PAYG answers; the 429 never reaches the client.
    response = await the_pool.send(request(body))
    assert response.status_code == 200
    await body_of(response)
    assert ptu.bodies == [body] and payg_a.bodies == [body]
    assert ptu.released == 1  # the 429 was let go
    assert ptu_member.breaker.state == "open"
    for _ in range(6):
        await body_of(await the_pool.send(request()))
    assert ptu.calls == 1  # tripped: not asked again
    assert (payg_a.calls, payg_b.calls) == (4, 3)  # round robin in the PAYG group
    clock.advance(2)  # the PTU's own Retry-After, not the 30 s trip duration
    for _ in range(5):
        await body_of(await the_pool.send(request()))
    assert ptu.calls == 6
    assert ptu_member.breaker.state == "closed"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (Reply(503), "status 503"),
        (Reply(error=BackendConnectionFailure()), "connection-failure"),
        (Reply(error=BackendTimeout()), "timeout"),
    ],
)
async def test_errors_and_5xx_fail_over_and_are_judged_by_the_breaker(
    clock: ManualClock, failure: Reply, reason: str
) -> None:
    first, second = FakeBackend("first", script=[failure]), FakeBackend("second")
    first_member = guarded(first, clock, ERRORS_RULE)
    the_pool = pool([(first_member, 1, 1), (guarded(second, clock), 1, 1)], clock)
    response = await the_pool.send(request())
    assert response.status_code == 200
    await body_of(response)
    assert (first.calls, second.calls) == (1, 1)
    assert first_member.breaker.last_trip is not None
    assert first_member.breaker.last_trip.cause == reason
    assert first_member.breaker.counters()["inFlight"] == 0


async def test_when_every_attempt_fails_the_last_answer_goes_back_as_it_came(
    clock: ManualClock,
) -> None:
    a = FakeBackend("a", default=Reply(500))
    b = FakeBackend("b", default=throttled(7))
    the_pool = pool([(guarded(a, clock), 1, 1), (guarded(b, clock), 2, 1)], clock)
    response = await the_pool.send(request())
    assert response.status_code == 429
    assert response.headers.get("retry-after") == "7"
    assert response.headers.get("x-member-note") == "busy"
    await body_of(response)
    assert (a.released, b.released) == (1, 1)


async def test_when_every_attempt_fails_without_an_answer_the_last_error_is_raised(
    clock: ManualClock,
) -> None:
    a = FakeBackend("a", default=Reply(error=BackendConnectionFailure()))
    b = FakeBackend("b", default=Reply(error=BackendTimeout()))
    the_pool = pool([(guarded(a, clock), 1, 1), (guarded(b, clock), 1, 1)], clock)
    with pytest.raises(BackendTimeout) as caught:  # b's, the last one
        await the_pool.send(request())
    assert caught.value.message == "Backend service did not respond in time"
    assert (a.calls, b.calls) == (1, 1)


async def test_max_attempts_bounds_the_members_tried(clock: ManualClock) -> None:
    members = [FakeBackend(name, default=Reply(500)) for name in "abc"]
    the_pool = pool(
        [(guarded(member, clock), 1, 1) for member in members], clock, **{"max-attempts": 2}
    )
    response = await the_pool.send(request())
    assert response.status_code == 500
    await body_of(response)
    assert sum(member.calls for member in members) == 2


async def test_nothing_eligible_is_a_503_with_an_honest_retry_after(clock: ManualClock) -> None:
    a, b = FakeBackend("a", default=throttled(9)), FakeBackend("b", default=Reply(500))
    a_member = guarded(a, clock, THROTTLE_RULE)  # opens for the 9 s it asks
    b_member = guarded(
        b,
        clock,
        rule(
            "e",
            **{
                "failure-condition": {"count": 1, "status-code-ranges": [500]},
                "trip-duration": 2.5,
            },
        ),
    )
    the_pool = pool([(a_member, 1, 1), (b_member, 1, 1)], clock)
    await body_of(await the_pool.send(request()))  # both fail, both trip
    calls = a.calls + b.calls
    with pytest.raises(BackendUnavailable) as caught:
        await the_pool.send(request())
    error = caught.value
    assert (error.status_code, error.reason) == (503, "BackendPoolUnavailable")
    assert error.message == "No backend is available right now"
    assert error.headers == [("retry-after", "3")]  # b is back in 2.5 s: rounded up
    assert a.calls + b.calls == calls  # nobody was asked
    clock.advance(1.2)
    with pytest.raises(BackendUnavailable) as caught:
        await the_pool.send(request())
    assert caught.value.headers == [("retry-after", str(math.ceil(2.5 - 1.2)))]
    clock.advance(1.3)
    response = await the_pool.send(request())  # b half-open: its trial goes out
    assert b.calls == 2
    await body_of(response)


async def test_a_standalone_backend_with_an_open_breaker_answers_the_same_503(
    clock: ManualClock,
) -> None:
    single = FakeBackend("single", script=[Reply(500), Reply(200)])
    backend = guarded(single, clock, ERRORS_RULE)
    response = await backend.send(request())
    assert response.status_code == 500  # no pool: the answer goes back, and is judged
    await body_of(response)
    with pytest.raises(BackendUnavailable) as caught:
        await backend.send(request())
    assert caught.value.headers == [("retry-after", "10")]
    assert single.calls == 1
    clock.advance(10)
    await body_of(await backend.send(request()))
    assert backend.breaker.state == "closed"
    assert backend.status()["requests"] == 2 and backend.status()["failures"] == 1


async def test_no_first_byte_in_time_fails_over_and_the_first_chunk_is_not_lost(
    clock: ManualClock,
) -> None:
    stalled = FakeBackend("stalled", script=[Reply(first_chunk_delay=math.inf)])
    healthy = FakeBackend("healthy", default=Reply(chunks=[b"data: 1\n\n", b"data: 2\n\n"]))
    stalled_member = guarded(stalled, clock, ERRORS_RULE)
    the_pool = pool(
        [(stalled_member, 1, 1), (guarded(healthy, clock), 2, 1)],
        clock,
        **{"first-byte-timeout": 0.05},
    )
    response = await the_pool.send(request())
    assert await body_of(response) == b"data: 1\n\ndata: 2\n\n"
    assert stalled.released == 1
    assert stalled_member.breaker.last_trip is not None
    assert stalled_member.breaker.last_trip.cause == "stalled"
    assert stalled_member.breaker.counters()["inFlight"] == 0


async def test_first_byte_timeout_counts_from_sending_a_slow_head_is_a_timeout(
    clock: ManualClock,
) -> None:
    slow = FakeBackend("slow", script=[Reply(head_delay=5)])
    fast = FakeBackend("fast")
    slow_member = guarded(slow, clock, ERRORS_RULE)
    the_pool = pool(
        [(slow_member, 1, 1), (guarded(fast, clock), 1, 1)], clock, **{"first-byte-timeout": 0.05}
    )
    await body_of(await the_pool.send(request()))
    assert slow_member.breaker.last_trip is not None
    assert slow_member.breaker.last_trip.cause == "timeout"
    assert fast.calls == 1


async def test_a_stream_that_breaks_before_its_first_byte_fails_over(clock: ManualClock) -> None:
    broken = FakeBackend(
        "broken", script=[Reply(error=BackendConnectionFailure(), error_in_stream=True)]
    )
    good = FakeBackend("good")
    the_pool = pool(
        [(guarded(broken, clock), 1, 1), (guarded(good, clock), 1, 1)],
        clock,
        **{"first-byte-timeout": 1},
    )
    assert await body_of(await the_pool.send(request())) == b'{"ok": true}'
    assert broken.released == 1 and good.calls == 1


async def test_without_first_byte_timeout_the_answer_returns_at_its_head(
    clock: ManualClock,
) -> None:
    # Once returned, the pool is out of the picture: a stream that breaks later is the
    # client's truncated stream, never a retry (the relay aborts it).
    broken = FakeBackend("broken", default=Reply(error=BackendTimeout(), error_in_stream=True))
    other = FakeBackend("other")
    the_pool = pool([(guarded(broken, clock), 1, 1), (guarded(other, clock), 2, 1)], clock)
    response = await the_pool.send(request())
    with pytest.raises(BackendTimeout):
        await body_of(response)
    assert other.calls == 0


async def test_session_affinity_sticks_to_a_member_while_it_is_available(
    clock: ManualClock,
) -> None:
    a, b = FakeBackend("a"), FakeBackend("b", script=[Reply(), Reply(), throttled(5)])
    b_member = guarded(b, clock, THROTTLE_RULE)
    the_pool = pool(
        [(guarded(a, clock), 1, 1), (b_member, 1, 1)],
        clock,
        **{"session-affinity": {"cookie": "gw-session"}},
    )
    first = await the_pool.send(request())
    cookie = first.headers.get("set-cookie")
    assert cookie is not None and cookie.startswith("gw-session=")
    assert "HttpOnly" in cookie and "a;" not in cookie and "Path=/" in cookie
    await body_of(first)
    token_a = cookie.split(";")[0]
    # Round robin alone would alternate; the cookie keeps the client on a.
    for _ in range(3):
        response = await the_pool.send(request(cookie=f"other=1; {token_a}"))
        assert response.headers.get("set-cookie") is None  # already stuck there
        await body_of(response)
    assert (a.calls, b.calls) == (4, 0)
    # A session on b moves to a when b trips, with a new cookie.
    second = await the_pool.send(request())  # round robin: b's turn
    token_b = second.headers.get("set-cookie", "").split(";")[0]
    await body_of(second)
    assert b.calls == 1 and token_b != token_a
    await body_of(await the_pool.send(request(cookie=token_b)))
    moved = await the_pool.send(request(cookie=token_b))  # b answers 429 and trips
    assert moved.status_code == 200
    assert moved.headers.get("set-cookie", "").split(";")[0] == token_a
    await body_of(moved)
    assert b_member.breaker.state == "open"
    # An unknown token is ignored.
    await body_of(await the_pool.send(request(cookie="gw-session=forged")))


async def test_in_flight_counts_until_the_answer_is_relayed(clock: ManualClock) -> None:
    a = FakeBackend("a", script=[Reply(500)])
    member = guarded(a, clock)
    the_pool = pool([(member, 1, 1)], clock)
    response = await the_pool.send(request())  # the only member: its 500 comes back
    assert member.breaker.in_flight == 1
    await response.aclose()
    assert member.breaker.in_flight == 0


async def test_a_cancelled_attempt_frees_its_trial_slot(clock: ManualClock) -> None:
    a = FakeBackend("a", script=[throttled(1), Reply(head_delay=10)])
    member = guarded(a, clock, THROTTLE_RULE)
    the_pool = pool([(member, 1, 1)], clock)
    await body_of(await the_pool.send(request()))
    clock.advance(1)
    task = asyncio.ensure_future(the_pool.send(request()))
    await asyncio.sleep(0.01)
    assert not member.breaker.can_send()  # the one trial is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert member.breaker.can_send()
    assert member.breaker.in_flight == 0


async def test_weighted_members_share_the_traffic(clock: ManualClock) -> None:
    members = [FakeBackend("a"), FakeBackend("b")]
    the_pool = pool([(guarded(members[0], clock), 1, 3), (guarded(members[1], clock), 1, 1)], clock)
    for _ in range(400):
        await body_of(await the_pool.send(request()))
    assert Counter({m.id: m.calls for m in members}) == Counter({"a": 300, "b": 100})


async def test_status_for_the_admin_api(clock: ManualClock) -> None:
    ptu = FakeBackend("ptu", script=[throttled(4)])
    ptu_member = guarded(ptu, clock, THROTTLE_RULE)
    payg_member = guarded(FakeBackend("payg"), clock)
    the_pool = pool([(ptu_member, 1, 1), (payg_member, 2, 5)], clock)
    await body_of(await the_pool.send(request()))
    status = the_pool.status()
    assert status["type"] == "pool" and status["available"] is True
    assert status["maxAttempts"] == 2
    assert status["members"] == [
        {
            "backend": "ptu",
            "priority": 1,
            "weight": 1,
            "state": "open",
            "reason": "circuit-breaker",
            "available": False,
            "availableInSeconds": 4.0,
            "inFlight": 0,
        },
        {
            "backend": "payg",
            "priority": 2,
            "weight": 5,
            "state": "closed",
            "reason": None,
            "available": True,
            "availableInSeconds": 0.0,
            "inFlight": 0,
        },
    ]
    single = ptu_member.status()
    assert single["state"] == "open" and single["failures"] == 1
    assert single["breaker"]["lastTrip"]["retryAfter"] == 4.0
    assert payg_member.status()["breaker"] is None
    assert single["shared"] is None and single["healthCheck"] is None
