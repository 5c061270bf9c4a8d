"""A loopback HTTP backend that can be told to fail: the smallest "dependency in trouble".

It answers every request with 200 while healthy; while failing it answers a chosen status
(with an optional ``Retry-After``), drops the connection, or stalls. It counts what it
received, by phase, and keeps the correlation headers of the last requests, so a test or a
benchmark can measure exactly what a client fleet did to it. Used by the resilience tests, the
retry-storm benchmark and ``runbooks demo``.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["healthy", "status", "drop", "stall"]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when a fleet reconnects: 1 s stalls

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up (timeouts, dropped connections) are part of the game here."""


class OutageServer:
    """``with OutageServer() as backend: httpx.get(backend.url)``; thread-safe controls."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keep: int = 200,
        healthy_body: bytes = b'{"ok": true}',
    ):
        self.healthy_body = healthy_body
        self._lock = threading.Lock()
        self._mode: Mode = "healthy"
        self._status = 503
        self._retry_after: str | None = None
        self._stall_seconds = 0.0
        self._script: collections.deque[int] = collections.deque()
        self.requests = 0
        self.failed = 0
        self.seen: collections.deque[Seen] = collections.deque(maxlen=keep)
        self._stopping = threading.Event()
        self._server = _QuietServer((host, port), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OutageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OutageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- controls -------------------------------------------------------------------------

    def fail(self, status: int = 503, *, retry_after: str | None = None) -> None:
        """Answer every request with ``status`` until :meth:`heal`."""
        with self._lock:
            self._mode, self._status, self._retry_after = "status", status, retry_after

    def drop(self) -> None:
        """Close every connection without an answer until :meth:`heal`."""
        with self._lock:
            self._mode = "drop"

    def stall(self, seconds: float) -> None:
        """Wait ``seconds`` before answering 200 (a slow dependency) until :meth:`heal`."""
        with self._lock:
            self._mode, self._stall_seconds = "stall", seconds

    def heal(self) -> None:
        with self._lock:
            self._mode = "healthy"
            self._script.clear()

    def script(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order, then as the mode says."""
        with self._lock:
            self._script.extend(statuses)

    def counts(self) -> tuple[int, int]:
        """(requests received, requests answered with a failure) so far."""
        with self._lock:
            return self.requests, self.failed

    @contextlib.contextmanager
    def failing(self, status: int = 503) -> Iterator[None]:
        self.fail(status)
        try:
            yield
        finally:
            self.heal()

    # -- serving --------------------------------------------------------------------------

    def _decide(self) -> tuple[Mode, int, str | None, float]:
        with self._lock:
            self.requests += 1
            if self._script:
                status = self._script.popleft()
                self.failed += status >= 400
                return "status", status, None, 0.0
            mode = self._mode
            self.failed += mode in ("status", "drop")
            return mode, self._status, self._retry_after, self._stall_seconds

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # or each answer waits ~40 ms for a delayed ACK

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append(
                    Seen(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                mode, status, retry_after, stall = outer._decide()
                if mode == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if mode == "stall":
                    outer._stopping.wait(stall)
                if mode != "status":
                    status = 200
                payload = outer.healthy_body if status < 400 else b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if retry_after is not None and status >= 400:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
