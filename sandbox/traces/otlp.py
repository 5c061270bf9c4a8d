"""OTLP/HTTP bodies in and out: protobuf or OTLP/JSON, gzip or not, bounded. Pure: no sockets.

Why one decoding path: an OTLP/JSON body is turned into the same ``ExportTraceServiceRequest``
protobuf message a protobuf body decodes to, so the store sees one shape. protobuf's own JSON
mapping (``json_format``) reads the body, because it already accepts what OTLP/JSON senders
write (lowerCamelCase or original field names, enums as integers or names, 64-bit integers as
strings or numbers, unknown fields ignored); the one place OTLP/JSON departs from that mapping is
ids: ``traceId``, ``spanId`` and ``parentSpanId`` are hex, not base64 (OTLP specification,
"JSON Protobuf Encoding"), so they are converted before parsing and after rendering.

Bounds: a body over :data:`MAX_BODY_BYTES` is refused with 413 before it is read, and so is a
gzip body that inflates past it (a small bomb must not fill the memory of the sandbox).
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

MAX_BODY_BYTES = 16 * 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_INVALID_ARGUMENT = 3  # google.rpc.Code
_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


class BadRequestError(ValueError):
    """The body cannot be read as an OTLP trace export (answered 400)."""


class TooLargeError(ValueError):
    """The body (or what it inflates to) is over :data:`MAX_BODY_BYTES` (answered 413)."""


class UnsupportedMediaTypeError(ValueError):
    """Neither protobuf nor JSON (answered 415)."""


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def inflate(body: bytes, content_encoding: str | None) -> bytes:
    """The body without its ``Content-Encoding`` (``gzip`` or none), at most the bound."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding!r} is not supported (gzip)")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise BadRequestError(f"the gzip body is corrupt: {exc}") from None
    if len(data) > MAX_BODY_BYTES or inflater.unconsumed_tail:
        raise TooLargeError(f"the body inflates to more than {MAX_BODY_BYTES} bytes")
    if not inflater.eof:
        raise BadRequestError("the gzip body is truncated")
    return data


def decode_request(body: bytes, content_type: str | None) -> ExportTraceServiceRequest:
    """An ``ExportTraceServiceRequest`` from an (inflated) protobuf or OTLP/JSON body."""
    kind = media_type(content_type)
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequestError(
                f"the protobuf body is not an ExportTraceServiceRequest: {exc}"
            ) from None
        return request
    if kind != JSON:
        raise UnsupportedMediaTypeError(
            f"Content-Type {kind or '(none)'!r} is not supported; send {PROTOBUF} or {JSON}"
        )
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError(f"the JSON body does not parse: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequestError("the JSON body must be an object with resourceSpans")
    _ids_hex_to_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BadRequestError(f"the JSON body is not an OTLP trace export: {exc}") from None
    return request


def encode_response(as_json: bool, rejected: int = 0, message: str = "") -> bytes:
    """``ExportTraceServiceResponse``, with ``partialSuccess`` when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if as_json:
        return json.dumps(json_format.MessageToDict(response)).encode()
    return response.SerializeToString()


def encode_status(as_json: bool, message: str) -> bytes:
    """The ``google.rpc.Status`` body OTLP/HTTP prescribes for a refused request."""
    status = status_pb2.Status(code=_INVALID_ARGUMENT, message=message)
    if as_json:
        return json.dumps(json_format.MessageToDict(status)).encode()
    return status.SerializeToString()


def traces_json(data: TracesData) -> dict[str, Any]:
    """OTLP/JSON of ``data``: lowerCamelCase, hex ids, enums as integers, as the spec asks."""
    document = json_format.MessageToDict(data, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _convert_ids(span, _base64_to_hex)
                for link in span.get("links", []):
                    _convert_ids(link, _base64_to_hex)
    return document


def _ids_hex_to_base64(document: dict[str, Any]) -> None:
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                _convert_ids(span, _hex_to_base64)
                for link in _items(span, "links"):
                    _convert_ids(link, _hex_to_base64)


def _items(parent: Any, *names: str) -> list[Any]:
    if not isinstance(parent, dict):
        return []
    for name in names:
        value = parent.get(name)
        if isinstance(value, list):
            return value
    return []


def _convert_ids(holder: Any, convert: Any) -> None:
    if not isinstance(holder, dict):
        return
    for field in _ID_FIELDS:
        value = holder.get(field)
        if isinstance(value, str) and value:
            holder[field] = convert(value, field)


def _hex_to_base64(value: str, field: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise BadRequestError(f"{field} {value[:40]!r} is not hex (OTLP/JSON ids are)") from None
    return base64.b64encode(raw).decode()


def _base64_to_hex(value: str, field: str) -> str:
    try:
        return base64.b64decode(value).hex()
    except binascii.Error:  # pragma: no cover - protobuf wrote it
        return value
