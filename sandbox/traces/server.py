"""The trace backend's HTTP side: OTLP/HTTP ingest and a Jaeger ``/api/v3``-shaped query API.

Two listeners on loopback share one :class:`~sandbox.traces.store.TraceStore`, as a real Jaeger
has its OTLP receiver (4318) apart from its query service (16686): a runbook that points
services at the query URL, or queries the receiver, fails here as it would in production.

- receiver (``otlp`` endpoint): ``POST /v1/traces``, protobuf or JSON, gzip or not; answers an
  ``ExportTraceServiceResponse`` in the request's encoding (``partialSuccess`` naming why spans
  with malformed ids were rejected); 400 with a ``google.rpc.Status`` for a malformed body, 413
  for a body over 16 MiB, 415 for another media type;
- query (``traces`` endpoint), the paths, parameters and envelopes of Jaeger's api_v3 HTTP
  gateway: ``GET /api/v3/services`` -> ``{"services": [...]}``; ``GET /api/v3/operations
  ?service=&span_kind=`` -> ``{"operations": [{"name", "spanKind"}]}``; ``GET /api/v3/traces
  ?query.service_name=&query.operation_name=&query.start_time_min=&query.start_time_max=
  &query.num_traces=`` (or ``query.search_depth``) ``&query.duration_min=&query.duration_max=``
  and ``GET /api/v3/traces/{trace_id}`` -> ``{"result": {"resourceSpans": [...]}}`` (OTLP/JSON);
  nothing found -> 404 ``{"error": {"httpCode": 404, "message": ...}}``, as Jaeger answers both;
  a malformed parameter -> 400 in the same shape (Jaeger answers 500 for a missing service
  name; 400 here says what to fix);
- both: ``GET /-/ready`` -> 200, for the stack's readiness wait.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.traces import otlp
from sandbox.traces.store import DEFAULT_MAX_SPANS, TraceStore, traces_data

log = logging.getLogger(__name__)

DEFAULT_NUM_TRACES = 20
_TRACE_PATH = re.compile(r"^/api/v3/traces/([^/]+)$")
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}


class _QueryError(Exception):
    def __init__(self, status: int, message: str, *, jaeger: bool = True):
        super().__init__(message)
        self.status = status
        self.jaeger = jaeger  # False: answered as a router's plain 404, as Jaeger's mux does


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    block_on_close = False

    def __init__(self, owner: TraceServer, role: str):
        self.owner = owner
        self.role = role
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class TraceServer:
    """``with TraceServer() as traces: traces.otlp_url, traces.query_url, traces.store``."""

    def __init__(self, max_spans: int = DEFAULT_MAX_SPANS):
        self.store = TraceStore(max_spans)
        self._listeners = [_Listener(self, "otlp"), _Listener(self, "query")]
        self._threads: list[threading.Thread] = []
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._stopped = False

    @property
    def otlp_url(self) -> str:
        return self._listeners[0].url

    @property
    def query_url(self) -> str:
        return self._listeners[1].url

    def start(self) -> TraceServer:
        for listener in self._listeners:
            thread = threading.Thread(
                target=listener.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"traces-{listener.role}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Close both ports and every open connection, join the threads; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for listener in self._listeners:
            if self._threads:
                listener.shutdown()
            listener.server_close()
        with self._connections_lock:
            connections = dict(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        for thread in [*connections.values(), *self._threads]:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> TraceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections[connection] = threading.current_thread()
            else:
                self._connections.pop(connection, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Listener
    server_version = "sandbox-traces"

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.server.role, *args)

    # -- routing ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/-/ready":
            self._reply(200, b"ready\n", "text/plain; charset=utf-8")
            return
        if self.server.role != "query":  # plain 404: the receiver is not a Jaeger
            self._reply(404, b"no such path; this is the OTLP receiver\n", "text/plain")
            return
        try:
            document = self._query(url.path, parse_qs(url.query))
        except _QueryError as exc:
            if exc.jaeger:
                self._jaeger_error(exc.status, str(exc))
            else:
                self._reply(exc.status, f"{exc}\n".encode(), "text/plain; charset=utf-8")
            return
        except Exception as exc:  # a bug here: answer 500 as Jaeger would, and log it
            log.exception("trace query %s failed", url.path)
            self._jaeger_error(500, f"internal error: {type(exc).__name__}")
            return
        self._reply(200, json.dumps(document).encode(), "application/json")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if self.server.role != "otlp" or path != "/v1/traces":
            self._drain_or_close()
            self._reply(404, b"no such path; OTLP traces go to POST /v1/traces\n", "text/plain")
            return
        as_json = otlp.media_type(self.headers.get("Content-Type")) == otlp.JSON
        try:
            body = self._read_body()
            body = otlp.inflate(body, self.headers.get("Content-Encoding"))
            request = otlp.decode_request(body, self.headers.get("Content-Type"))
        except otlp.TooLargeError as exc:
            self._refuse(413, as_json, str(exc))
            return
        except otlp.UnsupportedMediaTypeError as exc:
            self._refuse(415, as_json, str(exc))
            return
        except otlp.BadRequestError as exc:
            self._refuse(400, as_json, str(exc))
            return
        done = self.server.owner.store.add(request)
        kind = otlp.JSON if as_json else otlp.PROTOBUF
        self._reply(200, otlp.encode_response(as_json, done.rejected, done.message), kind)

    # -- query API ----------------------------------------------------------------------------

    def _query(self, path: str, params: dict[str, list[str]]) -> dict[str, Any]:
        store = self.server.owner.store
        if path == "/api/v3/services":
            return {"services": store.services()}
        if path == "/api/v3/operations":
            service = _param(params, "service")
            kind = _param(params, "span_kind")
            operations = store.operations(service, kind)
            return {"operations": [{"name": name, "spanKind": k} for name, k in operations]}
        if path == "/api/v3/traces":
            return _found(store.find(**_find_arguments(params)), "No traces found")
        match = _TRACE_PATH.match(path)
        if match:
            trace_id = _trace_id(match.group(1))
            for name in ("start_time", "end_time"):  # accepted, as Jaeger's search hints
                if _param(params, name):
                    _nanos(_param(params, name), name)
            spans = store.get(trace_id)
            return _found([spans] if spans else [], f"trace {trace_id.hex()} not found")
        raise _QueryError(404, "404 page not found", jaeger=False)

    # -- I/O helpers --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            raise otlp.BadRequestError("Content-Length is not a number") from None
        if length > otlp.MAX_BODY_BYTES:
            self.close_connection = True  # the body stays unread
            raise otlp.TooLargeError(f"the body is {length} bytes, over {otlp.MAX_BODY_BYTES}")
        return self.rfile.read(max(length, 0))

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                self.close_connection = True
                raise otlp.BadRequestError("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > otlp.MAX_BODY_BYTES:
                self.close_connection = True
                raise otlp.TooLargeError(f"the body is over {otlp.MAX_BODY_BYTES} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)

    def _drain_or_close(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if 0 <= length <= otlp.MAX_BODY_BYTES and "Transfer-Encoding" not in self.headers:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _refuse(self, status: int, as_json: bool, message: str) -> None:
        kind = otlp.JSON if as_json else otlp.PROTOBUF
        self._reply(status, otlp.encode_status(as_json, message), kind)

    def _jaeger_error(self, status: int, message: str) -> None:
        body = {"error": {"httpCode": status, "message": message}}
        self._reply(status, json.dumps(body).encode(), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _found(traces: list[list], nothing: str) -> dict[str, Any]:
    if not traces:
        raise _QueryError(404, nothing)
    return {"result": otlp.traces_json(traces_data([s for trace in traces for s in trace]))}


def _find_arguments(params: dict[str, list[str]]) -> dict[str, Any]:
    service = _param(params, "query.service_name")
    start_min = _param(params, "query.start_time_min")
    start_max = _param(params, "query.start_time_max")
    if not start_min or not start_max:
        raise _QueryError(400, "query.start_time_min and query.start_time_max are required")
    if not service:
        raise _QueryError(400, "query.service_name is required")
    arguments: dict[str, Any] = {
        "service": service,
        "operation": _param(params, "query.operation_name"),
        "start_min_ns": _nanos(start_min, "query.start_time_min"),
        "start_max_ns": _nanos(start_max, "query.start_time_max"),
        "limit": DEFAULT_NUM_TRACES,
    }
    if arguments["start_min_ns"] > arguments["start_max_ns"]:
        raise _QueryError(400, "query.start_time_min must not be after query.start_time_max")
    for name in ("query.search_depth", "query.num_traces"):
        if _param(params, name):
            arguments["limit"] = _count(_param(params, name), name)
    for name, key in (
        ("query.duration_min", "duration_min_ns"),
        ("query.duration_max", "duration_max_ns"),
    ):
        if _param(params, name):
            arguments[key] = _duration(_param(params, name), name)
    return arguments


def _param(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name)
    return values[-1].strip() if values else ""


def _malformed(name: str, value: str, why: str) -> _QueryError:
    return _QueryError(400, f"malformed parameter {name}: {value[:60]!r} {why}")


def _nanos(value: str, name: str) -> int:
    """Unix nanoseconds of an RFC 3339 time (nanosecond precision, like Go's RFC3339Nano)."""
    match = _RFC3339.match(value)
    if match is None:
        raise _malformed(name, value, "is not an RFC 3339 time, e.g. 2026-01-02T03:04:05.5Z")
    day, clock, fraction, zone = match.groups()
    try:
        whole = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if zone in 'Zz' else zone}")
    except ValueError as exc:
        raise _malformed(name, value, f"is not a valid time ({exc})") from None
    return int(whole.timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def _count(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _malformed(name, value, "is not an integer") from None
    if number < 0:
        raise _malformed(name, value, "must not be negative")
    return number or DEFAULT_NUM_TRACES


def _duration(value: str, name: str) -> int:
    """Nanoseconds of a Go duration (``1.5s``, ``300ms``, ``1m30s``)."""
    if not value or _GO_DURATION.sub("", value) != "":
        raise _malformed(name, value, "is not a duration, e.g. 250ms or 1.5s")
    return int(sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_DURATION.findall(value)))


def _trace_id(value: str) -> bytes:
    text = value.strip().lower()
    if not 0 < len(text) <= 32 or any(c not in "0123456789abcdef" for c in text):
        raise _malformed("trace_id", value, "is not a 64- or 128-bit hex trace id")
    return bytes.fromhex(text.rjust(32, "0"))
