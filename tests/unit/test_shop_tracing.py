"""Demo shop tracing: when the OTEL_* env asks for export, and W3C propagation without the SDK."""

from __future__ import annotations

import pytest

from sandbox.shop import tracing
from sandbox.shop.tracing import PropagationOnly, parse_traceparent, requested

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("env", "wanted", "problem"),
    [
        ({}, False, None),
        ({"OTEL_SERVICE_NAME": "checkout"}, False, None),  # a name alone exports nowhere
        (ENDPOINT, True, None),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, True, None),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False, None),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False, None),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "jaeger"}, False, "only otlp"),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, False, "only http/protobuf"),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, True, None),
    ],
)
def test_when_traces_are_requested(env: dict, wanted: bool, problem: str | None) -> None:
    got_wanted, got_problem = requested(env)
    assert got_wanted is wanted
    if problem is None:
        assert got_problem is None
    else:
        assert got_problem is not None
        assert problem in got_problem


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01"),
        ),
        (  # upper case is tolerated (lowered), as most SDKs do
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00",
            ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "00"),
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_traceparent(header: str | None, parsed: object) -> None:
    assert parse_traceparent(header) == parsed


def test_propagation_only_keeps_the_trace_and_makes_a_new_parent() -> None:
    incoming = {
        "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "a=1",
        "baggage": "user=7",
    }
    tracer = PropagationOnly()
    with tracer.server_span("GET", "/buy", incoming, {}), tracer.client_span("c", "POST", "u") as c:
        headers = c.outgoing_headers()
    version, trace_id, parent, flags = headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert parent != "00f067aa0ba902b7"
    assert headers["tracestate"] == "a=1"
    assert headers["baggage"] == "user=7"
    with tracer.server_span("GET", "/buy", {}, {}), tracer.client_span("c", "POST", "u") as c:
        assert c.outgoing_headers() == {}  # the resilience layer adds a fresh traceparent


def test_setup_without_the_sdk_says_why_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tracing, "sdk_available", lambda: False)
    chosen = tracing.setup({"service.name": "checkout"}, ENDPOINT)
    assert isinstance(chosen, PropagationOnly)
    assert "opentelemetry-sdk" in capsys.readouterr().err
    assert isinstance(tracing.setup({}, {}), PropagationOnly)
    assert capsys.readouterr().err == ""


def test_service_name_precedence() -> None:
    defaults = {"service.name": "checkout"}
    assert tracing.tracing_service(defaults, {}) == "checkout"
    attrs = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=shop-co,team=sre"}
    assert tracing.tracing_service(defaults, attrs) == "shop-co"
    named = {**attrs, "OTEL_SERVICE_NAME": "co"}
    assert tracing.tracing_service(defaults, named) == "co"
