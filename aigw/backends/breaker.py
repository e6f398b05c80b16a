"""A circuit breaker for one backend: closed → open → half-open → closed (or open again).

Rules judge each answer (see `failures.py`); the first rule whose threshold is reached trips
the breaker for its `trip-duration`, or, with `accept-retry-after`, for as long as the backend
asked (capped at `max-retry-after`; it may be shorter than the trip duration, as in APIM, so
a PTU deployment is back as soon as it says). When that time has passed the breaker is
half-open: the tripping rule's `half-open-requests` trial requests go through, and it
closes when all of them succeed or opens again on the first failure.

Transitions happen lazily when traffic or the admin API looks, on the injected clock. On the
closed path a request costs a few attribute reads and one set lookup per rule.

Two more things can open it, both from background tasks and never on the request path:
`adopt` (a trip another replica published, see `shared.py`) and `set_unhealthy` (active
health checks, see `health.py`), which holds it open until `set_healthy`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from aigw.backends.failures import RuleWindow
from aigw.backends.outcome import Outcome
from aigw.clock import Clock
from aigw.config.model import BreakerRule

log = logging.getLogger("aigw.backends")

State = Literal["closed", "open", "half-open"]
# Why a breaker is not closed: its own rules, a trip another replica published, or probes.
Reason = Literal["circuit-breaker", "shared", "health-check"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """Handed out by `begin`: an answer counts only in the state its request began in."""

    generation: int
    trial: bool


@dataclass(frozen=True, slots=True)
class Trip:
    """Why the breaker opened last."""

    rule: str
    cause: str  # "status 429", "timeout" …
    threshold: str
    at: float
    open_for: float
    retry_after: float | None  # what the backend asked for, when the rule accepts it
    origin: str | None = None  # the replica whose trip this is, when adopted from Redis


class CircuitBreaker:
    def __init__(self, backend_id: str, rules: Sequence[BreakerRule], clock: Clock) -> None:
        self.backend_id = backend_id
        self._clock = clock
        self._rules = [RuleWindow(rule) for rule in rules]
        # The longest these rules can open it for: a trip adopted from another replica
        # (another config, a skewed clock, a stray record) is held to it as well.
        self._longest_open = max(
            (
                max(rule.trip_duration, rule.max_retry_after)
                if rule.accept_retry_after
                else rule.trip_duration
                for rule in rules
            ),
            default=math.inf,  # (without rules it never joins sharing)
        )
        self._state: State = "closed"
        self._since = clock.monotonic()
        self._until = 0.0  # while open: when it half-opens
        self._generation = 0
        self._ticket = Ticket(0, False)
        self._trial_limit = 1
        self._trials_started = 0
        self._trials_passed = 0
        self.last_trip: Trip | None = None
        self.in_flight = 0
        self.requests = 0
        self.failures = 0  # answers that were 429 or 5xx, or no answer at all
        self.last_failure: tuple[float, str] | None = None
        # Told of every trip and close this breaker's own rules decide (to publish them).
        self.on_change: Callable[[CircuitBreaker], None] | None = None
        self._unhealthy: str | None = None  # the failed probe holding it open
        self._comeback = 0.0  # seconds passing probes need, at least, to lift the hold

    @property
    def has_rules(self) -> bool:
        return bool(self._rules)

    @property
    def open_until(self) -> float:
        """While open on a trip: the monotonic time it half-opens."""
        return self._until

    @property
    def reason(self) -> Reason | None:
        if self.state == "closed":
            return None
        if self._unhealthy is not None:
            return "health-check"
        trip = self.last_trip
        return "shared" if trip is not None and trip.origin is not None else "circuit-breaker"

    @property
    def state(self) -> State:
        if self._state == "open":
            self._refresh(self._clock.monotonic())
        return self._state

    def can_send(self) -> bool:
        if self._state == "closed":
            return True
        self._refresh(self._clock.monotonic())
        return self._state == "half-open" and self._trials_started < self._trial_limit

    def available_at(self) -> float:
        """Monotonic time from which it takes traffic: now when it can, else when it opens
        up (a half-open breaker whose trials are all out may decide any moment: now)."""
        now = self._clock.monotonic()
        if self._state == "open":
            self._refresh(now)
            if self._state == "open" and self._unhealthy is not None:
                return max(self._until, now + self._comeback)
        return self._until if self._state == "open" else now

    def begin(self) -> Ticket:
        """Call right after `can_send` said yes, before the request goes out."""
        self.in_flight += 1
        if self._state == "closed":
            return self._ticket
        self._refresh(self._clock.monotonic())
        if self._state == "half-open":
            self._trials_started += 1
            return Ticket(self._generation, True)
        return self._ticket

    def end(self, ticket: Ticket, outcome: Outcome | None) -> None:
        """Judge the answer (None: the request was abandoned, nothing to judge)."""
        if outcome is None:
            if ticket.trial and ticket.generation == self._generation:
                self._trials_started -= 1  # the slot goes to the next request
            return
        self.requests += 1
        failed = not outcome.ok
        if failed:
            self.failures += 1
            self.last_failure = (self._clock.monotonic(), _cause(outcome))
        if self._rules and ticket.generation == self._generation:
            # (An answer to a request sent before the last change of state does not count.)
            self._judge(ticket, outcome)

    def done(self) -> None:
        """The answer has been relayed (or dropped): no longer in flight."""
        self.in_flight -= 1

    def _judge(self, ticket: Ticket, outcome: Outcome) -> None:
        if self._state == "open":
            return  # only if a caller sent without asking `can_send`: it is open already
        now = self._clock.monotonic()
        if ticket.trial:
            window = next((w for w in self._rules if w.counts_as_failure(outcome)), None)
            if window is not None:
                self._trip(now, window, outcome)
                return
            self._trials_passed += 1
            if self._trials_passed >= self._trial_limit:
                self._close(now)
            return
        for window in self._rules:
            if window.record(now, window.counts_as_failure(outcome)):
                self._trip(now, window, outcome)
                return

    def _trip(self, now: float, window: RuleWindow, outcome: Outcome) -> None:
        rule = window.rule
        accepted = outcome.retry_after if rule.accept_retry_after else None
        open_for = rule.trip_duration if accepted is None else min(accepted, rule.max_retry_after)
        self.last_trip = Trip(
            rule.name, _cause(outcome), window.threshold(), now, open_for, accepted
        )
        self._until = now + open_for
        self._trial_limit = rule.half_open_requests
        self._enter("open", now)
        if self.on_change is not None:
            self.on_change(self)
        log.warning(
            "circuit breaker of backend %r opened by rule %r (%s) for %.3g s",
            self.backend_id,
            rule.name,
            self.last_trip.cause,
            open_for,
            extra={
                "event": "breaker-open",
                "backend": self.backend_id,
                "rule": rule.name,
                "cause": self.last_trip.cause,
                "open_seconds": round(open_for, 3),
            },
        )

    def adopt(self, trip: Trip, until: float) -> bool:
        """Open until `until` (monotonic) for a trip another replica published, at most as
        long as this breaker's own rules could, unless it is open that long already; a
        health-check hold stays as it is."""
        now = self._clock.monotonic()
        until = min(until, now + self._longest_open)
        if until <= now or (self._state == "open" and self._until >= until):
            return False
        self.last_trip = trip
        self._until = until
        self._trial_limit = next(
            (w.rule.half_open_requests for w in self._rules if w.rule.name == trip.rule), 1
        )
        if self._unhealthy is None:
            self._enter("open", now)
        log.warning(
            "circuit breaker of backend %r opened for %.3g s by replica %s (rule %r, %s)",
            self.backend_id,
            until - now,
            trip.origin,
            trip.rule,
            trip.cause,
            extra={
                "event": "breaker-open",
                "backend": self.backend_id,
                "rule": trip.rule,
                "cause": trip.cause,
                "open_seconds": round(until - now, 3),
                "origin": trip.origin,
            },
        )
        return True

    def follow_close(self, at: float, origin: str) -> bool:
        """Another replica's breaker closed at `at` (monotonic): close too, unless this one
        tripped after that, or probes hold it open."""
        trip = self.last_trip
        if self._state == "closed" or self._unhealthy is not None:
            return False
        if trip is not None and trip.at >= at:
            return False
        self._enter("closed", self._clock.monotonic())
        log.info(
            "circuit breaker of backend %r closed: replica %s closed it",
            self.backend_id,
            origin,
            extra={"event": "breaker-closed", "backend": self.backend_id, "origin": origin},
        )
        return True

    def set_unhealthy(self, cause: str, comeback: float) -> None:
        """Active health checks failed: open until `set_healthy` (at least `comeback` s)."""
        self._comeback = comeback
        if self._unhealthy is None:
            self._unhealthy = cause
            self._enter("open", self._clock.monotonic())

    def set_healthy(self) -> None:
        """Probes pass again: closed, or open until a trip still in force ends."""
        if self._unhealthy is None:
            return
        self._unhealthy = None
        now = self._clock.monotonic()
        if now >= self._until:
            self._enter("closed", now)

    def _refresh(self, now: float) -> None:
        if self._state == "open" and now >= self._until and self._unhealthy is None:
            self._trials_started = self._trials_passed = 0
            self._enter("half-open", now)
            log.info(
                "circuit breaker of backend %r is half-open: %d trial request(s) decide",
                self.backend_id,
                self._trial_limit,
                extra={"event": "breaker-half-open", "backend": self.backend_id},
            )

    def _close(self, now: float) -> None:
        self._enter("closed", now)
        if self.on_change is not None:
            self.on_change(self)
        log.info(
            "circuit breaker of backend %r closed: %d trial request(s) succeeded",
            self.backend_id,
            self._trials_passed,
            extra={"event": "breaker-closed", "backend": self.backend_id},
        )

    def _enter(self, state: State, now: float) -> None:
        self._state = state
        self._since = now
        self._generation += 1
        self._ticket = Ticket(self._generation, False)
        # Each period is judged on its own: what led to a trip must not count after it.
        for window in self._rules:
            window.clear()

    def counters(self) -> dict[str, Any]:
        """Traffic seen, for the admin API (kept with or without rules)."""
        failure = self.last_failure
        return {
            "state": self.state,
            "reason": self.reason,
            "inFlight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "lastFailure": None
            if failure is None
            else {"at": self._wall(failure[0]), "cause": failure[1]},
        }

    def snapshot(self) -> dict[str, Any]:
        """The breaker's state and rules for the admin API, times as wall-clock ISO 8601."""
        now = self._clock.monotonic()
        state = self.state
        at = self._wall
        trip = self.last_trip
        document: dict[str, Any] = {
            "state": state,
            "reason": self.reason,
            "since": at(self._since),
            # Held open by probes: until they pass, which no clock can say.
            "until": at(self._until) if state == "open" and self._unhealthy is None else None,
            "lastTrip": None
            if trip is None
            else {
                "rule": trip.rule,
                "cause": trip.cause,
                "threshold": trip.threshold,
                "at": at(trip.at),
                "openSeconds": round(trip.open_for, 3),
                "retryAfter": trip.retry_after,
                "origin": trip.origin,
            },
            "rules": [_rule_snapshot(window, now) for window in self._rules],
        }
        if state == "half-open":
            document["trials"] = {
                "allowed": self._trial_limit,
                "started": self._trials_started,
                "succeeded": self._trials_passed,
            }
        return document

    def _wall(self, moment: float) -> str:
        seconds_ago = self._clock.monotonic() - moment
        return (self._clock.now() - timedelta(seconds=seconds_ago)).isoformat(
            timespec="milliseconds"
        )


def _rule_snapshot(window: RuleWindow, now: float) -> dict[str, Any]:
    failures, requests = window.recent(now)
    document: dict[str, Any] = {
        "name": window.rule.name,
        "threshold": window.threshold(),
        "recentFailures": failures,
    }
    if requests is not None:
        document["recentRequests"] = requests
    return document


def _cause(outcome: Outcome) -> str:
    return outcome.error if outcome.error is not None else f"status {outcome.status}"
