"""Trace context across message queues: inject into a message's headers, extract on the other side.

The recipe's ``inject_trace_context`` builds a ``TraceContextTextMapPropagator`` by hand, which
drops ``baggage`` and ignores ``OTEL_PROPAGATORS``, and publishes from whatever span is current,
so the trace shows no send at all. Here:

- the **globally configured propagators** are used (``tracecontext,baggage`` by default, or what
  ``OTEL_PROPAGATORS`` names), the same ones the HTTP layer uses;
- :func:`producer_span` opens a PRODUCER span for the send and injects *its* context, so the
  consumer's span points at the send, not at whatever happened to be current;
- :func:`consumer_span` opens a CONSUMER span for processing one message. Its parent is the
  message's context by default (one message, one processing: the trace continues across the
  queue); ``parent="current"`` keeps the consumer's own context (a batch loop with a span of its
  own). Either way it *links* to the message's context: the messaging conventions require the
  link (a batch has many creators; a parent can be only one), the parent is optional;
- headers are looked up case-insensitively and ``bytes`` values are decoded, so AMQP header
  tables and Kafka headers (``dict(message.headers())``) work as they come. Other carriers
  (SQS message attributes ``{"traceparent": {"StringValue": ...}}``) flatten to a dict first.

Attributes follow the OpenTelemetry messaging conventions (``messaging.system``,
``messaging.destination.name``, ``messaging.operation.type`` / ``.name``); span names are
``"send <destination>"`` and ``"process <destination>"``. Without a configured TracerProvider
every span is the API's no-op one; the context still flows (a consumer span then carries the
message's context, so logs correlate) and nothing is recorded. No Prefect, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Literal

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, TracerProvider

TRACER_NAME = "runbooks.propagation"


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write the trace context of ``context`` (default: the current one) into ``headers``.

    Writes nothing when there is no valid span (no fresh id is made up: a consumer would take
    it for a real parent) except baggage, which travels on its own.
    """
    propagate.inject(headers, context=context)


def extract(headers: Mapping[str, str | bytes] | None) -> Context:
    """The context a message carries (an empty one when it carries none or a malformed one)."""
    return propagate.extract(_normalised(headers))


def message_span_context(headers: Mapping[str, str | bytes] | None) -> trace.SpanContext:
    """The span context of the message's creator (invalid when it carries none)."""
    return trace.get_current_span(extract(headers)).get_span_context()


@contextmanager
def producer_span(
    name: str,
    headers: MutableMapping[str, str],
    *,
    system: str | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Iterator[Span]:
    """A PRODUCER span around sending one message to ``name`` (a queue or topic), whose context
    is injected into ``headers`` before the body runs: send the message inside the block.

    ``system`` is ``messaging.system`` (``kafka``, ``rabbitmq``, ``aws_sqs``...).
    """
    tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
    with tracer.start_as_current_span(
        f"send {name}",
        kind=SpanKind.PRODUCER,
        attributes=_attributes(name, "send", system, attributes),
    ) as span:
        inject(headers)
        yield span


@contextmanager
def consumer_span(
    name: str,
    headers: Mapping[str, str | bytes] | None,
    *,
    parent: Literal["message", "current"] = "message",
    system: str | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Iterator[Span]:
    """A CONSUMER span, current while the block processes one message received from ``name``.

    ``parent="message"``: the message's context is the parent (when it carries one; else the
    current span is, or none). ``parent="current"``: the current span is. Either way the span
    links to the message's creator, and the message's baggage is current inside the block.
    """
    if parent not in ("message", "current"):
        raise ValueError(f"parent must be 'message' or 'current', got {parent!r}")
    message = extract(headers)
    creator = trace.get_current_span(message).get_span_context()
    links = [Link(creator)] if creator.is_valid else []
    if parent == "message" and creator.is_valid:
        scope = message
    else:  # the current span stays the parent; the message's baggage joins the current one
        scope = otel_context.get_current()
        for key, value in baggage.get_all(message).items():
            scope = baggage.set_baggage(key, value, scope)
    tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
    token = otel_context.attach(scope)  # so the block sees the baggage, not only the span
    try:
        with tracer.start_as_current_span(
            f"process {name}",
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=_attributes(name, "process", system, attributes),
        ) as span:
            yield span
    finally:
        otel_context.detach(token)


def _attributes(
    destination: str,
    operation: str,
    system: str | None,
    extra: Mapping[str, str | int | float | bool] | None,
) -> dict[str, str | int | float | bool]:
    attributes: dict[str, str | int | float | bool] = {
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    if system:
        attributes["messaging.system"] = system
    attributes.update(extra or {})
    return attributes


def _normalised(headers: Mapping[str, str | bytes] | None) -> dict[str, str]:
    """Lower-case names (the propagators look up ``traceparent``), ``str`` values."""
    normalised: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                continue  # not a text header: no trace context in it
        normalised[str(name).lower()] = str(value)
    return normalised
