"""Self-traced runbooks: a flow run's spans reach an OTLP/HTTP receiver, ``traceparent`` its calls.

The receiver is this file's own (``http.server`` on loopback decoding ``ExportTraceServiceRequest``
with ``opentelemetry-proto``), so these tests depend on no trace store.

Isolation: OpenTelemetry's TracerProvider is process-global and can be set only once, so every
test here runs between two resets (the autouse ``_isolated_tracing``): ``shutdown_tracing``
flushes and stops our provider, then the API's globals and ``runbooks.telemetry``'s state go
back to "never configured", as OpenTelemetry's own test utilities (``reset_trace_globals``) do.
No other test of the suite ever sees a configured provider.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

from runbooks import telemetry
from runbooks.resilience import ResilientTransport
from runbooks.resilience.transport import NO_TRACE_CONTEXT_EXTENSION
from sandbox.outage import OutageServer

# flags: bit 0 sampled; the SDK also sets bit 1 ("random" trace id, W3C Trace Context level 2)
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _sampled(flags: str) -> bool:
    return bool(int(flags, 16) & 0x01)


# -- a tiny OTLP/HTTP receiver -------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    events: list[tuple[str, dict[str, Any]]]
    service: str


@dataclass
class Receiver:
    url: str
    spans: list[Received] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= count:
                    return list(self.spans)
            time.sleep(0.02)
        with self.lock:
            return list(self.spans)

    def one(self, **where: Any) -> Received:
        with self.lock:
            found = [s for s in self.spans if all(getattr(s, k) == v for k, v in where.items())]
        assert len(found) == 1, f"expected one span with {where}, got {found}"
        return found[0]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _decode(body: bytes) -> list[Received]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Received(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        status=span.status.code,
                        events=[
                            (e.name, {a.key: _value(a.value) for a in e.attributes})
                            for e in span.events
                        ],
                        service=str(resource.get("service.name")),
                    )
                )
    return spans


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            spans = _decode(body)
            with state.lock:
                state.spans.extend(spans)
                state.content_types.append(self.headers.get("content-type", ""))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# -- isolation of the process-global provider ----------------------------------------------------


# Every test here starts and ends with no global tracer provider (tests/tracing_globals.py).
pytestmark = pytest.mark.usefixtures("isolated_tracing")


@pytest.fixture
def tracing(receiver: Receiver) -> Any:
    provider = telemetry.configure_tracing(
        f"{receiver.url}/v1/traces", service_name="runbooks-test"
    )
    assert provider is not None
    return provider


@pytest.fixture
def backend() -> Iterator[OutageServer]:
    with OutageServer() as server:
        yield server


def _client(backend: OutageServer) -> httpx.Client:
    return httpx.Client(base_url=backend.url, transport=ResilientTransport("backend"), timeout=5.0)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- a flow run, traced ---------------------------------------------------------------------------


def _traced_flow() -> Any:
    from prefect import flow, task

    @task
    def call_backend(base_url: str) -> int:
        with httpx.Client(
            base_url=base_url, transport=ResilientTransport("backend"), timeout=5.0
        ) as client:
            return client.get("/orders", params={"id": "7", "token": "s3cret"}).status_code

    @flow(name="self-traced-probe")
    def self_traced_probe(base_url: str) -> int:
        return call_backend(base_url)

    return self_traced_probe


def test_a_flow_run_exports_its_run_spans_and_client_spans(
    prefect_server: str, tracing: Any, receiver: Receiver, backend: OutageServer
) -> None:
    state = _traced_flow()(backend.url, return_state=True)
    assert state.result() == 200
    assert telemetry.flush_tracing()
    receiver.wait_for(3)

    flow_span = next(s for s in receiver.spans if s.attributes.get("prefect.run.type") == "flow")
    task_span = next(s for s in receiver.spans if s.attributes.get("prefect.run.type") == "task")
    client_span = receiver.one(kind=ProtoSpan.SPAN_KIND_CLIENT)

    assert flow_span.attributes["prefect.run.id"] == str(state.state_details.flow_run_id)
    assert flow_span.parent_span_id == ""  # the root of the run's trace
    assert flow_span.service == "runbooks-test"
    assert task_span.trace_id == client_span.trace_id == flow_span.trace_id
    assert task_span.parent_span_id == flow_span.span_id
    assert client_span.parent_span_id == task_span.span_id
    assert client_span.name == "GET"
    assert client_span.attributes == {
        "http.request.method": "GET",
        "url.full": f"{backend.url}/orders?id=7&token=REDACTED",
        "server.address": "127.0.0.1",
        "server.port": int(backend.url.rsplit(":", 1)[1]),
        "http.response.status_code": 200,
    }
    assert client_span.status == ProtoStatus.STATUS_CODE_UNSET
    assert receiver.content_types == ["application/x-protobuf"] * len(receiver.content_types)

    # the service saw the flow's trace, its parent being our CLIENT span, sampled
    match = TRACEPARENT.match(backend.seen[-1].headers["traceparent"])
    assert match is not None
    assert match.groups()[:2] == (flow_span.trace_id, client_span.span_id)
    assert _sampled(match.group(3))


def test_without_tracing_nothing_is_exported_and_traceparent_stays_fresh(
    prefect_server: str, receiver: Receiver, backend: OutageServer
) -> None:
    assert telemetry.configure_tracing() is None  # no endpoint in the environment
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert _traced_flow()(backend.url) == 200
    with _client(backend) as client:
        client.get("/again")
    first, second = (TRACEPARENT.match(seen.headers["traceparent"]) for seen in backend.seen)
    assert first is not None
    assert second is not None
    assert first.group(3) == second.group(3) == "00"  # not sampled: nobody asked for traces
    assert first.group(1) != second.group(1)  # a fresh trace id per request
    assert telemetry.flush_tracing()
    time.sleep(0.2)
    assert receiver.spans == []


# -- the CLIENT span of the transport -------------------------------------------------------------


def test_retries_are_events_on_one_client_span_and_share_its_traceparent(
    tracing: Any, receiver: Receiver, backend: OutageServer
) -> None:
    backend.script(503)
    with trace.get_tracer("test").start_as_current_span("step") as step, _client(backend) as c:
        assert c.get("/orders").status_code == 200
    telemetry.flush_tracing()
    receiver.wait_for(2)
    client_span = receiver.one(kind=ProtoSpan.SPAN_KIND_CLIENT)
    assert client_span.parent_span_id == f"{step.get_span_context().span_id:016x}"
    assert client_span.attributes["http.request.resend_count"] == 1
    assert client_span.attributes["http.response.status_code"] == 200
    assert client_span.status == ProtoStatus.STATUS_CODE_UNSET
    assert client_span.events == [
        ("http.attempt", {"http.request.resend_count": 0, "http.response.status_code": 503})
    ]
    sent = {seen.headers["traceparent"][:-3] for seen in backend.seen}
    assert sent == {f"00-{client_span.trace_id}-{client_span.span_id}"}
    assert len({seen.headers["x-request-id"] for seen in backend.seen}) == 1


def test_a_final_5xx_is_an_error_and_a_4xx_is_not(
    tracing: Any, receiver: Receiver, backend: OutageServer
) -> None:
    backend.fail(503)
    with trace.get_tracer("test").start_as_current_span("step"), _client(backend) as client:
        assert client.get("/down").status_code == 503
        backend.fail(404)
        assert client.get("/missing").status_code == 404
    telemetry.flush_tracing()
    down, missing, _ = receiver.wait_for(3)
    assert down.status == ProtoStatus.STATUS_CODE_ERROR
    assert down.attributes["error.type"] == "503"
    assert down.attributes["http.request.resend_count"] == 2
    assert [event[1]["http.request.resend_count"] for event in down.events] == [0, 1, 2]
    assert missing.status == ProtoStatus.STATUS_CODE_UNSET
    assert "error.type" not in missing.attributes
    assert missing.attributes["http.response.status_code"] == 404


def test_a_transport_error_is_an_error_named_by_its_type(tracing: Any, receiver: Receiver) -> None:
    url = f"http://user:pw@127.0.0.1:{_closed_port()}/x?api_key=k&q=1"
    with (
        trace.get_tracer("test").start_as_current_span("step"),
        httpx.Client(transport=ResilientTransport("nowhere"), timeout=2.0) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get(url)
    telemetry.flush_tracing()
    span = receiver.wait_for(2)[0]
    assert span.status == ProtoStatus.STATUS_CODE_ERROR
    assert span.attributes["error.type"] == "httpx.ConnectError"
    assert span.attributes["url.full"].startswith("http://REDACTED:REDACTED@127.0.0.1:")
    assert span.attributes["url.full"].endswith("/x?api_key=REDACTED&q=1")
    assert [name for name, _ in span.events] == ["http.attempt"] * 3


def test_a_caller_that_sends_its_own_traceparent_owns_the_client_span(
    tracing: Any, receiver: Receiver, backend: OutageServer
) -> None:
    mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with trace.get_tracer("test").start_as_current_span("caller"), _client(backend) as client:
        client.get("/orders", headers={"traceparent": mine})
    telemetry.flush_tracing()
    (caller,) = receiver.wait_for(1)
    assert caller.name == "caller"
    assert backend.seen[-1].headers["traceparent"] == mine


def test_a_call_outside_any_trace_gets_no_span_and_a_fresh_traceparent(
    tracing: Any, receiver: Receiver, backend: OutageServer
) -> None:
    with _client(backend) as client:  # e.g. a load generator's thread: nothing to join
        client.get("/orders")
    telemetry.flush_tracing()
    time.sleep(0.2)
    assert receiver.spans == []
    match = TRACEPARENT.match(backend.seen[-1].headers["traceparent"])
    assert match is not None
    assert match.group(3) == "00"


def test_a_request_can_leave_sampling_to_the_service(
    tracing: Any, receiver: Receiver, backend: OutageServer
) -> None:
    with trace.get_tracer("test").start_as_current_span("measure"), _client(backend) as client:
        client.get("/orders", extensions={NO_TRACE_CONTEXT_EXTENSION: True})
    telemetry.flush_tracing()
    (measure,) = receiver.wait_for(1)
    assert measure.name == "measure"  # no CLIENT span
    assert "traceparent" not in backend.seen[-1].headers
    assert "x-request-id" in backend.seen[-1].headers


# -- configuration --------------------------------------------------------------------------------


def test_configuration_comes_from_the_standard_environment(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "runbooks-prod")
    provider = telemetry.configure_tracing()
    assert provider is not None
    assert telemetry.configure_tracing() is provider  # idempotent: one provider per process
    assert trace.get_tracer_provider() is provider
    with trace.get_tracer("test").start_as_current_span("from-env"):
        pass
    assert telemetry.shutdown_tracing()
    (span,) = receiver.wait_for(1)
    assert (span.name, span.service) == ("from-env", "runbooks-prod")
    assert telemetry.configure_tracing() is None  # shut down for good in this process


def test_the_default_service_name_is_runbooks(receiver: Receiver) -> None:
    provider = telemetry.configure_tracing(receiver.url)  # a bare URL gets /v1/traces
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "runbooks"
    with trace.get_tracer("test").start_as_current_span("default-name"):
        pass
    telemetry.flush_tracing()
    assert [s.service for s in receiver.wait_for(1)] == ["runbooks"]


@pytest.mark.parametrize(
    ("env", "argument"),
    [
        ({"OTEL_SDK_DISABLED": "true"}, "http://127.0.0.1:4318"),
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"}, None),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            None,
        ),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}, None),
    ],
)
def test_tracing_stays_off_without_a_usable_endpoint(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argument: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert telemetry.configure_tracing(argument) is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_an_unsampled_request_still_carries_its_trace_context(
    receiver: Receiver, backend: OutageServer
) -> None:
    telemetry.configure_tracing(receiver.url, sampler_ratio=0.0)
    with trace.get_tracer("test").start_as_current_span("step") as step, _client(backend) as c:
        c.get("/orders")
    telemetry.flush_tracing()
    match = TRACEPARENT.match(backend.seen[-1].headers["traceparent"])
    assert match is not None
    assert match.group(1) == f"{step.get_span_context().trace_id:032x}"
    assert not _sampled(match.group(3))  # the head sampler's decision travels with it
    assert receiver.spans == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="sampler_ratio"):
        telemetry.configure_tracing("http://127.0.0.1:4318", sampler_ratio=1.5)
    with pytest.raises(ValueError, match="http"):
        telemetry.configure_tracing("collector:4318")


def test_a_dead_collector_does_not_hold_the_process(receiver: Receiver) -> None:
    telemetry.configure_tracing(f"http://127.0.0.1:{_closed_port()}/v1/traces")
    with trace.get_tracer("test").start_as_current_span("lost"):
        pass
    started = time.monotonic()
    telemetry.shutdown_tracing(timeout_seconds=1.0)
    assert time.monotonic() - started < 3.0
