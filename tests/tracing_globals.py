"""Isolation of OpenTelemetry's process-global tracer provider for tests that configure it.

OpenTelemetry allows one global provider per process and ``runbooks.telemetry`` configures it
once; a test that turns tracing on must leave the process as it found it, or every later test
would export spans. This resets the API's globals the way OpenTelemetry's own test utilities
do (``reset_trace_globals``), and clears the ``OTEL_*`` environment a developer's shell may set.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.util._once import Once

from runbooks import telemetry

OTEL_ENV = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


def reset_tracing_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()
    telemetry._shut_down = False


@pytest.fixture
def isolated_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``OTEL_*`` from the environment and a fresh global provider; shut down after."""
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    reset_tracing_globals()
    try:
        yield
    finally:
        telemetry.shutdown_tracing(timeout_seconds=5.0)
        reset_tracing_globals()
