"""Waiting on an event in a test: the one wait_until of the suite (unit, app and browser tests).

A test waits for a state (a job's status, a page's text, a file that appears), never for an
amount of time. HANG_GUARD_S is no deadline the behaviour must meet: it only turns a hang into a
failure that says what never happened (there is no pytest-timeout here).
"""
from __future__ import annotations

import time
from typing import Callable

HANG_GUARD_S = 600.0  # far beyond anything a busy 2-core machine needs: only a hung test fails
POLL_S = 0.01  # how often the condition is asked; a wait ends at most this long after the event


def wait_until(condition: Callable[[], object], what: str = "the condition",
               timeout: float = HANG_GUARD_S, poll: float = POLL_S) -> bool:
    """Block until `condition()` is true -> True. AssertionError naming `what` (and the
    condition's last value) when it still is not after `timeout` s (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not so after {timeout:g} s (last value {value!r})")
        time.sleep(poll)
    return True


def join(thread_like, what: str = "the thread", timeout: float = HANG_GUARD_S) -> None:
    """`thread_like.join()` (a thread or a TrainingJob), failing naming `what` if it is hung."""
    thread_like.join(timeout)
    assert not thread_like.is_alive(), f"{what}: still running after {timeout:g} s (hung)"
