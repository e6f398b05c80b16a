"""Active health checks over a scripted probe on a manual clock: thresholds, what counts as
a failed probe, the hold on the breaker (pools skip it, a direct call gets 503), and how it
meets trips of the breaker's own rules or another replica's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from aigw.backends.breaker import CircuitBreaker, Trip
from aigw.backends.guarded import BackendUnavailable
from aigw.backends.health import HealthCheck
from aigw.backends.outcome import Outcome
from aigw.clock import ManualClock
from aigw.config.model import HealthCheckConfig
from aigw.errors import BackendConnectionFailure
from tests.unit.backends.fakes import FakeBackend, body_of, guarded, pool, request, rule


class ScriptedProbe:
    """Answers from `results` in order (a status, an exception, or "hang"), then 200."""

    def __init__(self, results: Sequence[int | Exception | str] = ()) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, path: str, seconds: float) -> int:
        self.calls.append((path, seconds))
        result = self.results.pop(0) if self.results else 200
        if result == "hang":
            await asyncio.Event().wait()
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, int)
        return result


def health_config(**fields: Any) -> HealthCheckConfig:
    settings = {
        "path": "/healthz",
        "interval": 5,
        "unhealthy-threshold": 3,
        "healthy-threshold": 2,
        **fields,
    }
    return HealthCheckConfig.model_validate(settings)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def checker(
    clock: ManualClock, probe: ScriptedProbe, breaker: CircuitBreaker | None = None, **fields: Any
) -> HealthCheck:
    breaker = breaker or CircuitBreaker("ptu", [], clock)
    return HealthCheck("ptu", health_config(**fields), breaker, probe, clock)


async def test_failed_probes_in_a_row_take_it_out_and_passes_in_a_row_bring_it_back(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aigw.backends")
    probe = ScriptedProbe([503, 503, 200, 503, 503, 503, 200, 503, 200, 200])
    health = checker(clock, probe)
    breaker = health.breaker
    for _ in range(5):  # two failures, a pass, two failures: never three in a row
        await health.check()
    assert health.healthy and breaker.can_send()
    await health.check()  # the third in a row
    assert not health.healthy and not breaker.can_send()
    assert (breaker.state, breaker.reason) == ("open", "health-check")
    # Back no sooner than two passing probes five seconds apart.
    assert breaker.available_at() == pytest.approx(clock.monotonic() + 10)
    assert breaker.snapshot()["until"] is None
    clock.advance(600)  # held, however long: no half-open on its own
    assert breaker.state == "open" and not breaker.can_send()
    for _ in range(3):  # a pass, a failure, a pass: not two in a row
        await health.check()
    assert not health.healthy
    await health.check()
    assert health.healthy and breaker.state == "closed" and breaker.reason is None
    assert probe.calls[0] == ("/healthz", 5.0)
    events = [record.__dict__.get("event") for record in caplog.records]
    assert events == ["health-check-failed", "health-check-passed"]
    assert caplog.records[0].levelno == logging.WARNING
    assert "status 503" in caplog.records[0].getMessage()


async def test_timeouts_refusals_and_unexpected_statuses_fail_a_probe(clock: ManualClock) -> None:
    probe = ScriptedProbe(["hang", BackendConnectionFailure(), 200, 204, 301, 302])
    health = checker(
        clock,
        probe,
        timeout=0.05,
        **{"expected-status": ["200-204", 301], "unhealthy-threshold": 9},
    )
    results = []
    for _ in range(6):
        passed = await health.check()
        assert health.last is not None
        results.append((passed, health.last[1]))
    assert results == [
        (False, "timeout"),
        (False, "connection-failure"),
        (True, "status 200"),
        (True, "status 204"),
        (True, "status 301"),
        (False, "status 302"),
    ]
    status = health.status()
    assert status == {
        "healthy": True,
        "path": "/healthz",
        "interval": 5.0,
        "consecutiveFailures": 1,
        "consecutiveSuccesses": 0,
        "lastProbe": {"at": "2026-01-01T00:00:00.000+00:00", "result": "status 302"},
    }


async def test_a_pool_passes_over_an_unhealthy_member_and_a_direct_call_gets_503(
    clock: ManualClock,
) -> None:
    ptu, payg = FakeBackend("ptu"), FakeBackend("payg")
    ptu_member = guarded(ptu, clock)
    the_pool = pool([(ptu_member, 1, 1), (guarded(payg, clock), 2, 1)], clock)
    health = checker(clock, ScriptedProbe([500]), ptu_member.breaker, **{"unhealthy-threshold": 1})
    await health.check()
    for _ in range(3):
        await body_of(await the_pool.send(request()))
    assert (ptu.calls, payg.calls) == (0, 3)
    assert the_pool.status()["members"][0]["reason"] == "health-check"
    with pytest.raises(BackendUnavailable) as caught:
        await ptu_member.send(request())
    assert ("retry-after", "10") in caught.value.headers
    await health.check()
    await health.check()
    await body_of(await the_pool.send(request()))
    assert ptu.calls == 1


async def test_a_trip_in_force_outlasts_the_hold(clock: ManualClock) -> None:
    breaker = CircuitBreaker("ptu", [rule("throttle", **{"trip-duration": 60})], clock)
    ticket = breaker.begin()
    breaker.end(ticket, Outcome(429))
    breaker.done()
    health = checker(clock, ScriptedProbe([500, 200, 200]), breaker, **{"unhealthy-threshold": 1})
    await health.check()
    assert breaker.reason == "health-check"
    clock.advance(10)
    await health.check()
    await health.check()
    assert health.healthy
    assert breaker.state == "open" and breaker.reason == "circuit-breaker"
    clock.advance(50)
    assert breaker.state == "half-open"


async def test_another_replicas_trip_during_the_hold_counts_once_it_lifts(
    clock: ManualClock,
) -> None:
    health = checker(clock, ScriptedProbe([500, 200, 200]), **{"unhealthy-threshold": 1})
    breaker = health.breaker
    await health.check()
    now = clock.monotonic()
    trip = Trip("throttle", "status 429", "1 failure(s)", now, 30.0, 30.0, "replica-b")
    assert breaker.adopt(trip, now + 30)
    assert breaker.reason == "health-check"  # still held: probes decide first
    await health.check()
    await health.check()
    assert breaker.state == "open" and breaker.reason == "shared"
    assert breaker.available_at() == pytest.approx(now + 30)


async def test_the_task_probes_every_interval_until_closed(clock: ManualClock) -> None:
    probe = ScriptedProbe([500] * 100)
    health = checker(clock, probe, interval=0.05, **{"unhealthy-threshold": 2})
    await health.start()
    try:
        await asyncio.sleep(0.2)
        assert not health.healthy
        assert 2 <= len(probe.calls) <= 6  # the first at start, then one per interval
    finally:
        await health.close()
    calls = len(probe.calls)
    await asyncio.sleep(0.1)
    assert len(probe.calls) == calls
