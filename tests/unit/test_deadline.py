"""`Deadline`: due when its time comes, pushed back by arming again, never due once disarmed
or closed, and one loop timer for many armings. On a loop whose clock moves only when told
to, then once on each real loop (asyncio's and uvloop, whose clock ticks in milliseconds)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import cast

import pytest
import uvloop

from aigw.deadline import Deadline


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """What `Deadline` uses of a loop: `time()` and `call_at()`, with a clock that moves only
    in `advance`, which runs the timers that come due on the way."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, int, Timer]] = []
        self.made = 0
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        self.made += 1
        timer = Timer(when, callback)
        heapq.heappush(self.timers, (when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self.timers and self.timers[0][0] <= until:
            when, _, timer = heapq.heappop(self.timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = until

    @property
    def pending(self) -> int:
        return sum(1 for _, _, timer in self.timers if not timer.cancelled)


class Calls:
    def __init__(self, loop: ManualLoop) -> None:
        self.loop = loop
        self.at: list[float] = []

    def __call__(self) -> None:
        self.at.append(self.loop.now)


def deadline_on(loop: ManualLoop) -> tuple[Deadline, Calls]:
    calls = Calls(loop)
    return Deadline(cast(asyncio.AbstractEventLoop, loop), calls), calls


def test_it_calls_back_once_when_its_time_comes() -> None:
    loop = ManualLoop()
    deadline, calls = deadline_on(loop)
    deadline.arm(10)
    assert deadline.armed
    loop.advance(9.99)
    assert calls.at == []
    loop.advance(0.02)
    assert calls.at == [110.0]
    assert not deadline.armed
    loop.advance(100)
    assert calls.at == [110.0]


def test_arming_again_pushes_it_back_without_a_new_timer() -> None:
    loop = ManualLoop()
    deadline, calls = deadline_on(loop)
    deadline.arm(10)
    loop.advance(6)
    deadline.arm(10)  # due at 116 now
    loop.advance(5)  # the first timer fires at 110 and sleeps again until 116
    assert calls.at == []
    loop.advance(5)
    assert calls.at == [116.0]
    assert loop.made == 2


def test_a_disarmed_deadline_never_calls_back() -> None:
    loop = ManualLoop()
    deadline, calls = deadline_on(loop)
    deadline.arm(10)
    deadline.disarm()
    assert not deadline.armed
    loop.advance(60)
    assert calls.at == []
    assert loop.pending == 0  # its timer fired, found nothing due and was not renewed


def test_a_sooner_deadline_than_the_armed_one_is_kept() -> None:
    loop = ManualLoop()
    deadline, calls = deadline_on(loop)
    deadline.arm(30)
    deadline.arm(5)
    loop.advance(6)
    assert calls.at == [105.0]
    loop.advance(60)
    assert calls.at == [105.0]  # the 30-s timer was dropped, not left to call back


def test_a_closed_deadline_drops_its_timer_and_is_never_armed_again() -> None:
    loop = ManualLoop()
    deadline, calls = deadline_on(loop)
    deadline.arm(10)
    deadline.close()
    assert loop.pending == 0  # nothing keeps its owner in memory
    deadline.arm(10)  # a late call from the owner's own teardown
    assert not deadline.armed and loop.pending == 0
    loop.advance(60)
    assert calls.at == []


def test_many_armings_and_disarmings_use_one_timer() -> None:
    loop = ManualLoop()
    deadline, calls = deadline_on(loop)
    for _ in range(1000):  # a busy connection: armed per request, disarmed on its answer
        deadline.arm(10)
        deadline.disarm()
        loop.advance(0.001)
    deadline.arm(10)
    assert loop.made == 1
    loop.advance(20)
    assert calls.at == [pytest.approx(111.0)]
    assert loop.made == 2  # the first timer came due early and slept again until then


def test_a_deadline_within_the_clock_resolution_is_due() -> None:
    """uvloop's clock moves in whole milliseconds: a timer may fire a fraction of one early,
    which must not make it sleep again for that fraction, over and over."""
    loop = ManualLoop()
    deadline, calls = deadline_on(loop)
    deadline.arm(10)
    loop.advance(5)
    deadline.arm(5.0004)  # due 0.4 ms after the timer
    loop.advance(5)
    assert calls.at == [110.0]
    assert loop.made == 1


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_on_a_real_loop_it_calls_back_after_its_time_and_not_before(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def run() -> tuple[list[float], float]:
        calls: list[float] = []
        deadline = Deadline(asyncio.get_running_loop(), lambda: calls.append(time.monotonic()))
        started = time.monotonic()
        deadline.arm(0.05)
        deadline.arm(0.1)  # pushed back before it fired
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.01)
        return calls, started

    with asyncio.Runner(loop_factory=new_loop) as runner:
        calls, started = runner.run(run())
    assert len(calls) == 1
    assert calls[0] - started >= 0.099 - 0.001  # within the clock's resolution of its time
