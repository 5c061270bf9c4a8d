"""An httpx transport that applies the resilience layer, so any ``httpx.Client`` gets it.

httpx's own seam for I/O is the transport; wrapping it (rather than subclassing the client or
decorating call sites) means every request of a client, whoever makes it, gets correlation
headers, the breaker, bounded full-jitter retries and the budget, and tests can put any
transport underneath (``httpx.MockTransport`` or a real one to a loopback server).

Which requests are retried: transient outcomes (connect errors, timeouts, the policy's
``retry_statuses``: 429, 502, 503, 504) of idempotent methods. A POST or PATCH is retried only
when the caller opts in, by sending an ``Idempotency-Key`` header (the server can then dedupe) or
the request extension ``{"retry_non_idempotent": True}``; any request opts out with
``{"no_retry": True}`` (a health probe, whose single answer is the measurement). The last
response is returned as is (a final 503 stays a 503 for the caller's ``raise_for_status``); the
last transport error is raised; an open breaker raises
:class:`runbooks.errors.CircuitOpenError` without calling.
"""

from __future__ import annotations

import httpx

from runbooks.errors import parse_retry_after
from runbooks.resilience.engine import SUCCESS, Resilience, Verdict, default_resilience
from runbooks.resilience.headers import correlation_headers

OPT_IN_EXTENSION = "retry_non_idempotent"
NO_RETRY_EXTENSION = "no_retry"  # e.g. a health probe: one answer per probe is the measurement
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class ResilientTransport(httpx.BaseTransport):
    """Wraps ``transport`` (default: ``httpx.HTTPTransport(retries=0)``) with the layer.

    ``target`` names the dependency whose budget and breaker apply (default: the request's
    ``host:port``, so one transport may serve several hosts).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        resilience: Resilience | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self._target = target
        self._resilience = resilience
        self._transport = transport or httpx.HTTPTransport(retries=0)

    @property
    def resilience(self) -> Resilience:
        return self._resilience or default_resilience()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers.update(correlation_headers(request.headers))
        layer = self.resilience
        idempotent = not request.extensions.get(NO_RETRY_EXTENSION) and (
            request.method.upper() in layer.policy.idempotent_methods
            or "idempotency-key" in request.headers
            or bool(request.extensions.get(OPT_IN_EXTENSION))
        )
        if idempotent:
            request.read()  # a streamed body could not be sent twice
        target = self._target or f"{request.url.host}:{request.url.port or _default_port(request)}"
        retry_statuses = layer.policy.retry_statuses
        return layer.call(
            target,
            lambda: self._transport.handle_request(request),
            judge_result=lambda response: _judge_response(response, retry_statuses),
            judge_error=_judge_error,
            idempotent=idempotent,
            discard=_close,
        )

    def close(self) -> None:
        self._transport.close()


def _judge_response(response: httpx.Response, retry_statuses: frozenset[int]) -> Verdict:
    status = response.status_code
    if status < 500 and status != 429:
        return SUCCESS
    return Verdict(
        failure=True,
        retryable=status in retry_statuses,
        retry_after_seconds=parse_retry_after(response.headers.get("retry-after")),
    )


def _judge_error(exc: Exception) -> Verdict:
    if isinstance(exc, _TRANSIENT_ERRORS):
        return Verdict(failure=True, retryable=True)
    # a bug on our side (bad URL, local protocol error) says nothing about the target
    return Verdict(failure=False, retryable=False)


_DRAIN_LIMIT = 64 * 1024


def _close(response: httpx.Response) -> None:
    """Drain a small body first, so the keep-alive connection goes back to the pool (urllib3
    and requests do the same before a retry); a large or unknown-length one is just closed,
    which costs a reconnect, not a download."""
    try:
        if int(response.headers.get("content-length") or _DRAIN_LIMIT + 1) <= _DRAIN_LIMIT:
            response.read()
    except (httpx.HTTPError, ValueError):
        pass  # the connection is closed below either way
    finally:
        response.close()


def _default_port(request: httpx.Request) -> int:
    return 443 if request.url.scheme == "https" else 80
