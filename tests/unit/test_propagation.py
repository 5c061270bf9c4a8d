"""Message-queue propagation: a context round-trips through a headers dict, spans link up.

Spans are recorded by an SDK TracerProvider of the test's own, passed to the helpers as
``tracer_provider``: the process-global provider is never set here, so nothing leaks into other
tests (the global one is exercised in tests/integration/test_self_tracing.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from runbooks import propagation

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


@pytest.fixture
def recorder() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _remote_parent(sampled: bool = True) -> NonRecordingSpan:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=flags))


def test_a_context_round_trips_through_a_headers_dict() -> None:
    headers: dict[str, str] = {}
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with trace.use_span(_remote_parent()):
            propagation.inject(headers)
    finally:
        otel_context.detach(token)
    assert headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert headers["baggage"] == "tenant=acme"

    context = propagation.extract(headers)
    span_context = trace.get_current_span(context).get_span_context()
    assert (span_context.trace_id, span_context.span_id) == (TRACE_ID, SPAN_ID)
    assert span_context.is_remote
    assert span_context.trace_flags.sampled
    assert baggage.get_baggage("tenant", context) == "acme"


def test_extract_reads_any_case_and_bytes_as_brokers_deliver_them() -> None:
    kafka_like = {
        "Traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "content-type": b"\xff\xfe not text",
    }
    span_context = propagation.message_span_context(kafka_like)
    assert span_context.is_valid
    assert span_context.trace_id == TRACE_ID
    assert not span_context.trace_flags.sampled


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"},
    ],
)
def test_a_message_without_a_valid_context_extracts_to_none(headers) -> None:
    assert not propagation.message_span_context(headers).is_valid


def test_inject_without_a_span_writes_no_made_up_parent() -> None:
    headers: dict[str, str] = {}
    propagation.inject(headers)
    assert "traceparent" not in headers


def test_producer_then_consumer_continues_the_trace_across_the_queue(recorder) -> None:
    provider, exporter = recorder
    headers: dict[str, str] = {}
    with (
        trace.use_span(_remote_parent()),
        propagation.producer_span(
            "orders", headers, system="rabbitmq", tracer_provider=provider
        ) as sent,
    ):
        pass  # publish(message, headers) here
    # ... the message crosses the broker; headers arrive as the consumer's carrier
    with propagation.consumer_span(
        "orders", headers, system="rabbitmq", tracer_provider=provider
    ) as processing:
        assert trace.get_current_span() is processing

    producer, consumer = exporter.get_finished_spans()
    assert producer.name == "send orders"
    assert producer.kind is SpanKind.PRODUCER
    assert producer.parent.span_id == SPAN_ID
    sent_context = sent.get_span_context()
    assert headers["traceparent"] == (
        f"00-{sent_context.trace_id:032x}-{sent_context.span_id:016x}-01"
    )
    assert consumer.name == "process orders"
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == TRACE_ID
    assert consumer.parent.span_id == producer.context.span_id  # parented from the message
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    assert dict(consumer.attributes) == {
        "messaging.destination.name": "orders",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.system": "rabbitmq",
    }
    assert processing.get_span_context().trace_id == TRACE_ID


def test_a_consumer_in_its_own_span_links_to_the_message_and_gets_its_baggage(
    recorder,
) -> None:
    provider, exporter = recorder
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "baggage": "tenant=acme",
    }
    loop_tracer = provider.get_tracer("test")
    with (
        loop_tracer.start_as_current_span("poll batch") as poll,
        propagation.consumer_span("orders", headers, parent="current", tracer_provider=provider),
    ):
        assert baggage.get_baggage("tenant") == "acme"
    assert baggage.get_baggage("tenant") is None  # detached after the block
    consumer = next(s for s in exporter.get_finished_spans() if s.name == "process orders")
    assert consumer.parent.span_id == poll.get_span_context().span_id
    assert consumer.context.trace_id != TRACE_ID
    assert [(link.context.trace_id, link.context.span_id) for link in consumer.links] == [
        (TRACE_ID, SPAN_ID)
    ]


def test_a_message_without_context_is_processed_under_the_current_span(recorder) -> None:
    provider, exporter = recorder
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("worker") as worker,
        propagation.consumer_span("orders", {}, tracer_provider=provider),
    ):
        pass
    consumer = next(s for s in exporter.get_finished_spans() if s.name == "process orders")
    assert consumer.parent.span_id == worker.get_span_context().span_id
    assert consumer.links == ()


def test_without_a_tracer_provider_the_context_still_flows() -> None:
    """The API's no-op tracer: nothing recorded, but the block runs in the message's context."""
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with propagation.consumer_span("orders", headers) as span:
        assert not span.is_recording()
        assert trace.get_current_span().get_span_context().trace_id == TRACE_ID


def test_an_unknown_parent_choice_is_refused() -> None:
    with (
        pytest.raises(ValueError, match="parent must be"),
        propagation.consumer_span("orders", {}, parent="producer"),  # type: ignore[arg-type]
    ):
        pass
