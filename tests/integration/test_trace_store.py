"""The sandbox's trace store over real HTTP on loopback: OTLP/HTTP in (the OpenTelemetry SDK's
own exporter, and OTLP/JSON bodies written by hand), Jaeger ``/api/v3``-shaped JSON out."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sandbox.traces import TraceServer
from sandbox.traces.otlp import MAX_BODY_BYTES

WINDOW = {
    "query.start_time_min": "2000-01-01T00:00:00Z",
    "query.start_time_max": "2100-01-01T00:00:00Z",
}


@pytest.fixture
def server() -> Iterator[TraceServer]:
    with TraceServer() as running:
        yield running


def provider(server: TraceServer, service: str, **exporter: object) -> TracerProvider:
    """A tracer provider exporting each span at once (protobuf over HTTP) to ``server``."""
    made = TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )
    made.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=f"{server.otlp_url}/v1/traces", timeout=5, **exporter)
        )
    )
    return made


def query(server: TraceServer, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{server.query_url}{path}", params=params, timeout=5)


def spans_in(document: dict) -> list[tuple[str, dict]]:
    """(service.name, span) of every span of an OTLP/JSON ``result``."""
    found = []
    for resource_spans in document["result"]["resourceSpans"]:
        attributes = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
        service = attributes["service.name"]["stringValue"]
        for scope_spans in resource_spans["scopeSpans"]:
            found.extend((service, span) for span in scope_spans["spans"])
    return found


def json_span(trace_id: str, span_id: str, name: str, **extra: object) -> dict:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
        **extra,
    }


def json_export(service: str, *spans: dict) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [{"scope": {"name": "by-hand"}, "spans": list(spans)}],
            }
        ]
    }


def post_json(
    server: TraceServer, document: dict, client: httpx.Client | None = None, **headers: str
) -> httpx.Response:
    return (client or httpx).post(
        f"{server.otlp_url}/v1/traces",
        content=json.dumps(document).encode(),
        headers={"Content-Type": "application/json", **headers},
        timeout=5,
    )


def test_sdk_export_is_queryable_with_parent_links_intact(server: TraceServer) -> None:
    frontend, checkout = provider(server, "frontend"), provider(server, "checkout")
    try:
        with frontend.get_tracer("t").start_as_current_span(
            "GET /buy", kind=trace.SpanKind.SERVER
        ) as root:
            context = trace.set_span_in_context(root)
            with checkout.get_tracer("t").start_as_current_span(
                "POST /checkout",
                context=context,
                kind=trace.SpanKind.SERVER,
                attributes={"cart.items": 3},
            ) as child:
                pass
    finally:
        frontend.shutdown()
        checkout.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")

    assert query(server, "/api/v3/services").json() == {"services": ["checkout", "frontend"]}
    assert query(server, "/api/v3/operations", service="checkout").json() == {
        "operations": [{"name": "POST /checkout", "spanKind": "server"}]
    }
    answer = query(server, f"/api/v3/traces/{trace_id}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    spans = {span["name"]: (service, span) for service, span in spans_in(answer.json())}
    assert set(spans) == {"GET /buy", "POST /checkout"}
    service, child_json = spans["POST /checkout"]
    assert service == "checkout"
    assert child_json["traceId"] == trace_id
    assert child_json["spanId"] == format(child.get_span_context().span_id, "016x")
    assert child_json["parentSpanId"] == spans["GET /buy"][1]["spanId"]
    assert "parentSpanId" not in spans["GET /buy"][1]
    assert child_json["kind"] == 2  # OTLP/JSON: enums as integers
    assert {"key": "cart.items", "value": {"intValue": "3"}} in child_json["attributes"]


def test_gzip_protobuf_from_the_sdk_is_accepted(server: TraceServer) -> None:
    sdk = provider(server, "gzipped", compression=Compression.Gzip)
    try:
        with sdk.get_tracer("t").start_as_current_span("work"):
            pass
    finally:
        sdk.shutdown()
    assert query(server, "/api/v3/services").json() == {"services": ["gzipped"]}


def test_otlp_json_by_hand_enums_as_names_or_ints_and_gzip(server: TraceServer) -> None:
    trace_id = "5B8EFFF798038103D269B633813FC60C"  # OTLP/JSON ids are case-insensitive hex
    document = json_export(
        "payments",
        json_span(
            trace_id, "EEE19B7EC3C1B173", "charge", kind="SPAN_KIND_CLIENT", status={"code": 2}
        ),
        json_span(
            trace_id,
            "0102030405060708",
            "ledger",
            parentSpanId="eee19b7ec3c1b173",
            kind=3,
            status={"code": "STATUS_CODE_OK"},
            start_time_unix_nano=1700000000100000000,  # original field names, numbers
        ),
    )
    answer = post_json(server, document)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {}
    zipped = httpx.post(
        f"{server.otlp_url}/v1/traces",
        content=gzip.compress(
            json.dumps(json_export("refunds", json_span("ab" * 16, "cd" * 8, "refund"))).encode()
        ),
        headers={"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "gzip"},
        timeout=5,
    )
    assert zipped.status_code == 200

    stored = spans_in(query(server, f"/api/v3/traces/{trace_id.lower()}").json())
    by_name = {span["name"]: span for _, span in stored}
    assert by_name["charge"]["kind"] == 3
    assert by_name["charge"]["status"] == {"code": 2}
    assert by_name["ledger"]["parentSpanId"] == "eee19b7ec3c1b173"
    assert by_name["ledger"]["startTimeUnixNano"] == "1700000000100000000"
    assert query(server, "/api/v3/services").json() == {"services": ["payments", "refunds"]}


def test_protobuf_answer_is_an_export_response_with_partial_success(server: TraceServer) -> None:
    document = json_export(
        "svc", json_span("00" * 16, "11" * 8, "zero-trace"), json_span("22" * 16, "33" * 8, "ok")
    )
    answer = post_json(server, document)
    assert answer.status_code == 200
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "traceId" in partial["errorMessage"]
    # the same request as protobuf gets a protobuf answer
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    json_format.ParseDict(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {"traceId": "AAAAAAAAAAAAAAAAAAAAAA==", "spanId": "AQIDBAUGBwg="}
                            ]
                        }
                    ]
                }
            ]
        },
        request,
    )
    raw = httpx.post(
        f"{server.otlp_url}/v1/traces",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=5,
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(raw.content).partial_success.rejected_spans == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"{not json", "application/json", 400, "does not parse"),
        (b"[1, 2]", "application/json", 400, "must be an object"),
        (
            json.dumps(json_export("s", json_span("zz" * 16, "11" * 8, "x"))).encode(),
            "application/json",
            400,
            "not hex",
        ),
        (json.dumps({"resourceSpans": "nope"}).encode(), "application/json", 400, "not an OTLP"),
        (b"\x0a\xff\xff\xff", "application/x-protobuf", 400, "not an ExportTraceServiceRequest"),
        (b"hello", "text/plain", 415, "not supported"),
    ],
)
def test_malformed_bodies_are_refused_with_a_status_message(
    server: TraceServer, body: bytes, content_type: str, status: int, says: str
) -> None:
    answer = httpx.post(
        f"{server.otlp_url}/v1/traces",
        content=body,
        headers={"Content-Type": content_type},
        timeout=5,
    )
    assert answer.status_code == status
    if content_type == "application/json":
        assert says in answer.json()["message"]
        assert answer.json()["code"] == 3
    else:
        assert says in status_pb2.Status.FromString(answer.content).message
    assert server.store.span_count == 0


def test_corrupt_gzip_is_400(server: TraceServer) -> None:
    answer = httpx.post(
        f"{server.otlp_url}/v1/traces",
        content=b"\x1f\x8b not really",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert "gzip" in answer.json()["message"]


def test_oversized_body_is_413_without_being_read(server: TraceServer) -> None:
    host, port = server.otlp_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
        )
        head = connection.recv(4096)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in head


def test_a_gzip_bomb_is_413(server: TraceServer) -> None:
    bomb = gzip.compress(b"\0" * (MAX_BODY_BYTES + 1024))
    assert len(bomb) < 100_000
    answer = httpx.post(
        f"{server.otlp_url}/v1/traces",
        content=bomb,
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert answer.status_code == 413


def test_find_traces_window_limit_operation_and_duration(server: TraceServer) -> None:
    second = 1_000_000_000
    base = 1_700_000_000 * second
    spans = [
        json_span(
            f"{i + 1:032x}",
            f"{i + 1:016x}",
            "GET /a" if i % 2 else "GET /b",
            startTimeUnixNano=str(base + i * second),
            endTimeUnixNano=str(base + i * second + (i + 1) * 1_000_000),
        )
        for i in range(6)
    ]
    assert post_json(server, json_export("web", *spans)).status_code == 200

    def found(**params: str) -> list[str]:
        answer = query(server, "/api/v3/traces", **{"query.service_name": "web", **params})
        if answer.status_code == 404:
            assert answer.json()["error"] == {"httpCode": 404, "message": "No traces found"}
            return []
        seen: list[str] = []
        for _, span in spans_in(answer.json()):
            if span["traceId"] not in seen:
                seen.append(span["traceId"])
        return [str(int(trace_id, 16)) for trace_id in seen]

    every = {**WINDOW}
    assert found(**every) == ["6", "5", "4", "3", "2", "1"]  # newest first
    assert found(**every, **{"query.num_traces": "2"}) == ["6", "5"]
    assert found(**every, **{"query.search_depth": "3"}) == ["6", "5", "4"]
    assert found(**every, **{"query.operation_name": "GET /a"}) == ["6", "4", "2"]
    assert found(**every, **{"query.duration_min": "3ms", "query.duration_max": "4.5ms"}) == [
        "4",
        "3",
    ]
    # [min, max): a span starting exactly at max is out
    assert found(
        **{
            "query.start_time_min": "2023-11-14T22:13:21Z",
            "query.start_time_max": "2023-11-14T22:13:23.000000000Z",
        }
    ) == ["3", "2"]
    assert found(
        **{
            "query.start_time_min": "2023-11-14T23:13:21.5+01:00",
            "query.start_time_max": "2023-11-14T23:13:22.000000001+01:00",
        }
    ) == ["3"]
    assert (
        found(
            **{
                "query.start_time_min": "2030-01-01T00:00:00Z",
                "query.start_time_max": "2031-01-01T00:00:00Z",
            }
        )
        == []
    )
    assert (
        query(server, "/api/v3/traces", **{"query.service_name": "nobody", **WINDOW}).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("params", "says"),
    [
        (
            {"query.service_name": "web"},
            "query.start_time_min and query.start_time_max are required",
        ),
        (WINDOW, "query.service_name is required"),
        (
            {"query.service_name": "web", **WINDOW, "query.start_time_min": "yesterday"},
            "malformed parameter query.start_time_min",
        ),
        (
            {"query.service_name": "web", **WINDOW, "query.num_traces": "many"},
            "malformed parameter query.num_traces",
        ),
        (
            {"query.service_name": "web", **WINDOW, "query.duration_min": "3 parsecs"},
            "malformed parameter query.duration_min",
        ),
        (
            {
                "query.service_name": "web",
                "query.start_time_min": "2030-01-01T00:00:00Z",
                "query.start_time_max": "2020-01-01T00:00:00Z",
            },
            "must not be after",
        ),
    ],
)
def test_bad_query_parameters_are_400_in_jaeger_error_shape(
    server: TraceServer, params: dict, says: str
) -> None:
    answer = query(server, "/api/v3/traces", **params)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["httpCode"] == 400
    assert says in error["message"]


def test_unknown_or_malformed_trace_id(server: TraceServer) -> None:
    unknown = query(server, f"/api/v3/traces/{'ab' * 16}")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"httpCode": 404, "message": f"trace {'ab' * 16} not found"}}
    malformed = query(server, "/api/v3/traces/not-hex")
    assert malformed.status_code == 400
    assert "malformed parameter trace_id" in malformed.json()["error"]["message"]


def test_a_64_bit_trace_id_is_padded_as_jaeger_does(server: TraceServer) -> None:
    post_json(
        server, json_export("legacy", json_span("0" * 16 + "1234567890abcdef", "11" * 8, "old"))
    )
    assert query(server, "/api/v3/traces/1234567890abcdef").status_code == 200


def test_receiver_and_query_api_are_apart(server: TraceServer) -> None:
    assert server.otlp_url != server.query_url
    on_receiver = httpx.get(f"{server.otlp_url}/api/v3/services", timeout=5)
    assert on_receiver.status_code == 404
    assert "error" not in on_receiver.text
    assert httpx.post(f"{server.query_url}/v1/traces", content=b"{}", timeout=5).status_code == 404
    assert query(server, "/api/v2/services").status_code == 404
    for url in (server.otlp_url, server.query_url):
        assert httpx.get(f"{url}/-/ready", timeout=5).status_code == 200


def test_eviction_drops_the_least_recently_written_traces_first() -> None:
    with TraceServer(max_spans=10) as server:
        for number in range(1, 6):  # five traces of three spans: 15 > 10
            service = "old" if number == 1 else "new"
            trace_id = f"{number:032x}"
            spans = [json_span(trace_id, f"{number:08x}{k + 1:08x}", f"op{k}") for k in range(3)]
            assert post_json(server, json_export(service, *spans)).status_code == 200
        assert server.store.span_count == 9
        assert server.store.trace_count == 3
        assert query(server, f"/api/v3/traces/{1:032x}").status_code == 404
        assert query(server, f"/api/v3/traces/{2:032x}").status_code == 404
        assert query(server, f"/api/v3/traces/{5:032x}").status_code == 200
        assert query(server, "/api/v3/services").json() == {
            "services": ["new"]
        }  # "old" went with its trace
        # a span arriving for trace 3 makes it the most recent: trace 4 goes next
        post_json(server, json_export("new", json_span(f"{3:032x}", "ff" * 8, "late")))
        post_json(server, json_export("new", json_span(f"{9:032x}", "ee" * 8, "newest")))
        assert query(server, f"/api/v3/traces/{4:032x}").status_code == 404
        assert query(server, f"/api/v3/traces/{3:032x}").status_code == 200
        assert server.store.span_count <= 10


def test_a_resent_span_replaces_its_copy(server: TraceServer) -> None:
    document = json_export("svc", json_span("12" * 16, "34" * 8, "once"))
    post_json(server, document)
    post_json(server, document)  # an exporter's retry after a lost answer
    assert server.store.span_count == 1
    assert query(server, "/api/v3/operations", service="svc").json()["operations"] == [
        {"name": "once", "spanKind": ""}
    ]


def test_concurrent_exports_all_land(server: TraceServer) -> None:
    def send(worker: int) -> None:
        with httpx.Client() as client:  # one connection per worker, kept alive
            for n in range(20):
                trace_id = f"{worker + 1:016x}{n + 1:016x}"
                document = json_export(f"w{worker}", json_span(trace_id, "11" * 8, "op"))
                assert post_json(server, document, client).status_code == 200

    threads = [threading.Thread(target=send, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert server.store.span_count == 80
    assert query(server, "/api/v3/services").json() == {"services": ["w0", "w1", "w2", "w3"]}


def test_stop_closes_both_ports_and_keep_alive_connections() -> None:
    server = TraceServer().start()
    client = httpx.Client(timeout=5)
    assert client.get(f"{server.query_url}/-/ready").status_code == 200  # a kept-alive connection
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 5
    client.close()
    for url in (server.otlp_url, server.query_url):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/-/ready", timeout=2)
    server.stop()  # idempotent
