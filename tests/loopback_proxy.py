"""A loopback HTTP proxy in front of a real server (moto), for tests that must see or bend the
wire: record each request, answer one with an injected error, run a hook in between.

The plumbing lives here once; a test's proxy subclasses :class:`LoopbackProxy` and writes only
``handle`` (what to record, when to inject), calling :meth:`forward` and :meth:`reply`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class LoopbackProxy:
    """Listens on a free loopback port (``url``) and passes requests to ``upstream``."""

    def __init__(self, upstream: str) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                proxy.handle(self, self.rfile.read(length) if length else b"")

            do_POST = do_DELETE = do_PUT = do_GET

        self.upstream = upstream
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._client = httpx.Client(base_url=upstream, timeout=10)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        """Forward as is; subclasses record or inject first."""
        self.reply(request, *self.forward(request, body))

    def forward(
        self, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, bytes, Mapping[str, str]]:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        answer = self._client.request(request.command, request.path, content=body, headers=headers)
        return answer.status_code, answer.content, answer.headers

    @staticmethod
    def reply(
        request: BaseHTTPRequestHandler,
        status: int,
        content: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        for name, value in (headers or {"content-type": "text/xml"}).items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        request.wfile.write(content)
