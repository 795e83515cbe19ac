"""Deadlines for a whole region read: BHARATEO_READ_TIMEOUT_S, and running a read in a worker
thread that is given up when its time is over while the caller's thread reports progress."""
from __future__ import annotations

import threading
import time

from bharateo.errors import SourceUnreachableError

# ...and a whole region read is bounded too: GDAL's limits are per request and its retries add up
# (a server that accepts and never answers took 53-150 s), so the read runs in a worker thread and
# is given up after BHARATEO_READ_TIMEOUT_S seconds in all (connect, requests, retries; default
# 30 s, bharateo/config/environment.py).


def read_timeout_s() -> float:
    """Seconds a whole region read may take: BHARATEO_READ_TIMEOUT_S (default 30 s).
    Raises ConfigError for a value that is not a number of seconds from 1 to 3,600."""
    from bharateo.config import environment

    return environment.READ_TIMEOUT_S.get()


def with_deadline(fn, timeout_s: float, what: str, on_wait=None):
    """fn() in a worker thread, given up after `timeout_s` s in all -> its result or exception.

    The caller's thread waits in 0.25 s steps, calling on_wait(elapsed_s) each step (progress; a
    page stays drawn). On timeout raises SourceUnreachableError naming `what`; the thread is a
    daemon and ends when GDAL's own per-request limits (capped to the deadline) end its request."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="roi-read")
    start = time.monotonic()
    thread.start()
    while thread.is_alive():
        elapsed = time.monotonic() - start
        if elapsed >= timeout_s:
            raise SourceUnreachableError(
                f"{what} got no complete answer within {timeout_s:.0f} s (the server accepts the "
                "connection but stalls, or the network is too slow), so the read was given up. "
                "Try again later, or work offline: run `python -m bharateo prefetch` while online, "
                "or set BHARATEO_WORLDCOVER_DIR to a folder holding the tiles. "
                "BHARATEO_READ_TIMEOUT_S sets this limit.")
        if on_wait is not None:
            on_wait(elapsed)
        thread.join(min(0.25, timeout_s - elapsed))
    if "error" in result:
        raise result["error"]
    return result["value"]
