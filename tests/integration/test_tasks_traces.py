"""``tasks.traces`` through a ``TraceBackend`` block against the sandbox's trace store on
loopback: spans exported by the OpenTelemetry SDK, read back as ``decisions.spans.Span``.

Tasks are called with ``.fn()``: no Prefect engine or server is needed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from blocks import TraceBackend
from decisions.spans import SpanKind, SpanStatus
from runbooks.errors import InvalidRequestError, NotFoundError, UnavailableError
from sandbox.stack import free_port
from sandbox.traces import TraceServer
from tasks.traces import find_traces, get_trace, list_operations, list_services, spans_of


@pytest.fixture
def server() -> Iterator[TraceServer]:
    with TraceServer() as running:
        yield running


@pytest.fixture
def backend(server: TraceServer) -> TraceBackend:
    return TraceBackend(base_url=server.query_url, timeout_seconds=5)


def exporting(otlp_url: str, service: str) -> TracerProvider:
    made = TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )
    made.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp_url}/v1/traces", timeout=5))
    )
    return made


def purchase(otlp_url: str, *, fail_payment: bool = False) -> str:
    """One request through frontend -> checkout -> payments, each service its own SDK; returns
    the trace id."""
    providers = {name: exporting(otlp_url, name) for name in ("frontend", "checkout", "payments")}
    tracer = {name: made.get_tracer("shop") for name, made in providers.items()}
    try:
        with (
            tracer["frontend"].start_as_current_span(
                "GET /buy", kind=trace.SpanKind.SERVER
            ) as root,
            tracer["frontend"].start_as_current_span("POST", kind=trace.SpanKind.CLIENT) as call,
            tracer["checkout"].start_as_current_span(
                "POST /checkout",
                context=trace.set_span_in_context(call),
                kind=trace.SpanKind.SERVER,
            ),
            tracer["payments"].start_as_current_span(
                "POST /pay",
                kind=trace.SpanKind.SERVER,
                attributes={"amount": 9.5, "tags": ["a", "b"]},
            ) as pay,
        ):
            if fail_payment:
                pay.set_status(Status(StatusCode.ERROR))
    finally:
        for made in providers.values():
            made.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def window() -> dict[str, datetime]:
    now = datetime.now(UTC)
    return {"start": now - timedelta(minutes=5), "end": now + timedelta(minutes=1)}


def test_services_and_operations(server: TraceServer, backend: TraceBackend) -> None:
    assert list_services.fn(backend) == ()
    purchase(server.otlp_url)
    assert list_services.fn(backend) == ("checkout", "frontend", "payments")
    assert list_operations.fn(backend, "frontend") == ("GET /buy", "POST")
    assert list_operations.fn(backend, "nobody") == ()


def test_one_request_is_one_trace_across_three_services(
    server: TraceServer, backend: TraceBackend
) -> None:
    trace_id = purchase(server.otlp_url, fail_payment=True)
    spans = get_trace.fn(backend, trace_id)
    assert [span.service for span in spans] == ["frontend", "frontend", "checkout", "payments"]
    by_name = {span.name: span for span in spans}
    root, call = by_name["GET /buy"], by_name["POST"]
    assert root.parent_span_id is None
    assert call.parent_span_id == root.span_id
    assert by_name["POST /checkout"].parent_span_id == call.span_id
    assert by_name["POST /pay"].parent_span_id == by_name["POST /checkout"].span_id
    assert {span.trace_id for span in spans} == {trace_id}
    assert root.kind is SpanKind.SERVER
    assert call.kind is SpanKind.CLIENT
    assert by_name["POST /pay"].status is SpanStatus.ERROR
    assert root.status is SpanStatus.UNSET
    assert by_name["POST /pay"].attributes == {"amount": 9.5, "tags": "a,b"}
    assert all(span.end_ns >= span.start_ns > 0 for span in spans)
    # the same trace, found by service and window
    found = find_traces.fn(backend, "payments", **window())
    assert [tuple(s.span_id for s in trace_spans) for trace_spans in found] == [
        tuple(s.span_id for s in spans)
    ]


def test_find_traces_newest_first_limited_and_windowed(
    server: TraceServer, backend: TraceBackend
) -> None:
    ids = [purchase(server.otlp_url) for _ in range(3)]
    found = find_traces.fn(backend, "checkout", **window())
    assert [trace_spans[0].trace_id for trace_spans in found] == ids[::-1]
    assert len(find_traces.fn(backend, "checkout", limit=2, **window())) == 2
    assert (
        find_traces.fn(backend, "checkout", operation="POST /checkout", limit=1, **window())[0][
            0
        ].trace_id
        == ids[-1]
    )
    assert find_traces.fn(backend, "checkout", operation="GET /nothing", **window()) == ()
    past = datetime.now(UTC) - timedelta(days=1)
    assert find_traces.fn(backend, "checkout", start=past - timedelta(hours=1), end=past) == ()
    assert find_traces.fn(backend, "nobody", **window()) == ()


def test_spans_of_one_service(server: TraceServer, backend: TraceBackend) -> None:
    purchase(server.otlp_url)
    purchase(server.otlp_url)
    spans = spans_of.fn(backend, "frontend", **window())
    assert len(spans) == 4
    assert {span.service for span in spans} == {"frontend"}
    assert [span.start_ns for span in spans] == sorted(span.start_ns for span in spans)


def test_unknown_trace_is_not_found(backend: TraceBackend) -> None:
    with pytest.raises(NotFoundError, match="sampled out, or evicted") as caught:
        get_trace.fn(backend, "ab" * 16)
    assert caught.value.status == 404


@pytest.mark.parametrize("trace_id", ["xyz", "ab" * 8, "00" * 16, "g" * 32])
def test_malformed_trace_id_is_refused_before_any_call(trace_id: str) -> None:
    nowhere = TraceBackend(base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InvalidRequestError, match="trace_id must be 32 hex"):
        get_trace.fn(nowhere, trace_id)


def test_bad_input_is_refused_naming_the_field(backend: TraceBackend) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidRequestError, match="start must be timezone-aware"):
        find_traces.fn(backend, "svc", start=datetime(2026, 1, 1), end=now)
    with pytest.raises(InvalidRequestError, match="must be after start"):
        find_traces.fn(backend, "svc", start=now, end=now - timedelta(seconds=1))
    with pytest.raises(InvalidRequestError, match="limit must be between 1 and 1000"):
        find_traces.fn(backend, "svc", start=now - timedelta(minutes=1), end=now, limit=0)
    with pytest.raises(InvalidRequestError, match="service must be a non-empty"):
        spans_of.fn(backend, " ", start=now - timedelta(minutes=1), end=now)


def test_an_unreachable_backend_is_unavailable() -> None:
    nowhere = TraceBackend(base_url=f"http://127.0.0.1:{free_port()}", timeout_seconds=1)
    with pytest.raises(
        UnavailableError, match=r"list the services of the trace backend at .*ConnectError"
    ):
        list_services.fn(nowhere)


def test_pointing_at_the_otlp_receiver_says_to_check_base_url(server: TraceServer) -> None:
    wrong = TraceBackend(base_url=server.otlp_url)
    with pytest.raises(NotFoundError, match="check that base_url is the query API's root"):
        list_services.fn(wrong)
    with pytest.raises(NotFoundError, match="check that base_url"):
        find_traces.fn(wrong, "svc", **window())


@pytest.fixture
def canned() -> Iterator[tuple[str, dict]]:
    """A loopback server answering every GET with ``answer["status"]`` and ``answer["body"]``,
    for answers the store never gives (a real Jaeger's 500, a proxy's HTML page)."""
    answer: dict = {"status": 200, "body": b"", "paths": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer["paths"].append(self.path)
            self.send_response(answer["status"])
            self.send_header("Content-Length", str(len(answer["body"])))
            self.end_headers()
            self.wfile.write(answer["body"])

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", answer
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_backend_error_carries_its_message(canned: tuple[str, dict]) -> None:
    url, answer = canned
    backend = TraceBackend(base_url=url)
    error = {"error": {"httpCode": 500, "message": "storage is down"}}
    answer.update(status=500, body=json.dumps(error).encode())
    with pytest.raises(UnavailableError, match="HTTP 500: storage is down") as caught:
        find_traces.fn(backend, "svc", **window())
    assert caught.value.status == 500
    answer.update(status=400, body=b'{"error": {"httpCode": 400, "message": "bad service"}}')
    with pytest.raises(InvalidRequestError, match="bad service"):
        list_operations.fn(backend, "svc")


def test_an_answer_that_is_not_the_api_is_unavailable(canned: tuple[str, dict]) -> None:
    url, answer = canned
    backend = TraceBackend(base_url=url)
    answer.update(status=200, body=b"<html>login</html>")
    with pytest.raises(UnavailableError, match=r"not jaeger-v3's \(not a JSON object\); check"):
        list_services.fn(backend)
    answer.update(body=b"{}")  # a real Jaeger's answer when it has no services: no list at all
    assert list_services.fn(backend) == ()
    with pytest.raises(UnavailableError, match="no 'result' object"):
        get_trace.fn(backend, "ab" * 16)
    bad_span = {"result": {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}}
    answer.update(body=json.dumps(bad_span).encode())
    with pytest.raises(UnavailableError, match="answered a span that cannot be read"):
        find_traces.fn(backend, "svc", **window())


def test_the_query_parameters_are_jaegers(canned: tuple[str, dict]) -> None:
    url, answer = canned
    answer.update(status=404, body=b'{"error": {"httpCode": 404, "message": "No traces found"}}')
    start = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
    found = find_traces.fn(
        TraceBackend(base_url=url), "shop", start=start, end=start + timedelta(hours=1), limit=7
    )
    assert found == ()
    query = parse_qs(urlsplit(answer["paths"][-1]).query)
    assert urlsplit(answer["paths"][-1]).path == "/api/v3/traces"
    assert query == {
        "query.service_name": ["shop"],
        "query.start_time_min": ["2026-03-01T12:00:00.250000Z"],
        "query.start_time_max": ["2026-03-01T13:00:00.250000Z"],
        "query.num_traces": ["7"],
    }


def test_the_bearer_token_is_sent_and_never_shown() -> None:
    block = TraceBackend(base_url="http://127.0.0.1:9", token="s3cr3t-token")
    assert "s3cr3t-token" not in repr(block)
    assert "s3cr3t-token" not in json.dumps(block.model_dump(mode="json"))
    with block.get_client() as client:
        assert client.headers["Authorization"] == "Bearer s3cr3t-token"
        assert client.timeout.read == 10.0
        assert client.timeout.connect == 5.0
    with pytest.raises(ValueError, match="base_url must be an absolute http"):
        TraceBackend(base_url="jaeger:16686")
    with pytest.raises(ValueError, match="api"):
        TraceBackend(base_url="http://127.0.0.1:16686", api="zipkin-v1")


def test_the_sandbox_exposes_the_trace_store(sandbox) -> None:
    endpoints = sandbox.endpoints
    assert endpoints["traces"] != endpoints["otlp"]
    trace_id = purchase(endpoints["otlp"])
    backend = TraceBackend(base_url=endpoints["traces"])
    assert {"frontend", "checkout", "payments"} <= set(list_services.fn(backend))
    assert len(get_trace.fn(backend, trace_id)) == 4


def test_the_sandbox_registers_a_trace_backend_block(prefect_server: str) -> None:
    from sandbox.blocks_registration import main

    endpoints = {"kubeconfig": "/nowhere/kubeconfig", "moto": "http://127.0.0.1:5000"}
    assert "trace-backend/sandbox" not in main(endpoints)  # no trace store, no block
    saved = main({**endpoints, "traces": "http://127.0.0.1:16686"})
    assert "trace-backend/sandbox" in saved
    loaded = TraceBackend.load("sandbox")
    assert loaded.base_url == "http://127.0.0.1:16686"
    assert loaded.api == "jaeger-v3"
