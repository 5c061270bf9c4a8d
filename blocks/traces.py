"""`TraceBackend`: where runbooks read traces, which API it speaks, and an httpx client for it.

Why it is built this way:
- ``api`` names the query API, not the product: ``jaeger-v3`` is Jaeger's ``/api/v3`` HTTP
  JSON API (OTLP/JSON traces under a ``result`` envelope), which the sandbox's trace store
  also answers. ``tasks.traces`` reads each API with its own small reader and turns every
  answer into ``decisions.spans.Span``, so adding ``zipkin-v2`` is one more literal here and
  one more reader there; runbooks do not change;
- ``base_url`` is the query service's root (Jaeger's 16686, not the OTLP receiver on 4318): a
  block reads traces, it never writes them;
- the client is the one ``HttpService`` builds: ``runbooks.resilience.ResilientTransport``
  over ``httpx.HTTPTransport(retries=0)`` (one retry layer, budget and breaker per
  ``target``), every httpx timeout explicit. Trace searches can be slow on a big backend, so
  the read timeout is the block's ``timeout_seconds``; connecting gets at most 5 s of it;
- the bearer token (a reverse proxy's, or Grafana Cloud's) is a ``SecretStr``, revealed only
  into the client's ``Authorization`` header.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._common import BLOCK_CONFIG, DOCUMENTATION_URL, LOGO, check_http_url, host_port

TraceApi = Literal["jaeger-v3"]
"""The query APIs ``tasks.traces`` reads (Zipkin's ``/api/v2`` would be ``"zipkin-v2"``)."""

_MAX_CONNECT_SECONDS = 5.0


class TraceBackend(Block):
    """A trace backend's query API (Jaeger ``/api/v3``), read with explicit timeouts and the
    runbooks' resilience layer; ``tasks.traces`` turns its answers into spans.

    Example:
        List the services that reported traces:
        ```python
        from blocks import TraceBackend
        from tasks.traces import list_services

        backend = TraceBackend.load("BLOCK_NAME")
        services = list_services(backend)
        ```
    """

    _block_type_name: ClassVar[str] = "Trace Backend"
    _block_type_slug: ClassVar[str] = "trace-backend"
    _description: ClassVar[str] = (
        "The query API of a trace backend (Jaeger /api/v3) that runbooks read traces from, "
        "with explicit timeouts, an optional bearer token, and the runbooks' resilience layer."
    )
    _documentation_url = DOCUMENTATION_URL
    _logo_url = LOGO

    model_config = BLOCK_CONFIG

    base_url: str = Field(
        default=...,
        title="Base URL",
        description=(
            "Root URL of the query API, e.g. http://jaeger-query:16686 (not the OTLP "
            "receiver); the API's paths are appended to it."
        ),
    )
    api: TraceApi = Field(
        default="jaeger-v3",
        title="API",
        description="Query API the backend speaks: jaeger-v3 (Jaeger's /api/v3 HTTP JSON API).",
    )
    timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        title="Timeout (seconds)",
        description=(
            "Time allowed between bytes of an answer (and to send a request); connecting gets "
            "at most 5 s of it."
        ),
    )
    verify_tls: bool = Field(
        default=True,
        title="Verify TLS",
        description="Check the server's TLS certificate; turn off only for self-signed test certs.",
    )
    token: SecretStr | None = Field(
        default=None,
        title="Bearer token",
        description="Token sent as 'Authorization: Bearer <token>' on every request.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        return check_http_url(value, "base_url")

    @property
    def target(self) -> str:
        """Key of this backend's retry budget and circuit breaker: the base URL's host:port."""
        return host_port(self.base_url)

    def get_timeout(self) -> httpx.Timeout:
        """The explicit httpx timeouts of this backend (no phase is left unbounded)."""
        connect = min(self.timeout_seconds, _MAX_CONNECT_SECONDS)
        return httpx.Timeout(
            connect=connect, read=self.timeout_seconds, write=self.timeout_seconds, pool=connect
        )

    def get_client(self) -> httpx.Client:
        """A new ``httpx.Client`` on the query API; close it (or use ``with``) when done.

        Requests go through the resilience layer for ``target``; relative URLs are joined to
        ``base_url``.
        """
        from runbooks.resilience import ResilientTransport

        headers = {"Accept": "application/json"}
        if self.token is not None and self.token.get_secret_value():
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        transport = ResilientTransport(
            target=self.target,
            transport=httpx.HTTPTransport(verify=self.verify_tls, retries=0),
        )
        return httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=self.get_timeout(),
            transport=transport,
            follow_redirects=False,
        )
