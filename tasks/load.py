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

    ``rps=None`` sends back to back, ``concurrency`` requests in flight at a time (``rps`` is
    the total rate, shared by the workers). Every non-200 answer and every transport error is a
    failure, kept as a short string (the first :data:`MAX_FAILURES_KEPT`; ``failed`` counts them
    all).
    """

    url: str
    path: str = "/"
    rps: float | None = None
    timeout_seconds: float = 5.0
    max_seconds: float = 3600.0
    concurrency: int = 1
    total: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        gap = self.concurrency / self.rps if self.rps else 0.0
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
                with self._lock:
                    self.total += 1
                if gap:
                    next_at = max(next_at + gap, time.monotonic() - 1.0)  # no catch-up bursts
                    self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failed += 1
            if len(self.failures) < MAX_FAILURES_KEPT:
                self.failures.append(what)

    def __enter__(self) -> RequestLoad:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        for n in range(self.concurrency):
            worker = threading.Thread(target=self._loop, name=f"request-load-{n}", daemon=True)
            self._threads.append(worker)
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._threads:
            worker.join(self.timeout_seconds + 5)
