"""How long a throttled backend asks us to wait."""

from __future__ import annotations

import pytest

from aigw.backends.outcome import retry_after_from

NOW = 1_445_412_470.0  # 2015-10-21T07:27:50Z


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "5"}, 5.0),
        ({"retry-after-ms": "1500", "retry-after": "5"}, 1.5),  # the precise one wins
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 10.0),
        # Budget resets only count when nothing says when to retry: then the sooner one.
        ({"retry-after": "2", "x-ratelimit-reset-tokens": "60s"}, 2.0),
        ({"x-ratelimit-reset-tokens": "6m0s", "x-ratelimit-reset-requests": "20ms"}, 0.02),
        ({"x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5),
    ],
)
def test_the_wait_a_backend_asks_for(headers: dict[str, str], expected: float) -> None:
    assert retry_after_from(headers, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "soon"},
        {"retry-after": "-5"},
        {"retry-after": "nan"},
        {"retry-after": "inf"},
        {"retry-after": "Wed, 21 Oct 2015 07:00:00 GMT"},  # in the past
        {"retry-after-ms": "0"},
        {"x-ratelimit-reset-tokens": "5 minutes"},
    ],
)
def test_nonsense_or_past_waits_are_ignored(headers: dict[str, str]) -> None:
    assert retry_after_from(headers, NOW) is None
