"""The HTTP server of a shop pod: stdlib threads, keep-alive, graceful termination.

Why the stdlib ``ThreadingHTTPServer`` and not an ASGI stack: a demo runs a dozen pods on two
cores, each must start in well under a second, and a thread per connection is plenty for
demo traffic. Three settings matter for latency under load:

- ``request_queue_size = 128``: the default backlog of 5 drops SYNs when a client pool
  reconnects at once, which costs a 1 s SYN retransmit;
- ``disable_nagle_algorithm``: without it every small answer waits ~40 ms for a delayed ACK;
- HTTP/1.1 with ``Content-Length`` on every answer, so connections are reused.

Termination (SIGTERM, as the pod runner and Kubernetes send it): stop accepting, answer
``/ready`` with 503 and ``Connection: close`` on whatever still arrives on open connections,
let in-flight requests finish for up to :data:`DRAIN_SECONDS`, flush traces, exit 0.
"""

from __future__ import annotations

import ipaddress
import signal
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from sandbox.shop.accesslog import combined_line
from sandbox.shop.app import Request, Shop
from sandbox.shop.config import log

DRAIN_SECONDS = 5.0
MAX_BODY_BYTES = 1 << 20
IDLE_CONNECTION_SECONDS = 120.0


class ShopServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, shop: Shop):
        self.shop = shop
        self._busy = 0
        self._idle = threading.Condition()
        super().__init__(("127.0.0.1", shop.settings.port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a reverse DNS lookup): not needed
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-answer are normal (timeouts, terminations)."""

    def begin(self) -> None:
        with self._idle:
            self._busy += 1

    def end(self) -> None:
        with self._idle:
            self._busy -= 1
            if self._busy == 0:
                self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "demo-shop"
    sys_version = ""
    timeout = IDLE_CONNECTION_SECONDS  # an idle keep-alive connection is closed after this
    server: ShopServer

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        started, when = time.perf_counter(), time.time()
        shop = self.server.shop
        self.server.begin()
        shop.metrics.in_flight.inc()
        path, _, query = self.path.partition("?")
        route = shop.route_of(path)
        answer_status, body = 500, b""  # what is logged if the client vanishes mid-request
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        try:
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True
                answer_status, body, headers, content_type = 413, b'{"error":"bad body"}', {}, ""
            else:
                request = Request(
                    method=self.command,
                    path=path,
                    query=query,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                    client=self.client_address[0],
                )
                answer = shop.answer(request, route)
                answer_status, body = answer.status, answer.body()
                headers, content_type = answer.headers, answer.content_type
            self._send(answer_status, body, headers, content_type or "application/json")
        finally:
            shop.metrics.in_flight.dec()
            shop.metrics.observe(route, answer_status, time.perf_counter() - started)
            shop.access_log.write(
                combined_line(
                    remote=self._remote(),
                    when=when,
                    request_line=self.requestline,
                    status=answer_status,
                    size=len(body) if self.command != "HEAD" else 0,
                    referer=self.headers.get("Referer"),
                    user_agent=self.headers.get("User-Agent"),
                )
            )
            self.server.end()  # last: termination closes the log once nothing is in flight

    def _send(self, status: int, body: bytes, headers: dict[str, str], content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        request_id = self.headers.get("X-Request-ID")
        if request_id:
            self.send_header("X-Request-ID", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.server.shop.draining.is_set():
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _remote(self) -> str:
        """The client's address; behind a loopback proxy, the first ``X-Forwarded-For`` hop
        (nginx's ``real_ip`` with loopback trusted), so load generators can stand for clients
        from anywhere."""
        peer = self.client_address[0]
        forwarded = self.headers.get("X-Forwarded-For")
        if forwarded:
            first = forwarded.split(",", 1)[0].strip()
            try:
                if ipaddress.ip_address(peer).is_loopback:
                    return str(ipaddress.ip_address(first))
            except ValueError:
                pass
        return peer

    def log_message(self, format: str, *args: object) -> None:
        """The access log is written by :meth:`_dispatch`; nothing on stderr per request."""


def run(shop: Shop) -> int:
    """Serve until SIGTERM or SIGINT, then terminate gracefully; the process's exit code."""
    try:
        server = ShopServer(shop)
    except OSError as exc:
        log(f"cannot listen on 127.0.0.1:{shop.settings.port}: {exc}")
        shop.close()
        return 1
    # A plain list, not a threading.Event: the handler runs on the main thread between
    # bytecodes, possibly while that thread holds the Event's lock inside Event.wait(), and
    # Event.set() would then deadlock; appending to a list takes no lock.
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="accept", daemon=True
    )
    thread.start()
    s = shop.settings
    log(
        f"serving role={s.role} image={s.image} version={shop.behaviour.tag} "
        f"pod={s.namespace}/{s.pod} on http://127.0.0.1:{s.port} "
        f"downstream={s.downstream_url or '-'} tracing={'otlp' if shop.tracing.enabled else 'off'}"
    )
    while not signals:
        time.sleep(0.05)
    log("terminating: no new connections, finishing requests in flight")
    shop.draining.set()
    server.shutdown()
    server.server_close()
    drained = server.drain(DRAIN_SECONDS)
    if not drained:
        log(f"requests still in flight after {DRAIN_SECONDS:g} s; exiting anyway")
    shop.close()
    log("terminated")
    return 0
