"""The job service's clock: every decision the service takes on time (a worker stalled, a Stop
not answered, the server's time budget spent, a browser session gone for its grace time, how
often a queued job looks again) reads `now()` of one Clock, and every wait goes through its
`wait()`, so tests drive time with a clock of their own (tests/support/clock.py FakeClock) and
never wait on the wall clock.

A training's worker process keeps the machine's own clock (bharateo/jobs/worker.py): only the
app's side of a job reads the injected one.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Protocol


class Clock(Protocol):
    """Time for the job service. `now()`: monotonic seconds (only differences mean anything);
    `wall()`: seconds since the Unix epoch, for records people read (when a job was created or
    started, when a control was given); `wait(cond, ready, timeout)`: with `cond` (a
    threading.Condition) held, block until `ready()` is true or `timeout` seconds of this
    clock have passed -> ready(). Whoever makes `ready()` true calls cond.notify_all()."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def wait(self, cond: threading.Condition, ready: Callable[[], bool],
             timeout: float) -> bool: ...


class SystemClock:
    """The machine's clocks: time.monotonic, time.time, and Condition.wait_for."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def wait(self, cond: threading.Condition, ready: Callable[[], bool], timeout: float) -> bool:
        return cond.wait_for(ready, timeout)


SYSTEM_CLOCK = SystemClock()
