"""Reading traces from a trace backend (``TraceBackend`` block) as ``decisions.spans.Span``.

Tasks, each one GET on the backend's query API:
- :func:`list_services` — the services that reported spans;
- :func:`list_operations` — the operation (span) names of one service;
- :func:`find_traces` — whole traces holding a span of a service that started in a window,
  newest first, spans in start order;
- :func:`get_trace` — one trace by id;
- :func:`spans_of` — the spans of one service in the traces of a window (a coverage check).

Why it is built this way:
- each API the block may name (``jaeger-v3`` today) has one small reader here, and every
  answer becomes :class:`~decisions.spans.Span` through :func:`spans_from_otlp_json`, the one
  conversion: the runbook's dependency map, latency attribution and coverage never see a
  backend's format. OTLP/JSON is read as its specification writes it and as protobuf's JSON
  mapping does (hex ids, enums as integers or names, 64-bit integers as strings or numbers,
  lowerCamelCase or original field names);
- "no traces" is an empty tuple, never an error: Jaeger answers a search that found nothing
  with 404 and its error body ``{"error": {"message": "No traces found"}}``; a 404 without that
  body means the URL is not a Jaeger query API, which is ``NotFoundError`` saying so. An unknown
  trace id is ``NotFoundError`` (it may not be exported yet, sampled out, or evicted);
- errors follow ``runbooks.errors``: transport errors, timeouts and 5xx are ``UnavailableError``
  (the block's resilient client already retried the idempotent GET: one retry layer), a
  parameter the backend refuses is ``InvalidRequestError`` with the backend's own sentence,
  bad input is refused before any call.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from blocks.traces import TraceBackend
from decisions.spans import Span, SpanKind, SpanStatus
from runbooks.errors import (
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    from_httpx,
    from_status,
)
from tasks._http import json_object

MAX_LIMIT = 1000
UNKNOWN_SERVICE = "unknown_service"

_KINDS = [
    SpanKind.UNSPECIFIED,
    SpanKind.INTERNAL,
    SpanKind.SERVER,
    SpanKind.CLIENT,
    SpanKind.PRODUCER,
    SpanKind.CONSUMER,
]
_KIND_NAMES = {f"SPAN_KIND_{kind.name}": kind for kind in _KINDS}
_STATUSES = [SpanStatus.UNSET, SpanStatus.OK, SpanStatus.ERROR]
_STATUS_NAMES = {f"STATUS_CODE_{status.name}": status for status in _STATUSES}


@task(name="list-trace-services", cache_policy=NO_CACHE)
def list_services(backend: TraceBackend) -> tuple[str, ...]:
    """The services the backend holds spans of, sorted."""
    document = _get(backend, "/api/v3/services", {}, "list the services of")
    services = document.get("services", [])  # protobuf JSON leaves an empty list out
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise _not_the_api(backend, "list the services of", "no 'services' list")
    return tuple(sorted(services))


@task(name="list-trace-operations", cache_policy=NO_CACHE)
def list_operations(backend: TraceBackend, service: str) -> tuple[str, ...]:
    """The operation names ``service`` reported (each once, sorted); empty when none."""
    service = _service(service)
    action = f"list the operations of {service!r} in"
    document = _get(backend, "/api/v3/operations", {"service": service}, action)
    operations = document.get("operations")
    if operations is None:  # protobuf JSON leaves an empty list out
        return ()
    if not isinstance(operations, list):
        raise _not_the_api(backend, action, "no 'operations' list")
    names = {op.get("name") for op in operations if isinstance(op, dict)}
    return tuple(sorted(name for name in names if isinstance(name, str) and name))


@task(name="find-traces", cache_policy=NO_CACHE)
def find_traces(
    backend: TraceBackend,
    service: str,
    *,
    start: datetime,
    end: datetime,
    limit: int = 20,
    operation: str | None = None,
) -> tuple[tuple[Span, ...], ...]:
    """Traces with a span of ``service`` (named ``operation``, if given) that started in
    ``[start, end)``: at most ``limit``, newest first, each trace's spans in start order
    (whole traces, every service's spans). An empty tuple when there are none."""
    return _find(backend, service, start=start, end=end, limit=limit, operation=operation)


@task(name="get-trace", cache_policy=NO_CACHE)
def get_trace(backend: TraceBackend, trace_id: str) -> tuple[Span, ...]:
    """The spans of one trace (32 hex characters), in start order; ``NotFoundError`` when
    the backend does not hold it."""
    wanted = trace_id.strip().lower() if isinstance(trace_id, str) else ""
    if len(wanted) != 32 or not _is_hex(wanted) or wanted == "0" * 32:
        raise InvalidRequestError(
            f"trace_id must be 32 hex characters, not all zero, got {str(trace_id)[:40]!r}"
        )
    action = f"get trace {wanted} from"
    document = _get(backend, f"/api/v3/traces/{wanted}", {}, action, missing="trace")
    spans = [span for span in _result_spans(backend, document, action) if span.trace_id == wanted]
    if not spans:
        raise NotFoundError(
            f"trace {wanted} is not in the trace backend at {backend.base_url}; it may not be "
            "exported yet, sampled out, or evicted",
            status=404,
            target=backend.target,
        )
    return tuple(sorted(spans, key=_start_order))


@task(name="spans-of-service", cache_policy=NO_CACHE)
def spans_of(
    backend: TraceBackend, service: str, *, start: datetime, end: datetime, limit: int = 20
) -> tuple[Span, ...]:
    """The spans ``service`` itself reported that started in ``[start, end)``, from the (at
    most ``limit``) traces :func:`find_traces` finds, in start order."""
    traces = _find(backend, service, start=start, end=end, limit=limit, operation=None)
    low, high = _unix_ns(start, "start"), _unix_ns(end, "end")
    found = [
        span
        for trace in traces
        for span in trace
        if span.service == service.strip() and low <= span.start_ns < high
    ]
    return tuple(sorted(found, key=_start_order))


# -- the one conversion: OTLP/JSON -> Span -----------------------------------------------------


def spans_from_otlp_json(document: Mapping[str, Any]) -> list[Span]:
    """Every span of an OTLP/JSON ``TracesData`` (``{"resourceSpans": [...]}``) as ``Span``.

    ``service`` is the resource's ``service.name`` (``unknown_service`` without one, as the
    SDKs name it); attribute values are kept when scalar, arrays joined with ``,``, key-value
    lists written as JSON. Raises ``ValueError`` naming the span when one cannot be read.
    """
    spans = []
    for resource_spans in _list(document, "resourceSpans", "resource_spans"):
        resource = _field(resource_spans, "resource") or {}
        attributes = _attributes(_list(resource, "attributes"))
        service = attributes.get("service.name")
        service = service if isinstance(service, str) and service else UNKNOWN_SERVICE
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            for raw in _list(scope_spans, "spans"):
                spans.append(_span(raw, service))
    return spans


def _span(raw: Mapping[str, Any], service: str) -> Span:
    name = _field(raw, "name") or ""
    try:
        status = _field(raw, "status") or {}
        return Span(
            trace_id=_id(_field(raw, "traceId", "trace_id"), 16),
            span_id=_id(_field(raw, "spanId", "span_id"), 8),
            parent_span_id=_id(_field(raw, "parentSpanId", "parent_span_id"), 8) or None,
            service=service,
            name=name,
            kind=_enum(_field(raw, "kind"), _KINDS, _KIND_NAMES, SpanKind.UNSPECIFIED),
            start_ns=int(_field(raw, "startTimeUnixNano", "start_time_unix_nano") or 0),
            end_ns=int(_field(raw, "endTimeUnixNano", "end_time_unix_nano") or 0),
            status=_enum(_field(status, "code"), _STATUSES, _STATUS_NAMES, SpanStatus.UNSET),
            attributes=_attributes(_list(raw, "attributes")),
        )
    except (ValidationError, ValueError, TypeError) as exc:
        why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ValueError(f"span {str(name)[:80]!r} of {service!r} cannot be read: {why}") from exc


def _id(value: Any, size: int) -> str:
    """Hex as OTLP/JSON writes ids; base64 (protobuf's own JSON mapping) is read too."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ValueError(f"id {value!r} is not a string")
    if len(value) == 2 * size and _is_hex(value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == size:
        return raw.hex()
    raise ValueError(f"id {value[:40]!r} is not {2 * size} hex characters")


def _enum(value: Any, by_number: list, by_name: dict, default: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return by_number[value] if 0 <= value < len(by_number) else default
    if isinstance(value, str):
        return by_name.get(value.upper(), default)
    return default


def _attributes(items: Iterable[Any]) -> dict[str, str | int | float | bool]:
    attributes: dict[str, str | int | float | bool] = {}
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            continue
        value = _value(item.get("value"))
        if value is not None:
            attributes[item["key"]] = value if not isinstance(value, list | dict) else _flat(value)
    return attributes


def _value(any_value: Any) -> Any:
    """An OTLP ``AnyValue`` as Python: str, bool, int, float, list or dict; ``None`` if empty."""
    if not isinstance(any_value, Mapping):
        return None
    for key, value in any_value.items():
        if key in ("stringValue", "string_value"):
            return str(value)
        if key in ("boolValue", "bool_value"):
            return bool(value)
        if key in ("intValue", "int_value"):
            return int(value)
        if key in ("doubleValue", "double_value"):
            return float(value)  # "NaN" and "Infinity" too, as protobuf JSON writes them
        if key in ("bytesValue", "bytes_value"):
            return str(value)  # base64, as carried
        if key in ("arrayValue", "array_value"):
            return [_value(v) for v in _list(value, "values")]
        if key in ("kvlistValue", "kvlist_value"):
            return {
                kv["key"]: _value(kv.get("value"))
                for kv in _list(value, "values")
                if isinstance(kv, Mapping) and isinstance(kv.get("key"), str)
            }
    return None


def _flat(value: list | dict) -> str:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return ",".join(
        "" if v is None else _flat(v) if isinstance(v, list | dict) else _text(v) for v in value
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field(holder: Any, *names: str) -> Any:
    if isinstance(holder, Mapping):
        for name in names:
            if name in holder:
                return holder[name]
    return None


def _list(holder: Any, *names: str) -> list[Any]:
    value = _field(holder, *names)
    return value if isinstance(value, list) else []


# -- the jaeger-v3 reader ----------------------------------------------------------------------


def _find(
    backend: TraceBackend,
    service: str,
    *,
    start: datetime,
    end: datetime,
    limit: int,
    operation: str | None,
) -> tuple[tuple[Span, ...], ...]:
    service = _service(service)
    low, high = _unix_ns(start, "start"), _unix_ns(end, "end")
    if high <= low:
        raise InvalidRequestError(
            f"end ({end.isoformat()}) must be after start ({start.isoformat()})"
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    params = {
        "query.service_name": service,
        "query.start_time_min": _rfc3339(start),
        "query.start_time_max": _rfc3339(end),
        "query.num_traces": str(limit),  # Jaeger's name; newer ones also read search_depth
    }
    if operation:
        params["query.operation_name"] = operation
    action = f"find traces of {service!r} in"
    document = _get(backend, "/api/v3/traces", params, action, missing="search")
    if document is None:
        return ()
    grouped: dict[str, list[Span]] = {}
    for span in _result_spans(backend, document, action):
        grouped.setdefault(span.trace_id, []).append(span)
    traces = [tuple(sorted(spans, key=_start_order)) for spans in grouped.values()]
    traces.sort(key=lambda trace: (trace[0].start_ns, trace[0].trace_id), reverse=True)
    return tuple(traces[:limit])


def _get(
    backend: TraceBackend,
    path: str,
    params: dict[str, str],
    action: str,
    missing: str | None = None,
) -> Any:
    """The JSON object answered; ``None`` for a search that found nothing (``missing``)."""
    short, action = action, f"{action} the trace backend at {backend.base_url}"
    if backend.api != "jaeger-v3":  # pragma: no cover - the block refuses other values
        raise InvalidRequestError(f"the trace backend's api {backend.api!r} is not supported")
    try:
        with backend.get_client() as client:
            response = client.get(path, params=params)
            response.read()
    except httpx.HTTPError as exc:
        raise from_httpx(exc, action, target=backend.target) from exc
    document = json_object(response)
    if response.is_success:
        if not document and response.content.strip() != b"{}":
            raise _not_the_api(backend, short, "not a JSON object")
        return document
    error = document.get("error") if isinstance(document.get("error"), dict) else None
    said = str(error.get("message") or "") if error else ""
    if response.status_code == 404 and missing is not None and error is not None:
        return None  # Jaeger's "No traces found" / "trace not found"
    if response.status_code == 404 and error is None:
        raise NotFoundError(
            f"{action} found no such path (HTTP 404 on {path}); check that base_url is the "
            "query API's root (e.g. Jaeger's :16686) and api matches it",
            status=404,
            target=backend.target,
        )
    raise from_status(
        response.status_code,
        action,
        detail=said or response.reason_phrase,
        target=backend.target,
    )


def _result_spans(backend: TraceBackend, document: Any, action: str) -> list[Span]:
    if document is None:
        return []
    result = document.get("result")
    if not isinstance(result, dict):
        raise _not_the_api(backend, action, "no 'result' object")
    try:
        return spans_from_otlp_json(result)
    except ValueError as exc:
        raise UnavailableError(
            f"{action} the trace backend at {backend.base_url} answered a span that cannot be "
            f"read ({exc})",
            target=backend.target,
        ) from exc


def _not_the_api(backend: TraceBackend, action: str, what: str) -> UnavailableError:
    return UnavailableError(
        f"{action} the trace backend at {backend.base_url} got an answer that is not "
        f"{backend.api}'s ({what}); check base_url and api",
        target=backend.target,
    )


def _service(service: str) -> str:
    if not isinstance(service, str) or not service.strip():
        raise InvalidRequestError("service must be a non-empty service name")
    return service.strip()


def _unix_ns(when: datetime, field: str) -> int:
    if when.tzinfo is None:
        raise InvalidRequestError(
            f"{field} must be timezone-aware (e.g. datetime.now(UTC)), got {when.isoformat()}"
        )
    delta = when.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _start_order(span: Span) -> tuple[int, str]:
    return span.start_ns, span.span_id


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in text)
