"""The resilience layer around the official ``kubernetes`` client.

The client retries on its own in two hidden places: urllib3's default ``Retry(3)`` on every
pool, and (opt-in) client-go-style retries of GETs. :func:`no_urllib3_retries` turns both off on a
``Configuration``, and :func:`call_kubernetes` puts our policy around one API call instead, with
correlation headers and the translation of ``ApiException`` into the project's error tree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from runbooks.errors import from_kubernetes, parse_retry_after
from runbooks.resilience.engine import SUCCESS, Resilience, Verdict, default_resilience
from runbooks.resilience.headers import correlation_headers

T = TypeVar("T")


def no_urllib3_retries(configuration: Any) -> None:
    """Make urllib3 try each request once; retries are ours (one layer, bounded)."""
    configuration.retries = False
    configuration.client_go_retries = False


def call_kubernetes(
    action: str,
    fn: Callable[..., T],
    /,
    *args: Any,
    target: str = "kubernetes",
    idempotent: bool | None = None,
    retry_also: frozenset[int] = frozenset(),
    resilience: Resilience | None = None,
    **kwargs: Any,
) -> T:
    """Call one generated API method (e.g. ``apps.patch_namespaced_deployment``) resiliently.

    ``action`` is the sentence fragment used in errors ("patch Deployment shop/frontend").
    Reads (``read_*``, ``list_*``) are idempotent; writes are retried only when the caller
    says they are (a ``replace_*`` with a ``resourceVersion`` is: the server refuses a stale one).
    ``retry_also`` adds statuses to the policy's retried ones for this call only: an HTTP 500
    leaves it unknown whether a write was applied, so only a write whose precondition makes a
    second application impossible (a JSON patch with a ``test`` op) should pass ``{500}``.
    Raises the project's errors (``NotFoundError``, ``ConflictError``...) from ``ApiException``.
    """
    layer = resilience or default_resilience()
    if idempotent is None:
        name = getattr(fn, "__name__", "")
        idempotent = name.startswith(("read_", "list_", "get_"))
    if "_headers" not in kwargs and _accepts_headers(fn):
        kwargs["_headers"] = correlation_headers()
    retry_statuses = layer.policy.retry_statuses | retry_also
    try:
        return layer.call(
            target,
            lambda: fn(*args, **kwargs),
            judge_result=lambda _: SUCCESS,
            judge_error=lambda exc: _judge(exc, retry_statuses),
            idempotent=idempotent,
        )
    except Exception as exc:
        raise from_kubernetes(exc, action, target=target) from exc


def _judge(exc: Exception, retry_statuses: frozenset[int]) -> Verdict:
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status > 0:
        if status < 500 and status != 429:
            return SUCCESS
        headers = getattr(exc, "headers", None) or {}
        return Verdict(
            failure=True,
            retryable=status in retry_statuses,
            retry_after_seconds=parse_retry_after(headers.get("Retry-After")),
        )
    if _is_transport_error(exc):
        return Verdict(failure=True, retryable=True)
    return SUCCESS


def _is_transport_error(exc: Exception) -> bool:
    import urllib3.exceptions

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _accepts_headers(fn: Callable[..., Any]) -> bool:
    try:
        return "_headers" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
