"""The circuit breaker on a manual clock: rules, trips, Retry-After, half-open, snapshots."""

from __future__ import annotations

import logging

import pytest

from aigw.backends.breaker import CircuitBreaker
from aigw.backends.outcome import Outcome
from aigw.clock import ManualClock
from aigw.config.model import BreakerRule
from tests.unit.backends.fakes import rule

OK = Outcome(200)
THROTTLED = Outcome(429)
ERROR = Outcome(500)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def send(breaker: CircuitBreaker, outcome: Outcome | None) -> None:
    """One request through the breaker, as a pool or a guarded backend sends it."""
    assert breaker.can_send()
    ticket = breaker.begin()
    breaker.end(ticket, outcome)
    breaker.done()


def count_rule(count: int = 3, interval: float = 10, **more: object) -> BreakerRule:
    return rule(
        "five-hundreds",
        **{
            "failure-condition": {
                "count": count,
                "interval": interval,
                "status-code-ranges": ["500-599"],
            },
            "trip-duration": 30,
            **more,
        },
    )


def test_a_count_rule_trips_on_the_nth_failure_within_its_interval(clock: ManualClock) -> None:
    breaker = CircuitBreaker("b", [count_rule()], clock)
    send(breaker, ERROR)
    send(breaker, OK)  # successes do not take failures back
    send(breaker, ERROR)
    assert breaker.state == "closed"
    clock.advance(9.9)
    send(breaker, ERROR)
    assert breaker.state == "open"
    assert not breaker.can_send()
    assert breaker.available_at() == pytest.approx(clock.monotonic() + 30)


def test_a_count_rule_forgets_failures_older_than_its_interval(clock: ManualClock) -> None:
    breaker = CircuitBreaker("b", [count_rule()], clock)
    for _ in range(3):
        send(breaker, ERROR)
        clock.advance(6)  # 0, 6, 12: never three within 10 s
    assert breaker.state == "closed"
    send(breaker, ERROR)  # 6, 12, 18
    assert breaker.state == "closed"
    clock.advance(1)
    send(breaker, ERROR)  # 12, 18, 19
    assert breaker.state == "open"


def test_a_percentage_rule_waits_for_its_minimum_of_requests(clock: ManualClock) -> None:
    percentage = rule(
        "half",
        **{
            "failure-condition": {
                "percentage": 50,
                "minimum-requests": 10,
                "interval": 10,
                "status-code-ranges": [429, "500-599"],
            }
        },
    )
    breaker = CircuitBreaker("b", [percentage], clock)
    for _ in range(4):
        send(breaker, ERROR)  # 100 % but only 4 requests
    for _ in range(6):
        send(breaker, OK)
    send(breaker, THROTTLED)  # 5 of 11
    assert breaker.state == "closed"
    send(breaker, ERROR)  # 6 of 12 = 50 %
    assert breaker.state == "open"


def test_a_percentage_rule_counts_only_its_window(clock: ManualClock) -> None:
    percentage = rule(
        "half",
        **{
            "failure-condition": {
                "percentage": 50,
                "minimum-requests": 4,
                "interval": 10,
                "status-code-ranges": ["500-599"],
            }
        },
    )
    breaker = CircuitBreaker("b", [percentage], clock)
    for _ in range(3):
        send(breaker, ERROR)
    clock.advance(10.5)  # those three are out of the window now
    for _ in range(3):
        send(breaker, OK)
    send(breaker, ERROR)  # 1 of 4
    assert breaker.state == "closed"
    snapshot = breaker.snapshot()["rules"][0]
    assert (snapshot["recentFailures"], snapshot["recentRequests"]) == (1, 4)


def test_several_rules_each_judge_their_own_failures(clock: ManualClock) -> None:
    throttle = rule(
        "throttle",
        **{"accept-retry-after": True, "trip-duration": 5, "max-retry-after": 60},
    )
    breaker = CircuitBreaker("b", [throttle, count_rule(count=2)], clock)
    send(breaker, ERROR)
    assert breaker.state == "closed"  # one 500: the 429 rule ignores it, the other needs 2
    send(breaker, ERROR)
    assert breaker.state == "open"
    trip = breaker.last_trip
    assert trip is not None
    assert (trip.rule, trip.cause, trip.open_for) == ("five-hundreds", "status 500", 30)
    clock.advance(30)
    send(breaker, OK)  # the one trial closes it
    send(breaker, Outcome(429, retry_after=2.0))
    trip = breaker.last_trip
    assert trip is not None
    assert (trip.rule, trip.open_for, trip.retry_after) == ("throttle", 2.0, 2.0)


def test_error_reasons_match_failures_without_an_answer(clock: ManualClock) -> None:
    timeouts = rule(
        "timeouts",
        **{"failure-condition": {"count": 2, "error-reasons": ["timeout", "stalled"]}},
    )
    breaker = CircuitBreaker("b", [timeouts], clock)
    send(breaker, Outcome(error="connection-failure"))  # not in this rule's reasons
    send(breaker, ERROR)  # nor any status
    send(breaker, Outcome(error="timeout"))
    assert breaker.state == "closed"
    send(breaker, Outcome(error="stalled"))
    assert breaker.state == "open"
    assert breaker.last_trip is not None and breaker.last_trip.cause == "stalled"
    assert breaker.failures == 4 and breaker.requests == 4


@pytest.mark.parametrize(
    ("accept", "retry_after", "open_for"),
    [
        (True, 2.5, 2.5),  # the backend's word, even below trip-duration (as APIM)
        (True, 86_400.0, 120.0),  # a day-long quota message, capped at max-retry-after
        (True, None, 30.0),  # nothing said: trip-duration
        (False, 2.5, 30.0),  # not accepted: trip-duration
    ],
)
def test_accept_retry_after_with_its_cap(
    clock: ManualClock, accept: bool, retry_after: float | None, open_for: float
) -> None:
    throttle = rule(
        "throttle",
        **{"accept-retry-after": accept, "trip-duration": 30, "max-retry-after": 120},
    )
    breaker = CircuitBreaker("b", [throttle], clock)
    send(breaker, Outcome(429, retry_after=retry_after))
    assert breaker.available_at() == pytest.approx(clock.monotonic() + open_for)
    clock.advance(open_for - 0.01)
    assert not breaker.can_send()
    clock.advance(0.01)
    assert breaker.can_send()
    assert breaker.state == "half-open"


def test_half_open_lets_its_trials_through_and_closes_when_all_succeed(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aigw.backends")
    breaker = CircuitBreaker("ptu", [rule("throttle", **{"half-open-requests": 2})], clock)
    send(breaker, THROTTLED)
    clock.advance(30)
    assert breaker.can_send()
    first, second = breaker.begin(), breaker.begin()
    assert not breaker.can_send()  # both trial slots are out
    assert breaker.available_at() == clock.monotonic()  # they decide any moment
    breaker.end(first, OK)
    assert breaker.state == "half-open"
    breaker.end(second, OK)
    assert breaker.state == "closed"
    assert breaker.can_send()
    events = [record.__dict__.get("event") for record in caplog.records]
    assert events == ["breaker-open", "breaker-half-open", "breaker-closed"]
    opened = caplog.records[0]
    assert opened.levelno == logging.WARNING
    assert "ptu" in opened.getMessage() and "throttle" in opened.getMessage()


def test_a_failed_trial_opens_it_again(clock: ManualClock) -> None:
    throttle = rule(
        "throttle",
        **{"half-open-requests": 3, "accept-retry-after": True, "trip-duration": 10},
    )
    breaker = CircuitBreaker("b", [throttle], clock)
    send(breaker, THROTTLED)
    clock.advance(10)
    send(breaker, OK)
    send(breaker, Outcome(429, retry_after=4.0))
    assert breaker.state == "open"
    assert breaker.available_at() == pytest.approx(clock.monotonic() + 4)
    clock.advance(4)
    for _ in range(3):
        send(breaker, OK)
    assert breaker.state == "closed"


def test_answers_to_requests_sent_before_a_change_of_state_do_not_count(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker("b", [rule("throttle", **{"trip-duration": 10})], clock)
    slow = breaker.begin()  # sent while closed, answers much later
    send(breaker, THROTTLED)
    clock.advance(10)
    assert breaker.state == "half-open"
    breaker.end(slow, THROTTLED)  # an old 429: the trial decides, not this
    breaker.done()
    assert breaker.state == "half-open"
    send(breaker, OK)
    assert breaker.state == "closed"
    assert breaker.failures == 2  # counted as traffic all the same


def test_an_abandoned_trial_frees_its_slot(clock: ManualClock) -> None:
    breaker = CircuitBreaker("b", [rule("throttle", **{"trip-duration": 1})], clock)
    send(breaker, THROTTLED)
    clock.advance(1)
    ticket = breaker.begin()
    assert not breaker.can_send()
    breaker.end(ticket, None)  # the client went away before an answer
    breaker.done()
    assert breaker.can_send()
    assert breaker.state == "half-open"


def test_a_breaker_without_rules_only_counts(clock: ManualClock) -> None:
    breaker = CircuitBreaker("b", [], clock)
    for _ in range(50):
        send(breaker, ERROR)
    assert breaker.state == "closed" and breaker.can_send()
    assert (breaker.requests, breaker.failures) == (50, 50)
    assert not breaker.has_rules


def test_snapshot_says_what_tripped_it_and_until_when(clock: ManualClock) -> None:
    breaker = CircuitBreaker("b", [rule("throttle", **{"trip-duration": 20}), count_rule()], clock)
    in_flight = breaker.begin()
    clock.advance(5)
    send(breaker, THROTTLED)
    counters = breaker.counters()
    assert counters["state"] == "open"
    assert counters["inFlight"] == 1
    assert counters["lastFailure"]["cause"] == "status 429"
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "open"
    assert snapshot["since"] == "2026-01-01T00:00:05.000+00:00"
    assert snapshot["until"] == "2026-01-01T00:00:25.000+00:00"
    assert snapshot["lastTrip"] == {
        "rule": "throttle",
        "cause": "status 429",
        "threshold": "1 failure(s) within 10 s",
        "at": "2026-01-01T00:00:05.000+00:00",
        "openSeconds": 20,
        "retryAfter": None,
        "origin": None,
    }
    assert snapshot["reason"] == counters["reason"] == "circuit-breaker"
    assert [r["name"] for r in snapshot["rules"]] == ["throttle", "five-hundreds"]
    breaker.end(in_flight, OK)
    breaker.done()
    assert breaker.counters()["inFlight"] == 0
    clock.advance(20)
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "half-open"
    assert snapshot["until"] is None
    assert snapshot["trials"] == {"allowed": 1, "started": 0, "succeeded": 0}


def test_a_percentage_rule_starts_afresh_after_a_trip_even_early_on_the_clock() -> None:
    # A monotonic clock may be near zero (a fresh boot): cleared buckets must not count.
    clock = ManualClock()
    clock._monotonic = 0.0
    percentage = rule(
        "half",
        **{
            "failure-condition": {
                "percentage": 50,
                "minimum-requests": 2,
                "interval": 10,
                "status-code-ranges": ["500-599"],
            },
            "trip-duration": 1,
        },
    )
    breaker = CircuitBreaker("b", [percentage], clock)
    send(breaker, ERROR)
    send(breaker, ERROR)
    assert breaker.state == "open"
    clock.advance(1)
    send(breaker, OK)  # the trial closes it
    assert breaker.state == "closed"
    send(breaker, ERROR)  # one request since: below the minimum of two
    assert breaker.state == "closed"
    snapshot = breaker.snapshot()["rules"][0]
    assert (snapshot["recentFailures"], snapshot["recentRequests"]) == (1, 1)
