"""A deadline that is pushed back far more often than it expires (a connection's silence
limits): one loop timer stays armed across pushes and, when it fires before the current
deadline, sleeps again until then, so arming and disarming cost an attribute write instead
of creating and cancelling a timer each time (~2 µs with uvloop, several times a request)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Loop timers fire to the millisecond (uvloop's clock moves in whole milliseconds), so one
# may fire up to that much before its time: a deadline that close counts as due.
_RESOLUTION = 0.001


class Deadline:
    __slots__ = ("_at", "_callback", "_closed", "_loop", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._at: float | None = None  # when the callback is due; None: disarmed
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closed = False

    @property
    def armed(self) -> bool:
        return self._at is not None

    def arm(self, seconds: float) -> None:
        """Call back `seconds` from now, unless armed again or disarmed before (never once
        closed)."""
        if self._closed:
            return
        at = self._loop.time() + seconds
        self._at = at
        if self._timer is None:
            self._start(at)
        elif at < self._timer_at:  # sooner than the armed timer: only a new one can say so
            self._timer.cancel()
            self._start(at)

    def disarm(self) -> None:
        self._at = None  # the timer stays: when it fires it finds nothing due

    def close(self) -> None:
        """Disarm for good and drop the timer: the owner is going away, and a timer left
        armed would keep it in memory until it fired."""
        self._closed = True
        self._at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start(self, at: float) -> None:
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        at = self._at
        if at is None:
            return
        if at - self._loop.time() > _RESOLUTION:
            self._start(at)  # pushed back meanwhile
            return
        self._at = None
        self._callback()
