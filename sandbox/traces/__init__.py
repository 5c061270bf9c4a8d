"""The sandbox's trace backend: an OTLP/HTTP receiver and a query API shaped like Jaeger's.

    from sandbox.traces import TraceServer

    with TraceServer() as traces:            # two free loopback ports
        traces.otlp_url                      # services export to <otlp_url>/v1/traces
        traces.query_url                     # GET <query_url>/api/v3/services, /traces, ...

Runbooks never import this package: they read traces through the ``TraceBackend`` block
(``blocks.traces``) and ``tasks.traces``, which speak Jaeger's ``/api/v3`` HTTP JSON API, so
the same runbook reads a real Jaeger. Layout: ``otlp`` (bodies in and out, pure), ``store``
(the bounded, indexed spans), ``server`` (HTTP), and :class:`TracesComponent` here (the
stack's component: endpoints ``traces`` and ``otlp``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.stack import wait_http_ok
from sandbox.traces.server import TraceServer
from sandbox.traces.store import DEFAULT_MAX_SPANS, TraceStore

__all__ = ["DEFAULT_MAX_SPANS", "TraceServer", "TraceStore", "TracesComponent"]


@dataclass
class TracesComponent:
    """The trace backend as a component of the sandbox's stack (threads in this process)."""

    max_spans: int = DEFAULT_MAX_SPANS
    name: str = "traces"
    server: TraceServer | None = None

    def start(self) -> dict[str, str]:
        self.server = TraceServer(self.max_spans).start()
        wait_http_ok(f"{self.server.query_url}/-/ready", 10)
        return {"traces": self.server.query_url, "otlp": self.server.otlp_url}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
