"""How one attempt at a backend went, as circuit breakers and pools judge it."""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

ErrorReason = Literal["connection-failure", "timeout", "stalled"]

# OpenAI-style reset durations: "1s", "6m0s", "20ms", "1h2m3.5s".
_DURATION = re.compile(
    r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$"
)


class HeaderLookup(Protocol):
    """What reading a few headers needs: a dict or the gateway's own `Headers`."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """`status` for an answer (any status), `error` when none came."""

    status: int | None = None
    error: ErrorReason | None = None
    # Seconds the backend asked us to wait (Retry-After and friends), if it said.
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.status is not None
            and self.status < 500
            and self.status != 429
        )


def retry_after_from(headers: HeaderLookup | None, now_epoch: float) -> float | None:
    """How long a 429/503 answer asks us to wait, in seconds: `retry-after-ms`, else
    `Retry-After` (seconds or an HTTP date); only when neither is there, the sooner of
    `x-ratelimit-reset-requests/-tokens` (those say when a whole budget refills, which can
    be far later than when a retry would succeed)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis and (value := _number(millis)) is not None and value > 0:
        return value / 1000
    retry_after = headers.get("retry-after")
    if retry_after:
        seconds = _number(retry_after)
        if seconds is None:
            with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
                seconds = parsedate_to_datetime(retry_after).timestamp() - now_epoch
        if seconds is not None and math.isfinite(seconds) and seconds > 0:
            return seconds
    resets: list[float] = []
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        reset = headers.get(name)
        if reset:
            parsed = _duration(reset.strip())
            if parsed is not None and math.isfinite(parsed) and parsed > 0:
                resets.append(parsed)
    return min(resets) if resets else None


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _duration(text: str) -> float | None:
    plain = _number(text)
    if plain is not None:
        return plain
    match = _DURATION.match(text)
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds, millis = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000
