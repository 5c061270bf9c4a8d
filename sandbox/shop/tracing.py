"""Traces: OTLP/HTTP export when the pod's ``OTEL_*`` env asks for it, W3C propagation always.

The ``tracing-rollout`` runbook turns tracing on the way it would on a real cluster: it patches
the standard variables into the Deployment (``OTEL_SERVICE_NAME``,
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_TRACES_SAMPLER`` / ``_ARG``, ``OTEL_PROPAGATORS``, ``OTEL_RESOURCE_ATTRIBUTES``). So
spans are exported only when an OTLP endpoint is set, ``OTEL_SDK_DISABLED`` is not ``true``,
``OTEL_TRACES_EXPORTER`` is unset or ``otlp`` and the protocol is unset or ``http/protobuf``,
*and* the OpenTelemetry SDK and OTLP/HTTP exporter are importable. Everything else is read by
the SDK itself from the same variables (sampler, propagators, resource, batch delays), so the
pod behaves as any SDK-configured service would. A request that asks for tracing the pod cannot
honour is logged at start, once: the runbook then sees a service that does not report.

Without the SDK, the trace context still flows: the incoming ``traceparent`` keeps its trace id
and flags on the outgoing call under a fresh span id, ``tracestate`` and ``baggage`` pass
through, so logs along the chain share a trace id. The SDK is imported only when used: a pod
that does not trace pays nothing at start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from sandbox.shop.config import log

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_PASS_THROUGH = ("tracestate", "baggage")


class Span(Protocol):
    """The server span of one request, as the handler uses it."""

    def outgoing_headers(self) -> dict[str, str]:
        """Trace headers for a downstream call made inside this span (call within
        :meth:`Tracing.client_span` to have them name the client span)."""
        ...

    def set_status(self, status: int | None) -> None:
        """The HTTP status answered (``None``: no answer at all); 5xx and ``None`` are errors."""
        ...


class Tracing(Protocol):
    enabled: bool

    def server_span(
        self, method: str, route: str, headers: Mapping[str, str], attributes: dict[str, Any]
    ) -> contextlib.AbstractContextManager[Span]: ...

    def client_span(
        self, dependency: str, method: str, url: str
    ) -> contextlib.AbstractContextManager[Span]: ...

    def shutdown(self, timeout_seconds: float) -> None: ...


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid W3C ``traceparent``, else ``None``."""
    match = _TRACEPARENT.match((value or "").strip().lower())
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id, flags


class _PropagatedSpan:
    def __init__(self, headers: Mapping[str, str]):
        lowered = {k.lower(): v for k, v in headers.items()}
        self._parent = parse_traceparent(lowered.get("traceparent"))
        self._extra = {name: lowered[name] for name in _PASS_THROUGH if lowered.get(name)}

    def outgoing_headers(self) -> dict[str, str]:
        if self._parent is None:
            return {}  # the resilience layer adds a fresh, unsampled traceparent
        trace_id, _, flags = self._parent
        return {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-{flags}", **self._extra}

    def set_status(self, status: int | None) -> None:
        pass


class PropagationOnly:
    """W3C trace context passed along, no spans recorded or exported."""

    enabled = False

    def __init__(self) -> None:
        self._local = threading.local()

    @contextlib.contextmanager
    def server_span(
        self, method: str, route: str, headers: Mapping[str, str], attributes: dict[str, Any]
    ) -> Iterator[Span]:
        span = self._local.span = _PropagatedSpan(headers)
        try:
            yield span
        finally:
            self._local.span = None

    @contextlib.contextmanager
    def client_span(self, dependency: str, method: str, url: str) -> Iterator[Span]:
        span = getattr(self._local, "span", None)
        yield span if span is not None else _PropagatedSpan({})

    def shutdown(self, timeout_seconds: float) -> None:
        pass


class _SdkSpan:
    def __init__(self, span: Any):
        self._span = span

    def outgoing_headers(self) -> dict[str, str]:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the current span: the client span when inside one
        return carrier

    def set_status(self, status: int | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        if status is not None:
            self._span.set_attribute("http.response.status_code", status)
        if status is None or status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))


class SdkTracing:
    """Spans recorded by the OpenTelemetry SDK and exported over OTLP/HTTP (protobuf)."""

    enabled = True

    def __init__(self, defaults: dict[str, str]):
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # the env's service.name / resource attributes win over the pod's own defaults
        given = set(_resource_keys(os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))
        if os.environ.get("OTEL_SERVICE_NAME", "").strip():
            given.add("service.name")
        resource = Resource.create({k: v for k, v in defaults.items() if k not in given})
        # shutdown_on_exit=False: the SDK's own atexit flush is unbounded; ours is bounded
        self._provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(self._provider)
        self._tracer = self._provider.get_tracer("sandbox.shop")
        self._trace = trace

    @contextlib.contextmanager
    def server_span(
        self, method: str, route: str, headers: Mapping[str, str], attributes: dict[str, Any]
    ) -> Iterator[Span]:
        from opentelemetry import propagate

        # the propagators look headers up in lower case; HTTP names are case-insensitive
        parent = propagate.extract({name.lower(): value for name, value in headers.items()})
        with self._tracer.start_as_current_span(
            f"{method} {route}",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route, **attributes},
            record_exception=False,
            set_status_on_exception=True,
        ) as span:
            yield _SdkSpan(span)

    @contextlib.contextmanager
    def client_span(self, dependency: str, method: str, url: str) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            method,
            kind=self._trace.SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.full": url, "peer.service": dependency},
        ) as span:
            yield _SdkSpan(span)

    def shutdown(self, timeout_seconds: float) -> None:
        """Export what is buffered, for at most ``timeout_seconds``."""
        self._provider.force_flush(timeout_millis=int(timeout_seconds * 1000))


def _resource_keys(raw: str) -> list[str]:
    return [part.split("=", 1)[0].strip() for part in raw.split(",") if "=" in part]


def requested(env: Mapping[str, str]) -> tuple[bool, str | None]:
    """Whether the env asks for exported traces, and why not when it asks for something this
    pod cannot do (returned as the reason)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False, None
    if not (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    ):
        return False, None
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "none":
        return False, None
    if exporter != "otlp":
        return False, f"OTEL_TRACES_EXPORTER={exporter!r} is not supported (only otlp)"
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    ) or "http/protobuf"
    if protocol.strip().lower() != "http/protobuf":
        return False, f"OTLP protocol {protocol!r} is not supported (only http/protobuf)"
    return True, None


def sdk_available() -> bool:
    """Whether the SDK and the OTLP/HTTP exporter can be imported (without importing them)."""
    try:
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
        )
    except ImportError:  # a parent package is missing altogether
        return False


def setup(defaults: dict[str, str], env: Mapping[str, str] | None = None) -> Tracing:
    """The tracing this pod's environment asks for (see the module docstring)."""
    env = os.environ if env is None else env
    wanted, problem = requested(env)
    if problem is not None:
        log(f"tracing not started: {problem}")
    if not wanted:
        return PropagationOnly()
    if not sdk_available():
        log(
            "tracing not started: OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-sdk and "
            "opentelemetry-exporter-otlp-proto-http are not installed; propagating traceparent only"
        )
        return PropagationOnly()
    tracing = SdkTracing(defaults)
    log(f"tracing: exporting OTLP/HTTP spans as {tracing_service(defaults, env)!r}")
    return tracing


def tracing_service(defaults: Mapping[str, str], env: Mapping[str, str]) -> str:
    named = env.get("OTEL_SERVICE_NAME", "").strip()
    if named:
        return named
    for part in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = part.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return defaults.get("service.name", "unknown_service")
