"""`HttpService`: an HTTP service a runbook calls or probes, and an ``httpx`` client factory for it.

Why it is built this way:
- the client's transport is ``runbooks.resilience.ResilientTransport`` wrapped around an
  ``httpx.HTTPTransport(retries=0)``: the resilience layer is the single retry layer (full
  jitter backoff, retry budget and circuit breaker per ``target``), it adds ``X-Request-ID`` and
  the W3C ``traceparent`` to every request, and httpx itself never retries underneath it;
- all four httpx timeouts are explicit (connect, read, write, pool) so a slow service cannot
  hang a flow;
- ``target`` (the key of the retry budget and the breaker) defaults to the URL's host:port, so
  two blocks pointing at one service share one breaker, as they should;
- the bearer token is a ``SecretStr`` and is only revealed into the ``Authorization`` header of
  the client (httpx masks that header in its reprs); ``headers`` are for non-secret headers and
  refuse credential-carrying names, because they are stored in clear.

The module is called ``http`` after what it configures; it is ``blocks.http``, not the stdlib.
"""

from __future__ import annotations

import re
from typing import ClassVar

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._common import BLOCK_CONFIG, DOCUMENTATION_URL, LOGO, check_http_url, host_port

# RFC 9110 "token" characters: what a header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


class HttpService(Block):
    """An HTTP service that runbooks call or health-check, with explicit timeouts and the
    runbooks' resilience layer (retry budget, circuit breaker, trace propagation) built in.

    Example:
        Probe the service's health endpoint:
        ```python
        from blocks import HttpService

        service = HttpService.load("BLOCK_NAME")
        with service.get_client() as client:
            healthy = client.get(service.health_path).status_code == 200
        ```
    """

    _block_type_name: ClassVar[str] = "HTTP Service"
    _block_type_slug: ClassVar[str] = "http-service"
    _description: ClassVar[str] = (
        "An HTTP service to call or health-check, with explicit timeouts, an optional bearer "
        "token, and retries, budget and circuit breaker from the runbooks' resilience layer."
    )
    _documentation_url = DOCUMENTATION_URL
    _logo_url = LOGO

    model_config = BLOCK_CONFIG

    base_url: str = Field(
        default=...,
        title="Base URL",
        description="Root URL of the service, e.g. http://127.0.0.1:8080 or https://shop.example.",
    )
    health_path: str = Field(
        default="/health",
        title="Health path",
        description=(
            "Path (and optional query) of the health endpoint under the base URL; "
            "starts with a slash."
        ),
    )
    connect_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        title="Connect timeout (seconds)",
        description="Time allowed to open a connection (also the wait for a pooled connection).",
    )
    read_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=900,
        title="Read timeout (seconds)",
        description="Time allowed between bytes of the response (also for sending the request).",
    )
    verify_tls: bool = Field(
        default=True,
        title="Verify TLS",
        description="Check the server's TLS certificate; turn off only for self-signed test certs.",
    )
    target_name: str | None = Field(
        default=None,
        title="Target name",
        description=(
            "Name of the retry budget and circuit breaker this service uses; "
            "empty means the base URL's host:port."
        ),
    )
    bearer_token: SecretStr | None = Field(
        default=None,
        title="Bearer token",
        description="Token sent as 'Authorization: Bearer <token>' on every request.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra non-secret headers sent on every request, e.g. a User-Agent.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        return check_http_url(value, "base_url")

    @field_validator("health_path")
    @classmethod
    def _health_path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"health_path must start with '/', got {value!r}")
        if "#" in value or any(char.isspace() for char in value):
            raise ValueError(
                f"health_path must be a URL path (no spaces or fragment), got {value!r}"
            )
        return value

    @field_validator("target_name")
    @classmethod
    def _target_name_is_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value

    @field_validator("headers")
    @classmethod
    def _headers_are_not_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"headers has an invalid header name {name!r}")
            if name.lower() in _CREDENTIAL_HEADERS:
                raise ValueError(
                    f"headers must not carry credentials ({name!r} would be stored in clear); "
                    "put a token in bearer_token instead"
                )
            if "\r" in header_value or "\n" in header_value:
                raise ValueError(f"headers value of {name!r} must not contain line breaks")
        return value

    @property
    def target(self) -> str:
        """Key of this service's retry budget and circuit breaker: target_name or host:port."""
        return self.target_name or host_port(self.base_url)

    @property
    def health_url(self) -> str:
        """Absolute URL of the health endpoint (base URL path + health_path)."""
        return self.base_url.rstrip("/") + self.health_path

    def get_timeout(self) -> httpx.Timeout:
        """The explicit httpx timeouts of this service (no phase is left unbounded)."""
        return httpx.Timeout(
            connect=self.connect_timeout_seconds,
            read=self.read_timeout_seconds,
            write=self.read_timeout_seconds,
            pool=self.connect_timeout_seconds,
        )

    def get_client(self) -> httpx.Client:
        """A new ``httpx.Client`` for this service; close it (or use ``with``) when done.

        Requests go through the resilience layer for ``target``; relative URLs are joined to
        ``base_url`` (``client.get(service.health_path)``).
        """
        from runbooks.resilience import ResilientTransport

        headers = dict(self.headers)
        if self.bearer_token is not None and self.bearer_token.get_secret_value():
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
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
