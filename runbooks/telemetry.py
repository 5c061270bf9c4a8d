"""Self-tracing: the runbooks' own spans, exported over OTLP/HTTP to a configured endpoint.

What gets traced once :func:`configure_tracing` has set the process's TracerProvider:

- **Prefect's run spans.** Prefect 3 (``prefect.telemetry.run_telemetry.RunTelemetry``) starts a
  span per flow run and per task run with the *global* tracer (``get_tracer("prefect")``:
  without a TracerProvider they are the API's no-op spans), attributes ``prefect.run.id``,
  ``prefect.run.type``, ``prefect.run.name``, ``prefect.tags``, ``prefect.run.parameter.<name>``
  (the type only, never the value), one event per state change, status ERROR on failure. It is
  on by default (``PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY``, despite the name, applies to
  any server). A task run's span is the child of its flow run's, not through the in-process
  context but through the flow run's label ``__OTEL_TRACEPARENT``, which Prefect writes to the
  API; so a subflow or a deployment run started by ``run_deployment`` continues the trace in
  another process, provided that process configures tracing too. While a run executes, its span
  is the current span (``trace.use_span``), on whichever thread the task runner uses.
- **One CLIENT span per outgoing httpx request** of the resilience layer
  (:mod:`runbooks.resilience.transport`), the child of the current run span, whose context goes
  out as ``traceparent``: a rollout's calls appear inside the services' traces.

Configuration follows the OpenTelemetry SDK's environment variables, so an operator configures a
runbook process as any other service: arguments win, then ``OTEL_*``, then our defaults. Nothing
happens at import; with no endpoint (or ``OTEL_SDK_DISABLED=true``) nothing is imported or
connected, and the transport's tracing costs one dict lookup per request. Bad *arguments* raise
``ValueError``; a bad *environment* logs a warning and leaves tracing off: a typo in an
observability variable must not stop a rollback runbook.

The TracerProvider is process-global and OpenTelemetry sets it only once, so configuration is
idempotent (the first call wins; later calls return the same provider) and a provider set by
someone else (``opentelemetry-instrument``, the embedding application) is left alone.
:func:`shutdown_tracing` exports what is buffered, bounded in time; it is registered at exit
and ``runbooks run`` / ``runbooks demo`` call it when they end.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanProcessor

logger = logging.getLogger("runbooks.telemetry")

DEFAULT_SERVICE_NAME = "runbooks"
TRACES_PATH = "/v1/traces"
SHUTDOWN_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class _Configured:
    provider: TracerProvider
    processor: SpanProcessor
    endpoint: str


_lock = threading.Lock()
_configured: _Configured | None = None
_shut_down = False  # OpenTelemetry allows one global provider per process: no second life
_atexit_registered = False


def configure_tracing(
    endpoint: str | None = None,
    *,
    service_name: str | None = None,
    sampler_ratio: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> TracerProvider | None:
    """Export this process's spans over OTLP/HTTP (protobuf); the provider, or ``None`` if off.

    - ``endpoint``: the OTLP traces URL (``http://collector:4318/v1/traces``); a URL with no
      path gets ``/v1/traces``. ``None``: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is, else
      ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``; neither set: tracing stays off.
    - ``service_name``: ``None``: ``OTEL_SERVICE_NAME`` / ``service.name`` in
      ``OTEL_RESOURCE_ATTRIBUTES``, else ``"runbooks"`` (a literal default could not tell "not
      given" from "given", and the operator's variable must win over ours).
    - ``sampler_ratio``: head sampling, ``parentbased_traceidratio`` with this ratio in [0, 1];
      ``None``: ``OTEL_TRACES_SAMPLER`` / ``_ARG`` as the SDK reads them (default: every trace).
    - ``headers``: sent with every export (a backend's API key); ``None``:
      ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS``.

    ``OTEL_SDK_DISABLED=true`` turns it off whatever the arguments. Export requests time out
    after ``OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`` (default 10 s); spans are batched
    (``OTEL_BSP_*``) on a daemon thread, so a dead collector never blocks a runbook.
    """
    global _configured, _atexit_registered
    if sampler_ratio is not None and not 0.0 <= sampler_ratio <= 1.0:
        raise ValueError(f"sampler_ratio must be between 0 and 1, got {sampler_ratio}")
    if endpoint is not None:
        endpoint = _traces_url(endpoint)
    with _lock:
        if _configured is not None:
            if endpoint is not None and endpoint != _configured.endpoint:
                logger.warning(
                    "tracing already exports to %s; ignoring %s (one provider per process)",
                    _safe(_configured.endpoint),
                    _safe(endpoint),
                )
            return _configured.provider
        env = os.environ
        if _flag(env.get("OTEL_SDK_DISABLED")):
            return None
        url = endpoint if endpoint is not None else _endpoint_from_env(env)
        if url is None:
            return None
        if _shut_down:
            logger.warning("tracing was shut down in this process and cannot start again")
            return None
        from opentelemetry import trace

        current = trace.get_tracer_provider()
        if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            logger.info("a TracerProvider is already set (%s); using it", type(current).__name__)
            return None
        _configured = _build(url, service_name, sampler_ratio, headers)
        trace.set_tracer_provider(_configured.provider)
        if not _atexit_registered:
            atexit.register(shutdown_tracing)
            _atexit_registered = True
        resource = _configured.provider.resource.attributes
        logger.info(
            "tracing: exporting OTLP/HTTP spans to %s as %r",
            _safe(url),
            resource.get("service.name"),
        )
        return _configured.provider


def flush_tracing(timeout_seconds: float = SHUTDOWN_TIMEOUT_SECONDS) -> bool:
    """Export the spans buffered so far (long-lived processes, tests); ``False`` on timeout."""
    configured = _configured
    if configured is None:
        return True
    return _bounded(configured.provider.force_flush, timeout_seconds)


def shutdown_tracing(timeout_seconds: float = SHUTDOWN_TIMEOUT_SECONDS) -> bool:
    """Export what is buffered and stop the exporter, within ``timeout_seconds``.

    Idempotent; a no-op when tracing is off. ``False`` when the export did not finish in time
    (its daemon thread is abandoned, the process can still exit). The SDK's own exit hook is
    off: its wait is unbounded (30 s per processor against a dead collector).
    """
    global _configured, _shut_down
    with _lock:
        configured, _configured = _configured, None
        if configured is None:
            return True
        _shut_down = True
    finished = _bounded(configured.provider.shutdown, timeout_seconds)
    if not finished:
        logger.warning(
            "tracing: spans not exported to %s within %.0f s; dropped",
            _safe(configured.endpoint),
            timeout_seconds,
        )
    return finished


def _build(
    url: str,
    service_name: str | None,
    sampler_ratio: float | None,
    headers: Mapping[str, str] | None,
) -> _Configured:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    sampler = None if sampler_ratio is None else ParentBased(TraceIdRatioBased(sampler_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=url, headers=dict(headers) if headers is not None else None)
    )
    provider.add_span_processor(processor)
    return _Configured(provider, processor, url)


def _endpoint_from_env(env: Mapping[str, str]) -> str | None:
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not (traces or base):
        return None
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "none":
        return None
    problem = None
    if exporter != "otlp":
        problem = f"OTEL_TRACES_EXPORTER={exporter!r} is not supported (only otlp)"
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    ) or "http/protobuf"
    if problem is None and protocol.strip().lower() != "http/protobuf":
        problem = f"OTLP protocol {protocol!r} is not supported (only http/protobuf)"
    if problem is None:
        try:
            url = _checked(traces) if traces else _checked(base).rstrip("/") + TRACES_PATH
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        logger.warning("tracing not started: %s", problem)
        return None
    return url


def _traces_url(endpoint: str) -> str:
    """An explicit endpoint: the traces URL, or a bare ``scheme://host:port`` + /v1/traces."""
    url = _checked(endpoint.strip())
    return url.rstrip("/") + TRACES_PATH if urlsplit(url).path in ("", "/") else url


def _checked(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"the OTLP endpoint is not a valid URL: {_safe(url)!r}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the OTLP endpoint must be an http(s) URL, got {_safe(url)!r}")
    return url


def _safe(url: str) -> str:
    """``url`` without user info or query, for logs (an endpoint may carry a key)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a malformed port
        return "<malformed URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _bounded(action: Callable[[], object], timeout_seconds: float) -> bool:
    """Run ``action`` on a daemon thread and wait at most ``timeout_seconds`` for it."""
    done = threading.Event()

    def run() -> None:
        try:
            action()
        except Exception:  # an exporter failure must not fail the runbook that ends here
            logger.exception("tracing: export at shutdown failed")
        finally:
            done.set()

    threading.Thread(target=run, name="runbooks-tracing-flush", daemon=True).start()
    return done.wait(timeout_seconds)
