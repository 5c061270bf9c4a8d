"""Correlation headers set on every outgoing request: ``X-Request-ID`` and W3C ``traceparent``.

The request id stays the same across the retries of one logical request, so the server's logs
show them as one request retried. ``traceparent`` comes from the current OpenTelemetry span when
one is active (through the globally configured propagator, so ``baggage`` follows too); without
one we still send a fresh, valid ``traceparent`` (not sampled: we do not force downstreams to
record traces nobody asked for) so logs on both sides share a trace id.

``context`` lets the transport name the span to propagate explicitly: its own CLIENT span, so
the server's span becomes that span's child (see :mod:`runbooks.resilience.transport`).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.context import Context

REQUEST_ID = "X-Request-ID"
TRACEPARENT = "traceparent"


def new_request_id() -> str:
    return uuid.uuid4().hex


def new_traceparent(sampled: bool = False) -> str:
    """A valid W3C trace context header with random non-zero ids."""
    trace_id = secrets.token_hex(16)
    span_id = secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def correlation_headers(
    existing: MutableMapping[str, str] | None = None, *, context: Context | None = None
) -> dict[str, str]:
    """The headers to add to a request that carries ``existing`` (case-insensitive names).

    The trace context comes from ``context`` when given, else from the current context.
    """
    present = {name.lower() for name in (existing or {})}
    added: dict[str, str] = {}
    if REQUEST_ID.lower() not in present:
        added[REQUEST_ID] = new_request_id()
    if TRACEPARENT not in present:
        carrier: dict[str, str] = {}
        _inject_context(carrier, context)
        added.update(carrier)
        added.setdefault(TRACEPARENT, new_traceparent())
    return added


def _inject_context(carrier: dict[str, str], context: Context | None) -> None:
    try:
        from opentelemetry import propagate, trace
    except ImportError:  # the API is optional for the sandbox's small pods
        return
    if trace.get_current_span(context).get_span_context().is_valid:
        propagate.inject(carrier, context=context)
