"""An httpx transport that applies the resilience layer, so any ``httpx.Client`` gets it.

httpx's own seam for I/O is the transport; wrapping it (rather than subclassing the client or
decorating call sites) means every request of a client, whoever makes it, gets correlation
headers, the breaker, bounded full-jitter retries and the budget, and tests can put any
transport underneath (``httpx.MockTransport`` or a real one to a loopback server).

Which requests are retried: transient outcomes (connect errors, timeouts, the policy's
``retry_statuses``: 429, 502, 503, 504) of idempotent methods. A POST or PATCH is retried only
when the caller opts in, by sending an ``Idempotency-Key`` header (the server can then dedupe) or
the request extension ``{"retry_non_idempotent": True}``; any request opts out with
``{"no_retry": True}`` (a health probe, whose single answer is the measurement). The last
response is returned as is (a final 503 stays a 503 for the caller's ``raise_for_status``); the
last transport error is raised; an open breaker raises
:class:`runbooks.errors.CircuitOpenError` without calling.

Tracing: when a TracerProvider is configured (:func:`runbooks.telemetry.configure_tracing`),
each *logical* request gets one CLIENT span, a child of the current span (inside a Prefect run:
the task or flow run's span), with the stable HTTP semantic-convention attributes
(``http.request.method``, ``url.full`` with credentials and token-like query values redacted,
``server.address``, ``server.port``, ``http.response.status_code``, ``error.type``) and status
ERROR on a final 5xx or a transport error. A 4xx is left UNSET: the caller decides what a 404
means, as the breaker does (OpenTelemetry's HTTP conventions would mark it ERROR on a client).
``traceparent`` is injected from that span, so the server's span is its child; every attempt
carries the same ``traceparent`` and ``X-Request-ID``. Retries are *events* on the span
(``http.attempt``, one per failed attempt, with ``http.request.resend_count`` and the status or
``error.type``), and the span carries ``http.request.resend_count`` when it was retried. Why not
a span per attempt (as the conventions suggest for resends): the services' traces then show one
call per logical request, the dependency map counts calls rather than attempts, and the events'
timestamps show the backoff waits anyway. The span ends when the response headers are in (a
streamed body is read later, outside it), like OpenTelemetry's httpx instrumentation.

No span is started (and ``traceparent`` is as before: the current context's, else a fresh
unsampled one) when no TracerProvider is configured (the API's proxy, checked per request: one
dict lookup); when there is no current span to join: a one-span trace per call says nothing,
and load generators (the retry-storm drill, request drivers outside runs) would flood the
exporter with them; when instrumentation is suppressed in the current context (as the SDK's
exporters do); or when the request already carries a ``traceparent``: its caller owns the
client span (the sandbox's shop opens its own) and a second one would be a duplicate.

``{"no_trace_context": True}`` sends no trace context at all (``X-Request-ID`` only) and starts
no span: the service's own head sampler then decides, as for an outside client's request. That
is what measuring a service's sampling ratio needs: a ``parentbased_*`` sampler follows our
sampled (traced run) or unsampled (fresh) parent instead of its ratio.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import httpx

from runbooks.errors import parse_retry_after
from runbooks.resilience.engine import SUCCESS, Resilience, Verdict, default_resilience
from runbooks.resilience.headers import REQUEST_ID, correlation_headers

OPT_IN_EXTENSION = "retry_non_idempotent"
NO_RETRY_EXTENSION = "no_retry"  # e.g. a health probe: one answer per probe is the measurement
NO_TRACE_CONTEXT_EXTENSION = "no_trace_context"  # the service's own head sampler decides
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class ResilientTransport(httpx.BaseTransport):
    """Wraps ``transport`` (default: ``httpx.HTTPTransport(retries=0)``) with the layer.

    ``target`` names the dependency whose budget and breaker apply (default: the request's
    ``host:port``, so one transport may serve several hosts).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        resilience: Resilience | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self._target = target
        self._resilience = resilience
        self._transport = transport or httpx.HTTPTransport(retries=0)

    @property
    def resilience(self) -> Resilience:
        return self._resilience or default_resilience()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        span = _start_client_span(request)
        if span is None:
            return self._send(request, None)
        try:
            response = self._send(request, span)
        except BaseException as exc:
            _end_with_error(span, exc)
            raise
        _end_with_response(span, response)
        return response

    def _send(self, request: httpx.Request, span: Any) -> httpx.Response:
        context = _span_context(span) if span is not None else None
        added = correlation_headers(request.headers, context=context)
        if request.extensions.get(NO_TRACE_CONTEXT_EXTENSION):
            added = {k: v for k, v in added.items() if k == REQUEST_ID}
        request.headers.update(added)
        layer = self.resilience
        idempotent = not request.extensions.get(NO_RETRY_EXTENSION) and (
            request.method.upper() in layer.policy.idempotent_methods
            or "idempotency-key" in request.headers
            or bool(request.extensions.get(OPT_IN_EXTENSION))
        )
        if idempotent:
            request.read()  # a streamed body could not be sent twice
        target = self._target or f"{request.url.host}:{request.url.port or _default_port(request)}"
        retry_statuses = layer.policy.retry_statuses
        send: Callable[[], httpx.Response] = functools.partial(
            self._transport.handle_request, request
        )
        if span is not None:
            send = _AttemptRecorder(span, send)
        return layer.call(
            target,
            send,
            judge_result=lambda response: _judge_response(response, retry_statuses),
            judge_error=_judge_error,
            idempotent=idempotent,
            discard=_close,
        )

    def close(self) -> None:
        self._transport.close()


def _judge_response(response: httpx.Response, retry_statuses: frozenset[int]) -> Verdict:
    status = response.status_code
    if status < 500 and status != 429:
        return SUCCESS
    return Verdict(
        failure=True,
        retryable=status in retry_statuses,
        retry_after_seconds=parse_retry_after(response.headers.get("retry-after")),
    )


def _judge_error(exc: Exception) -> Verdict:
    if isinstance(exc, _TRANSIENT_ERRORS):
        return Verdict(failure=True, retryable=True)
    # a bug on our side (bad URL, local protocol error) says nothing about the target
    return Verdict(failure=False, retryable=False)


_DRAIN_LIMIT = 64 * 1024


def _close(response: httpx.Response) -> None:
    """Drain a small body first, so the keep-alive connection goes back to the pool (urllib3
    and requests do the same before a retry); a large or unknown-length one is just closed,
    which costs a reconnect, not a download."""
    try:
        if int(response.headers.get("content-length") or _DRAIN_LIMIT + 1) <= _DRAIN_LIMIT:
            response.read()
    except (httpx.HTTPError, ValueError):
        pass  # the connection is closed below either way
    finally:
        response.close()


def _default_port(request: httpx.Request) -> int:
    return 443 if request.url.scheme == "https" else 80


# -- tracing -------------------------------------------------------------------------------------

_TRACER_NAME = "runbooks.resilience"
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
# query parameters whose values are credentials: the conventions' list (AWSAccessKeyId,
# Signature, sig, X-Goog-Signature) and the usual token / key / password names
_SECRET_PARAM = re.compile(
    r"token|secret|passw|pwd|signature|^sig$|key|auth|credential|session|^code$", re.IGNORECASE
)
_REDACTED = "REDACTED"
_tracer_cache: tuple[object, Any] | None = None


def _tracer() -> Any:
    """The tracer of the configured TracerProvider, or ``None`` when none is configured."""
    global _tracer_cache
    try:
        from opentelemetry import trace
    except ImportError:  # the API is optional for the sandbox's small pods
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    cached = _tracer_cache
    if cached is None or cached[0] is not provider:  # a provider replaced (tests) is followed
        cached = _tracer_cache = (provider, provider.get_tracer(_TRACER_NAME))
    return cached[1]


def _start_client_span(request: httpx.Request) -> Any:
    if "traceparent" in request.headers or request.extensions.get(NO_TRACE_CONTEXT_EXTENSION):
        return None  # the caller propagates its own context (or none): no span of ours
    tracer = _tracer()
    if tracer is None:
        return None
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    if otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY) or (
        otel_context.get_value(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY)
    ):
        return None  # the key the SDK's exporters and OpenTelemetry instrumentations set
    if not trace.get_current_span().get_span_context().is_valid:
        return None  # no trace to join (see the module docstring)
    method = request.method.upper()
    known = method in _KNOWN_METHODS
    url = request.url
    attributes: dict[str, str | int] = {
        "http.request.method": method if known else "_OTHER",
        "url.full": redact_url(url),
        "server.address": url.host,
        "server.port": url.port or _default_port(request),
    }
    if not known:
        attributes["http.request.method_original"] = request.method
    return tracer.start_span(
        method if known else "HTTP", kind=trace.SpanKind.CLIENT, attributes=attributes
    )


def _span_context(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


class _AttemptRecorder:
    """Counts attempts and records each failed one as an event on the request's span."""

    def __init__(self, span: Any, send: Callable[[], httpx.Response]):
        self.span = span
        self.attempts = 0
        self._send = send

    def __call__(self) -> httpx.Response:
        self.attempts += 1
        if self.attempts > 1:
            self.span.set_attribute("http.request.resend_count", self.attempts - 1)
        try:
            response = self._send()
        except Exception as exc:
            self._event({"error.type": _error_type(exc)})
            raise
        if response.status_code >= 500 or response.status_code == 429:
            self._event({"http.response.status_code": response.status_code})
        return response

    def _event(self, attributes: dict[str, str | int]) -> None:
        self.span.add_event(
            "http.attempt", {"http.request.resend_count": self.attempts - 1, **attributes}
        )


def _end_with_response(span: Any, response: httpx.Response) -> None:
    status = response.status_code
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def _end_with_error(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    kind = _error_type(exc)
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))  # not str(exc): it may quote a URL
    span.end()


def _error_type(exc: BaseException) -> str:
    """The exception's fully qualified class name, as the conventions ask for ``error.type``."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"


def redact_url(url: httpx.URL) -> str:
    """``url`` for a span: user info and the values of token-like query parameters redacted.

    Follows the HTTP conventions for ``url.full`` (``REDACTED`` in place of credentials); the
    fragment is never sent, so it is dropped.
    """
    if url.userinfo:
        url = url.copy_with(username=_REDACTED, password=_REDACTED)
    query = url.query.decode("ascii", "replace")
    if query:
        parts = []
        for part in query.split("&"):
            name, sep, _ = part.partition("=")
            parts.append(f"{name}={_REDACTED}" if sep and _SECRET_PARAM.search(name) else part)
        url = url.copy_with(query="&".join(parts).encode("ascii", "replace"))
    return str(url.copy_with(fragment=None))
