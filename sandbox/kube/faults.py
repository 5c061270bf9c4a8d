"""Fault injection for the API emulator: make matching requests fail or hang, N times.

Runbooks must survive an API server in trouble (a 500 on the PATCH that changes an image, a
409 from a concurrent writer, a request that never answers), so tests script exactly that::

    server.faults.inject(method="PATCH", path=r"/deployments/web$", status=500, times=2)
    server.faults.inject(path=r"/pods", action="hang", seconds=5)
    server.faults.inject(method="PUT", status=409)

Faults are matched in the order they were added; the first one that matches the method and
whose ``path`` regex is found in the request path (without the query string) is consumed once
(``times=None``: until cleared). An ``error`` fault answers ``status`` (default 500) with a
Kubernetes ``Status`` body *before* the request reaches the store, so the object is unchanged.
A ``hang`` fault holds the request until the client gives up, the server stops, or ``seconds``
pass (bounded by :data:`MAX_HANG_SECONDS`); then it answers ``status`` if one was given, or
serves the request normally (a slow API server).

The same controls are served over HTTP under ``/_sandbox/faults`` (POST a JSON fault to add,
GET to list, DELETE to clear, DELETE ``/_sandbox/faults/<id>`` to remove one), for drills run
from another process. Thread-safe.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["error", "hang"]
MAX_HANG_SECONDS = 300.0
_ACTIONS = ("error", "hang")


@dataclass
class Fault:
    id: int
    method: str
    path: str
    action: Action
    status: int | None
    times: int | None
    seconds: float
    message: str | None
    retry_after: int | None
    hits: int = 0
    _pattern: re.Pattern[str] = field(repr=False, default=re.compile(""))

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method.upper()) and bool(self._pattern.search(path))

    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "action": self.action,
            "status": self.status,
            "times": self.times,
            "seconds": self.seconds,
            "message": self.message,
            "retryAfter": self.retry_after,
            "hits": self.hits,
        }


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def inject(
        self,
        *,
        method: str = "*",
        path: str = "",
        status: int | None = None,
        times: int | None = 1,
        action: Action = "error",
        seconds: float = 30.0,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Add a fault; returns it (``hits`` counts the requests it caught)."""
        if action not in _ACTIONS:
            raise ValueError(f"action must be one of {_ACTIONS}, got {action!r}")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None (forever), got {times}")
        if not 0 <= seconds <= MAX_HANG_SECONDS:
            raise ValueError(f"seconds must be between 0 and {MAX_HANG_SECONDS}, got {seconds}")
        try:
            pattern = re.compile(path)
        except re.error as exc:
            raise ValueError(f"path is not a valid regular expression: {exc}") from None
        fault = Fault(
            id=next(self._ids),
            method=method.upper(),
            path=path,
            action=action,
            status=status if status is not None else (500 if action == "error" else None),
            times=times,
            seconds=float(seconds),
            message=message,
            retry_after=retry_after,
            _pattern=pattern,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def inject_json(self, spec: Any) -> Fault:
        """:meth:`inject` from a JSON object (the admin endpoint); ValueError when malformed."""
        if not isinstance(spec, dict):
            raise ValueError("a fault must be a JSON object")
        names = {"method", "path", "status", "times", "action", "seconds", "message"}
        unknown = set(spec) - names - {"retryAfter", "retry_after"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        kwargs = {k: v for k, v in spec.items() if k in names}
        retry_after = spec.get("retryAfter", spec.get("retry_after"))
        try:
            return self.inject(**kwargs, retry_after=retry_after)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def take(self, method: str, path: str) -> Fault | None:
        """The first live fault matching this request, consumed once; None when none does."""
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted() and fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> int:
        with self._lock:
            count = len(self._faults)
            self._faults = []
            return count

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)
