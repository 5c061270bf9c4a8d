"""One proxied request: route, pooled connection to the pod, stream both ways, retry safely.

Kept apart from :mod:`sandbox.cluster.proxy` (which owns the route table and the listeners)
because this is the part with HTTP subtleties:

- hop-by-hop headers (``Connection`` and the ones it names, ``Keep-Alive``, ``TE``,
  ``Transfer-Encoding``, ``Upgrade``, ``Expect``...) are not forwarded; ``X-Forwarded-For``,
  ``-Proto`` and ``-Host`` are added;
- request bodies up to ``proxy_replay_limit_bytes`` are buffered so they can be replayed;
  larger and chunked ones stream straight through (and are never retried); responses stream
  back as they come (``read1``), re-chunked when the pod gave no length;
- a retry happens only when nothing was exchanged: connection refused (the pod is going away),
  or a pooled keep-alive connection the pod had already closed (tried once more, fresh). Any
  failure after the request reached the pod is answered 502 (504 on a timeout), never retried:
  the pod may have acted on it.
"""

from __future__ import annotations

import http.client
import io
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from sandbox.cluster.objects import LOOPBACK

if TYPE_CHECKING:
    from sandbox.cluster.proxy import ServiceProxy

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    pod: str
    port: int


@dataclass
class Route:
    """One Service port: its ready endpoints (immutable tuple) and a round-robin counter."""

    service: str  # namespace/name
    port: int | str
    selector: str
    endpoints: tuple[Endpoint, ...]
    counter: Iterator[int] = field(default_factory=itertools.count)

    def pick(self, avoid: set[Endpoint]) -> Endpoint | None:
        choices = [e for e in self.endpoints if e not in avoid] or []
        if not choices:
            return None
        return choices[next(self.counter) % len(choices)]


class Pool:
    """Idle keep-alive connections per endpoint (LIFO)."""

    def __init__(self, timeout: float, max_idle: int = 32):
        self._timeout = timeout
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: dict[int, list[http.client.HTTPConnection]] = {}

    def get(self, port: int) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(port)
            if idle:
                return idle.pop(), True
        return self.fresh(port), False

    def fresh(self, port: int) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(LOOPBACK, port, timeout=self._timeout)

    def put(self, port: int, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(port, [])
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    def retain(self, ports: set[int]) -> None:
        with self._lock:
            gone = [p for p in self._idle if p not in ports]
            closing = [c for p in gone for c in self._idle.pop(p)]
        for connection in closing:
            connection.close()


# -- one request --------------------------------------------------------------------------------


class _Unreachable(Exception):
    """Nothing was sent or received: the request may go to another endpoint."""


class _BadGateway(Exception):
    """The pod's answer could not be read: the request may have been processed, no retry."""


def handler_for(proxy: ServiceProxy, node_port: int) -> type[BaseHTTPRequestHandler]:
    settings = proxy.settings

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        timeout = settings.proxy_idle_timeout_seconds
        server_version = "sandbox-proxy"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            proxy.requests += 1
            route = proxy.route(node_port)
            if route is None or not route.endpoints:
                what = route.service if route else f"nodePort {node_port}"
                selector = route.selector if route else "<none>"
                self._drain_body()
                self._reply(
                    503,
                    f"no ready endpoints for service {what} (selector {selector}): "
                    "no pod matching the selector is Ready\n",
                )
                return
            body, replayable = self._request_body()
            headers = self._forward_headers()
            tried: set[Endpoint] = set()
            last_error = "no endpoint"
            while True:
                endpoint = route.pick(tried) if replayable or not tried else None
                if endpoint is None:
                    proxy.errors += 1
                    self._reply(
                        502, f"bad gateway: no pod of {route.service} answered ({last_error})\n"
                    )
                    return
                tried.add(endpoint)
                try:
                    self._exchange(endpoint, body, headers)
                    return
                except _Unreachable as exc:
                    last_error = f"{endpoint.pod}: {exc}"
                    if isinstance(body, io.BytesIO):
                        body.seek(0)
                except TimeoutError:
                    proxy.errors += 1
                    self._reply(
                        504, f"gateway timeout: pod {endpoint.pod} did not answer in time\n"
                    )
                    return
                except _BadGateway as exc:
                    proxy.errors += 1
                    self._reply(502, f"bad gateway: pod {endpoint.pod} answered badly ({exc})\n")
                    return

        def _exchange(self, endpoint: Endpoint, body: Any, headers: list[tuple[str, str]]) -> None:
            """Send to one endpoint; raise _Unreachable only if nothing was exchanged yet."""
            for attempt in (1, 2):
                if attempt == 1:
                    connection, reused = proxy.pool.get(endpoint.port)
                else:
                    connection, reused = proxy.pool.fresh(endpoint.port), False
                try:
                    connection.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in headers:
                        connection.putheader(name, value)
                    connection.endheaders()
                    if body is not None:
                        _send_body(connection, body)
                    response = connection.getresponse()
                except ConnectionRefusedError as exc:
                    connection.close()
                    raise _Unreachable("connection refused") from exc
                except (
                    http.client.RemoteDisconnected,
                    ConnectionResetError,
                    BrokenPipeError,
                ) as exc:
                    connection.close()
                    if reused and (body is None or isinstance(body, io.BytesIO)):
                        if isinstance(body, io.BytesIO):
                            body.seek(0)
                        continue  # the pod had closed our idle connection: once more, fresh
                    raise _Unreachable(type(exc).__name__) from exc
                except TimeoutError:
                    connection.close()
                    raise
                except OSError as exc:
                    connection.close()
                    raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc
                except http.client.HTTPException as exc:
                    connection.close()
                    raise _BadGateway(f"{type(exc).__name__}: {exc}") from exc
                self._relay(response, connection, endpoint)
                return
            raise _Unreachable("the pod closed the connection twice")

        def _relay(
            self,
            response: http.client.HTTPResponse,
            connection: http.client.HTTPConnection,
            endpoint: Endpoint,
        ) -> None:
            self.send_response_only(response.status, response.reason)
            length = response.getheader("Content-Length")
            no_body = (
                self.command == "HEAD"
                or response.status in (204, 304)
                or (100 <= response.status < 200)
            )
            chunked = not no_body and length is None
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            if chunked:
                if self.request_version == "HTTP/1.1":
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.close_connection = True
            self.end_headers()
            try:
                if no_body:
                    response.read()
                while not no_body:
                    data = response.read1(65536)
                    if not data:
                        break
                    if chunked and self.request_version == "HTTP/1.1":
                        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
                    else:
                        self.wfile.write(data)
                if chunked and self.request_version == "HTTP/1.1":
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                connection.close()
                self.close_connection = True
                return
            if response.will_close or not response.isclosed():
                connection.close()
            else:
                proxy.pool.put(endpoint.port, connection)

        def _request_body(self) -> tuple[Any, bool]:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return _ChunkedReader(self.rfile), False
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0:
                return None, True
            if length <= settings.proxy_replay_limit_bytes:
                return io.BytesIO(self.rfile.read(length)), True
            return _LimitedReader(self.rfile, length), False

        def _drain_body(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 0:
                self.rfile.read(length)
            elif "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                for _ in _ChunkedReader(self.rfile).chunks():
                    pass

        def _forward_headers(self) -> list[tuple[str, str]]:
            listed = {
                token.strip().lower()
                for token in (self.headers.get("Connection") or "").split(",")
                if token.strip()
            }
            out = [
                (name, value)
                for name, value in self.headers.items()
                if name.lower() not in _HOP_BY_HOP
                and name.lower() not in listed
                and name.lower() not in ("x-forwarded-for",)
            ]
            client = self.client_address[0]
            previous = self.headers.get("X-Forwarded-For")
            out.append(("X-Forwarded-For", f"{previous}, {client}" if previous else client))
            if "X-Forwarded-Proto" not in self.headers:
                out.append(("X-Forwarded-Proto", "http"))
            if "X-Forwarded-Host" not in self.headers and self.headers.get("Host"):
                out.append(("X-Forwarded-Host", self.headers["Host"]))
            if "Host" not in self.headers:
                out.append(("Host", f"{LOOPBACK}:{node_port}"))
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                out.append(("Transfer-Encoding", "chunked"))
            return out

        def _reply(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

    return Handler


def _send_body(connection: http.client.HTTPConnection, body: Any) -> None:
    if isinstance(body, _ChunkedReader):
        for chunk in body.chunks():
            connection.send(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
        return
    while True:
        data = body.read(65536)
        if not data:
            return
        connection.send(data)


class _LimitedReader:
    def __init__(self, stream: Any, length: int):
        self._stream, self._left = stream, length

    def read(self, size: int) -> bytes:
        if self._left <= 0:
            return b""
        data = self._stream.read(min(size, self._left))
        self._left -= len(data)
        return data


class _ChunkedReader:
    """Decodes a chunked request body from the client, chunk by chunk (no buffering)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def chunks(self) -> Iterator[bytes]:
        while True:
            line = self._stream.readline(65537)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self._stream.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            data = self._stream.read(size)
            self._stream.readline(3)
            yield data
