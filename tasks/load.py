"""Request load for analyses: GETs to one URL from a background thread, counted.

Not a task: it runs *beside* an analysis for its duration (a context manager), so the colour
under test serves traffic and its metrics have data. Why the preview needs it: before the switch
nobody but us sends the idle colour requests, so a success-rate or latency query would find no
data, and no data is inconclusive, never success (``decisions.analysis``).

Deliberately without the resilience layer: a retried request would hide exactly the errors the
analysis is looking for. Each request has an explicit timeout; the load is bounded by
``max_seconds`` even if the caller never leaves the ``with`` block. Requests carry
``User-Agent: runbooks-synthetic-load`` so a service's own logs can tell them apart.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

USER_AGENT = "runbooks-synthetic-load/1"
MAX_FAILURES_KEPT = 1000


@dataclass
class RequestLoad:
    """``with RequestLoad(url, path="/", rps=10) as load: ...``; then ``load.total``, ``.failures``.

    ``rps=None`` sends back to back (one request in flight at a time). Every non-200 answer and
    every transport error is a failure, kept as a short string (the first
    :data:`MAX_FAILURES_KEPT`; ``failed`` counts them all).
    """

    url: str
    path: str = "/"
    rps: float | None = None
    timeout_seconds: float = 5.0
    max_seconds: float = 3600.0
    total: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        gap = 1.0 / self.rps if self.rps else 0.0
        next_at = time.monotonic()
        headers = {"User-Agent": USER_AGENT}
        with httpx.Client(timeout=self.timeout_seconds, headers=headers) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.get(f"{self.url}{self.path}")
                    if response.status_code != 200:
                        self._fail(f"HTTP {response.status_code}")
                except httpx.HTTPError as exc:
                    self._fail(repr(exc))
                self.total += 1
                if gap:
                    next_at = max(next_at + gap, time.monotonic() - 1.0)  # no catch-up bursts
                    self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _fail(self, what: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(what)

    def __enter__(self) -> RequestLoad:
        self._thread = threading.Thread(target=self._loop, name="request-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_seconds + 5)
