"""A steady client for drills: GETs through a Service, back to back, counting what failed.

Used by the blue-green tests and ``benchmarks/rollout.py`` to prove "zero failed requests":
every non-200 answer and every transport error is kept (bounded by the run, which the caller
ends), so a failure is reported with what it was, not just counted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import httpx


@dataclass
class Load:
    """``with Load(url, path="/pay") as load: ...``; then ``load.total``, ``load.failures``."""

    url: str
    path: str = "/pay"
    timeout_seconds: float = 5.0
    total: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        with httpx.Client(timeout=self.timeout_seconds) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(f"{self.url}{self.path}")
                    if response.status_code != 200:
                        self.failures.append(f"HTTP {response.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.total += 1

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._loop, name="load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
