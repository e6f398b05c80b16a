"""`Deadline`: due when its time comes, pushed back by arming again, never due once
disarmed, and one loop timer for many armings."""

from __future__ import annotations

import asyncio
import time

from aigw.deadline import Deadline


class Calls:
    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> None:
        self.at.append(time.monotonic())


async def test_it_calls_back_once_when_its_time_comes() -> None:
    calls = Calls()
    deadline = Deadline(asyncio.get_running_loop(), calls)
    started = time.monotonic()
    deadline.arm(0.05)
    assert deadline.armed
    await asyncio.sleep(0.2)
    assert len(calls.at) == 1
    assert calls.at[0] - started >= 0.045
    assert not deadline.armed


async def test_arming_again_pushes_it_back() -> None:
    calls = Calls()
    deadline = Deadline(asyncio.get_running_loop(), calls)
    started = time.monotonic()
    deadline.arm(0.1)
    await asyncio.sleep(0.06)
    deadline.arm(0.1)  # due at ~0.16 s now, not 0.1 s
    await asyncio.sleep(0.07)
    assert calls.at == []
    await asyncio.sleep(0.15)
    assert len(calls.at) == 1
    assert calls.at[0] - started >= 0.15


async def test_a_disarmed_deadline_never_calls_back() -> None:
    calls = Calls()
    deadline = Deadline(asyncio.get_running_loop(), calls)
    deadline.arm(0.03)
    deadline.disarm()
    assert not deadline.armed
    await asyncio.sleep(0.1)
    assert calls.at == []


async def test_a_sooner_deadline_than_the_armed_one_is_kept() -> None:
    calls = Calls()
    deadline = Deadline(asyncio.get_running_loop(), calls)
    deadline.arm(30)
    started = time.monotonic()
    deadline.arm(0.03)
    await asyncio.sleep(0.15)
    assert len(calls.at) == 1
    assert 0.025 <= calls.at[0] - started < 0.15


async def test_closed_it_never_calls_back_and_can_be_armed_again() -> None:
    calls = Calls()
    deadline = Deadline(asyncio.get_running_loop(), calls)
    deadline.arm(0.03)
    deadline.close()
    await asyncio.sleep(0.1)
    assert calls.at == []
    deadline.arm(0.03)
    await asyncio.sleep(0.1)
    assert len(calls.at) == 1


async def test_many_armings_and_disarmings_use_one_timer() -> None:
    loop = asyncio.get_running_loop()
    made: list[float] = []

    class CountingLoop:
        """The running loop, counting the timers it is asked for."""

        def time(self) -> float:
            return loop.time()

        def call_at(self, when: float, callback: object) -> asyncio.TimerHandle:
            made.append(when)
            return loop.call_at(when, callback)  # type: ignore[arg-type]

    calls = Calls()
    deadline = Deadline(CountingLoop(), calls)  # type: ignore[arg-type]
    for _ in range(1000):  # a busy connection: armed per request, disarmed on its answer
        deadline.arm(0.05)
        deadline.disarm()
    deadline.arm(0.05)
    assert len(made) == 1
    await asyncio.sleep(0.2)
    assert len(calls.at) == 1
    assert len(made) <= 2  # the first timer fired early and slept again until due
