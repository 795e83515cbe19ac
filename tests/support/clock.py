"""FakeClock: a clock for the job service (bharateo/jobs/clock.py Clock) that moves only when a
test says so, so watchdog, time-budget and queue tests run on events, not on the wall clock.

    clock = FakeClock()
    job = TrainingJob(..., clock=clock).start()
    clock.advance(5.0)                     # every waiter of the clock looks at the new time
    clock.advance_until(lambda: job.done)  # or: step time on until something has happened
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Callable

from tests.support.waiting import HANG_GUARD_S, wait_until


class FakeClock:
    """now() starts at `start` and moves by advance() only; wall() is `wall_start` plus the same
    moves. wait(cond, ready, timeout) returns once ready() (woken by whoever notifies `cond`) or
    once the clock has been advanced `timeout` s past the wait's start (advance() notifies every
    condition being waited on). `waits`: wait() calls begun so far (a loop that went round)."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1.7e9):
        self._lock = threading.Lock()
        self._now = start
        self._wall_offset = wall_start - start
        self._waiting: Counter = Counter()  # condition -> waits on it now
        self.waits = 0

    def now(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> float:
        return self._wall_offset + self.now()

    def wait(self, cond: threading.Condition, ready: Callable[[], bool], timeout: float) -> bool:
        # called with `cond` held: registered before ready() is asked, and advance() must take
        # `cond` to notify it, so no advance is missed between the check and cond.wait()
        with self._lock:
            deadline = self._now + timeout
            self._waiting[cond] += 1
            self.waits += 1
        try:
            while not ready():
                if self.now() >= deadline:
                    return bool(ready())
                cond.wait()
            return True
        finally:
            with self._lock:
                self._waiting[cond] -= 1
                if not self._waiting[cond]:
                    del self._waiting[cond]

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds` and wake every wait() so it looks at the new time."""
        with self._lock:
            self._now += seconds
            waited_on = list(self._waiting)
        for cond in waited_on:  # not under self._lock: a waiter holds cond, then takes it
            with cond:
                cond.notify_all()

    def advance_until(self, condition: Callable[[], object], step: float = 1.0,
                      what: str = "the condition", most: float = 1e6) -> float:
        """advance(step) again and again, each time after the clock's waiters went round (a
        wait() began since the last step), until `condition()` -> the clock seconds moved.
        AssertionError after `most` clock seconds, or HANG_GUARD_S real ones (a hang)."""
        moved = 0.0
        while not condition():
            assert moved < most, f"{what}: still not so after {moved:g} s of the fake clock"
            before = self.waits
            self.advance(step)
            moved += step
            wait_until(lambda: condition() or self.waits > before, what, HANG_GUARD_S)
        return moved
