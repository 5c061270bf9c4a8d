"""Polling with a deadline, for tests that wait on a server doing something asynchronously."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, probe: Callable[[], Any], seconds: float) -> Any:
    """``probe()``'s first truthy value, polled every 0.25 s until ``seconds`` have passed
    (then an ``AssertionError`` naming ``what``)."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.25)
