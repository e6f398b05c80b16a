"""What a guarded backend shows of itself: its URL without the parts that can hold a key."""

from __future__ import annotations

import pytest

from aigw.backends.breaker import CircuitBreaker
from aigw.backends.guarded import GuardedBackend
from aigw.clock import ManualClock
from tests.unit.backends.fakes import FakeBackend


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://fn-prod.example/api?code=FUNCTIONKEY", "https://fn-prod.example/api"),
        ("https://fn-prod.example:8443/api/#FUNCTIONKEY", "https://fn-prod.example:8443/api/"),
        ("http://user:FUNCTIONKEY@[::1]:8000/v1", "http://[::1]:8000/v1"),
        ("https://llm.internal/openai", "https://llm.internal/openai"),
    ],
)
def test_the_status_shows_the_url_without_user_query_or_fragment(url: str, shown: str) -> None:
    clock = ManualClock()
    backend = FakeBackend("fn")
    guarded = GuardedBackend(backend, CircuitBreaker("fn", [], clock), clock, "http", url=url)
    status = guarded.status()
    assert status["url"] == shown
    assert "FUNCTIONKEY" not in repr(status)
