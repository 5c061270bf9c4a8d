"""The spans of the sandbox's trace backend: in memory, thread-safe, bounded, indexed.

Why this shape:
- traces are kept in an insertion-ordered map from trace id to its spans, moved to the end
  whenever one of their spans arrives: when the bound (:data:`DEFAULT_MAX_SPANS` spans) is
  passed, whole traces are evicted from the front, the ones written to least recently, so a
  trace still being written is never cut in half while older ones remain;
- per service, the traces holding its spans and the operations it reported (counted, so an
  eviction removes an operation or a service when its last span goes), which are what the query
  API asks for: services, operations of a service, traces of a service in a time window;
- spans keep their protobuf message and the resource and scope they came with, so a trace is
  answered as the OTLP it was exported as; a re-sent span (an exporter's retry after a lost
  answer) replaces the copy with the same id instead of doubling it;
- one lock: ingest and queries are short, and nothing blocks while holding it.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, TracesData

DEFAULT_MAX_SPANS = 200_000
UNKNOWN_SERVICE = "unknown_service"  # the SDKs' default service.name
SPAN_KINDS = {0: "", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True, slots=True)
class StoredSpan:
    service: str
    resource: Resource
    scope: InstrumentationScope
    span: Span

    @property
    def kind(self) -> str:
        return SPAN_KINDS.get(self.span.kind, "")


@dataclass(frozen=True, slots=True)
class Ingested:
    accepted: int
    rejected: int
    message: str = ""


class TraceStore:
    """``add`` an export request; ask for ``services``, ``operations``, ``find``, ``get``."""

    def __init__(self, max_spans: int = DEFAULT_MAX_SPANS):
        if max_spans < 1:
            raise ValueError(f"max_spans must be >= 1, got {max_spans}")
        self.max_spans = max_spans
        self._lock = threading.Lock()
        self._traces: OrderedDict[bytes, dict[bytes, StoredSpan]] = OrderedDict()
        self._spans = 0
        self._by_service: dict[str, Counter[bytes]] = {}
        self._operations: dict[str, Counter[tuple[str, str]]] = {}

    @property
    def span_count(self) -> int:
        with self._lock:
            return self._spans

    @property
    def trace_count(self) -> int:
        with self._lock:
            return len(self._traces)

    def add(self, request: ExportTraceServiceRequest) -> Ingested:
        """Store every valid span of ``request``; spans with malformed ids are rejected."""
        accepted, rejected, problem = 0, 0, ""
        with self._lock:
            for resource_spans in request.resource_spans:
                service = _service_name(resource_spans)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        problem_here = _id_problem(span)
                        if problem_here:
                            rejected += 1
                            problem = problem or problem_here
                            continue
                        resource, scope = resource_spans.resource, scope_spans.scope
                        self._put(StoredSpan(service, resource, scope, span))
                        accepted += 1
            self._evict()
        return Ingested(accepted, rejected, problem)

    def services(self) -> list[str]:
        with self._lock:
            return sorted(self._by_service)

    def operations(self, service: str, span_kind: str = "") -> list[tuple[str, str]]:
        """(name, kind) of each operation ``service`` reported, sorted; ``span_kind`` filters."""
        with self._lock:
            found = self._operations.get(service, Counter())
            return sorted(op for op in found if not span_kind or op[1] == span_kind)

    def find(
        self,
        service: str,
        *,
        start_min_ns: int,
        start_max_ns: int,
        operation: str = "",
        duration_min_ns: int | None = None,
        duration_max_ns: int | None = None,
        limit: int = 20,
    ) -> list[list[StoredSpan]]:
        """Whole traces having a span of ``service`` (and ``operation``) that started in
        ``[start_min_ns, start_max_ns)`` and lasted within the bounds; latest match first."""
        with self._lock:
            ranked: list[tuple[int, bytes]] = []
            for trace_id in self._by_service.get(service, Counter()):
                latest = None
                for stored in self._traces[trace_id].values():
                    span = stored.span
                    duration = span.end_time_unix_nano - span.start_time_unix_nano
                    if (
                        stored.service == service
                        and start_min_ns <= span.start_time_unix_nano < start_max_ns
                        and (not operation or span.name == operation)
                        and (duration_min_ns is None or duration >= duration_min_ns)
                        and (duration_max_ns is None or duration <= duration_max_ns)
                    ):
                        latest = max(latest or 0, span.start_time_unix_nano)
                if latest is not None:
                    ranked.append((latest, trace_id))
            ranked.sort(reverse=True)
            return [_ordered(self._traces[trace_id]) for _, trace_id in ranked[: max(limit, 0)]]

    def get(self, trace_id: bytes) -> list[StoredSpan]:
        """The spans of one trace, by start time; empty when the store does not hold it."""
        with self._lock:
            spans = self._traces.get(trace_id)
            return _ordered(spans) if spans else []

    def clear(self) -> None:
        with self._lock:
            self._traces.clear()
            self._by_service.clear()
            self._operations.clear()
            self._spans = 0

    # -- under the lock -----------------------------------------------------------------------

    def _put(self, stored: StoredSpan) -> None:
        span = stored.span
        spans = self._traces.get(span.trace_id)
        if spans is None:
            spans = self._traces[span.trace_id] = {}
        else:
            self._traces.move_to_end(span.trace_id)
        previous = spans.get(span.span_id)
        if previous is not None:
            self._forget(span.trace_id, previous)
        spans[span.span_id] = stored
        self._spans += 1
        self._by_service.setdefault(stored.service, Counter())[span.trace_id] += 1
        self._operations.setdefault(stored.service, Counter())[(span.name, stored.kind)] += 1

    def _evict(self) -> None:
        while self._spans > self.max_spans and self._traces:
            trace_id, spans = self._traces.popitem(last=False)
            for stored in spans.values():
                self._forget(trace_id, stored)

    def _forget(self, trace_id: bytes, stored: StoredSpan) -> None:
        self._spans -= 1
        _decrement(self._by_service, stored.service, trace_id)
        _decrement(self._operations, stored.service, (stored.span.name, stored.kind))


def traces_data(spans: list[StoredSpan]) -> TracesData:
    """OTLP ``TracesData`` of ``spans``, one ``ResourceSpans`` per (resource, scope) seen."""
    data = TracesData()
    groups: dict[tuple[bytes, bytes], ResourceSpans] = {}
    keys: dict[int, bytes] = {}
    for stored in spans:
        resource_key = keys.get(id(stored.resource))
        if resource_key is None:
            resource_key = keys[id(stored.resource)] = stored.resource.SerializeToString(
                deterministic=True
            )
        scope_key = stored.scope.SerializeToString(deterministic=True)
        group = groups.get((resource_key, scope_key))
        if group is None:
            group = groups[(resource_key, scope_key)] = data.resource_spans.add()
            group.resource.CopyFrom(stored.resource)
            group.scope_spans.add().scope.CopyFrom(stored.scope)
        group.scope_spans[0].spans.append(stored.span)
    return data


def _service_name(resource_spans: ResourceSpans) -> str:
    for attribute in resource_spans.resource.attributes:
        if attribute.key == "service.name" and attribute.value.string_value:
            return attribute.value.string_value
    return UNKNOWN_SERVICE


def _id_problem(span: Span) -> str:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return f"span {span.name!r}: traceId must be 16 bytes, not all zero"
    if len(span.span_id) != 8 or not any(span.span_id):
        return f"span {span.name!r}: spanId must be 8 bytes, not all zero"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return f"span {span.name!r}: parentSpanId must be empty or 8 bytes"
    return ""


def _ordered(spans: dict[bytes, StoredSpan]) -> list[StoredSpan]:
    return sorted(spans.values(), key=lambda stored: stored.span.start_time_unix_nano)


def _decrement(index: dict, service: str, key: object) -> None:
    counts = index.get(service)
    if counts is None:
        return
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
    if not counts:
        del index[service]
