"""Spans as the runbooks reason about them, whatever backend stored them. Pure: no I/O.

A trace backend speaks its own format (OTLP JSON inside Jaeger's ``/api/v3``, Zipkin v2 JSON);
``tasks.traces`` turns each into :class:`Span`, the one shape the decisions read: the
dependency map, the latency attribution and the coverage checks of ``tracing-rollout`` never
know which backend answered.

Ids are lowercase hex, as W3C trace context writes them (32 characters for a trace, 16 for a
span); times are Unix nanoseconds, as OTLP carries them, so no precision is lost on the way.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")


class SpanKind(StrEnum):
    """OTLP's span kinds, by the names the OpenTelemetry API uses."""

    UNSPECIFIED = "unspecified"
    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"
    PRODUCER = "producer"
    CONSUMER = "consumer"


class SpanStatus(StrEnum):
    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


class Span(BaseModel):
    """One finished span."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trace_id: str = Field(description="32 lowercase hex characters.")
    span_id: str = Field(description="16 lowercase hex characters.")
    parent_span_id: str | None = Field(None, description="Empty for a root span.")
    service: str = Field(min_length=1, description="The resource's service.name.")
    name: str = Field(description="The operation, e.g. 'GET /buy'.")
    kind: SpanKind = SpanKind.UNSPECIFIED
    start_ns: int = Field(ge=0, description="Start, Unix nanoseconds.")
    end_ns: int = Field(ge=0, description="End, Unix nanoseconds (>= start).")
    status: SpanStatus = SpanStatus.UNSET
    attributes: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Span attributes (scalars; arrays are joined)."
    )

    @field_validator("trace_id", "span_id", "parent_span_id", mode="before")
    @classmethod
    def _lower_hex(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Span:
        if not _TRACE_ID.match(self.trace_id) or self.trace_id == "0" * 32:
            raise ValueError(f"trace_id must be 32 hex characters, not all zero: {self.trace_id!r}")
        for field, value in (("span_id", self.span_id), ("parent_span_id", self.parent_span_id)):
            if value is not None and (not _SPAN_ID.match(value) or value == "0" * 16):
                raise ValueError(f"{field} must be 16 hex characters, not all zero: {value!r}")
        if self.end_ns < self.start_ns:
            raise ValueError(f"span {self.span_id} ends ({self.end_ns}) before it starts")
        return self

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6
