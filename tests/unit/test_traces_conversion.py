"""``tasks.traces.spans_from_otlp_json``: the one conversion from a backend's OTLP/JSON to
``decisions.spans.Span``, over the variants real senders write."""

from __future__ import annotations

import pytest

from decisions.spans import SpanKind, SpanStatus
from tasks.traces import spans_from_otlp_json

TRACE = "5b8efff798038103d269b633813fc60c"


def document(span: dict, resource: list | None = None) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": resource
                    if resource is not None
                    else [{"key": "service.name", "value": {"stringValue": "shop"}}]
                },
                "scopeSpans": [{"scope": {"name": "s"}, "spans": [span]}],
            }
        ]
    }


def span(**fields: object) -> dict:
    return {
        "traceId": TRACE,
        "spanId": "eee19b7ec3c1b173",
        "name": "GET /",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000250000000",
        **fields,
    }


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (2, SpanKind.SERVER),
        ("SPAN_KIND_CLIENT", SpanKind.CLIENT),
        (0, SpanKind.UNSPECIFIED),
        (None, SpanKind.UNSPECIFIED),
        (42, SpanKind.UNSPECIFIED),
        ("span_kind_consumer", SpanKind.CONSUMER),
    ],
)
def test_kinds_by_number_or_name(kind: object, expected: SpanKind) -> None:
    fields = {} if kind is None else {"kind": kind}
    assert spans_from_otlp_json(document(span(**fields)))[0].kind is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"code": 2}, SpanStatus.ERROR),
        ({"code": "STATUS_CODE_OK"}, SpanStatus.OK),
        ({}, SpanStatus.UNSET),
        (None, SpanStatus.UNSET),
    ],
)
def test_statuses_by_number_or_name(status: object, expected: SpanStatus) -> None:
    fields = {} if status is None else {"status": status}
    assert spans_from_otlp_json(document(span(**fields)))[0].status is expected


def test_fields_times_and_parent() -> None:
    (converted,) = spans_from_otlp_json(document(span(parentSpanId="0102030405060708")))
    assert converted.trace_id == TRACE
    assert converted.parent_span_id == "0102030405060708"
    assert converted.service == "shop"
    assert converted.start_ns == 1_700_000_000_000_000_000
    assert converted.duration_ms == 250.0
    (root,) = spans_from_otlp_json(document(span(parentSpanId="")))
    assert root.parent_span_id is None


def test_original_field_names_numbers_and_base64_ids() -> None:
    raw = {
        "trace_id": "W47/95gDgQPSabYzgT/GDA==",  # protobuf's own JSON mapping: base64
        "span_id": "7uGbfsPBsXM=",
        "name": "x",
        "start_time_unix_nano": 5,
        "end_time_unix_nano": 6,
    }
    (converted,) = spans_from_otlp_json({"resource_spans": [{"scope_spans": [{"spans": [raw]}]}]})
    assert converted.trace_id == TRACE
    assert converted.span_id == "eee19b7ec3c1b173"
    assert converted.service == "unknown_service"


def test_attribute_values() -> None:
    attributes = [
        {"key": "s", "value": {"stringValue": "a"}},
        {"key": "i", "value": {"intValue": "9007199254740993"}},
        {"key": "d", "value": {"doubleValue": 0.5}},
        {"key": "b", "value": {"boolValue": True}},
        {
            "key": "arr",
            "value": {
                "arrayValue": {
                    "values": [{"stringValue": "x"}, {"intValue": 2}, {"boolValue": False}]
                }
            },
        },
        {
            "key": "kv",
            "value": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "1"}}]}},
        },
        {"key": "empty", "value": {}},
        {"key": "nan", "value": {"doubleValue": "NaN"}},
    ]
    (converted,) = spans_from_otlp_json(document(span(attributes=attributes)))
    values = dict(converted.attributes)
    nan = values.pop("nan")
    assert nan != nan  # NaN, as carried
    assert values == {
        "s": "a",
        "i": 9007199254740993,
        "d": 0.5,
        "b": True,
        "arr": "x,2,false",
        "kv": '{"k":1}',
    }


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"traceId": "xyz"}, "not 32 hex"),
        ({"spanId": "00" * 8}, "not all zero"),
        ({"endTimeUnixNano": "1"}, "before it starts"),
        ({"traceId": 7}, "not a string"),
    ],
)
def test_unreadable_spans_are_named(fields: dict, says: str) -> None:
    with pytest.raises(ValueError, match="span 'GET /' of 'shop' cannot be read") as caught:
        spans_from_otlp_json(document(span(**fields)))
    assert says in str(caught.value)


def test_empty_documents_have_no_spans() -> None:
    assert spans_from_otlp_json({}) == []
    assert spans_from_otlp_json({"resourceSpans": []}) == []
