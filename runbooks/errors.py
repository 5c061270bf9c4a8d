"""The one exception tree of the project, and the translation of vendor errors into it.

Every failure a runbook can meet is one of two kinds, because that is the only question a
caller needs answered: *would the same call succeed if made again later?*

    RunbookError                     base; ``str(exc)`` is one actionable sentence
    ├── TransientError               retrying later may succeed
    │   ├── UnavailableError         connect error, timeout, 429, 502, 503, 504, 500
    │   ├── ConflictError            409: someone else changed the object; re-read, then retry
    │   ├── CircuitOpenError         our breaker for the target is open; no call was made
    │   └── TargetBusyError          another run holds the target's lock
    └── PermanentError               the same call will fail again; fix the input or the system
        ├── InvalidRequestError      400, 405, 409-less 4xx, 422: the request itself is wrong
        ├── AuthError                401, 403: credentials or permissions
        └── NotFoundError            404, 410: the object or endpoint does not exist

Rules:
- vendor exceptions (``httpx.HTTPError``, kubernetes ``ApiException``, urllib3 errors, botocore
  ``ClientError``) are translated *where we call the vendor*, with ``raise ... from exc`` so the
  original stays in ``__cause__``;
- translation never imports a vendor package at module import (pods of the sandbox import this
  module and must stay small), it reads the attributes those exceptions carry;
- messages never include request bodies or headers, which may hold secrets;
- the resilience layer retries only ``TransientError``-kind failures, and Prefect task retries
  are decided by :func:`retry_transient` from the same tree, so both layers agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

_UNAVAILABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class RunbookError(Exception):
    """Base of every error the project raises on purpose."""

    transient: bool = False

    def __init__(self, message: str, *, status: int | None = None, target: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.target = target


class TransientError(RunbookError):
    """Retrying the same call later may succeed."""

    transient = True


class PermanentError(RunbookError):
    """The same call will fail again: the input or the system must change first."""


class UnavailableError(TransientError):
    """The target did not answer usefully: connect error, timeout, 429 or a 5xx."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        target: str | None = None,
        retry_after_seconds: float | None = None,
    ):
        super().__init__(message, status=status, target=target)
        self.retry_after_seconds = retry_after_seconds


class ConflictError(TransientError):
    """409: the object changed since it was read; re-read it and apply the change again."""


class CircuitOpenError(TransientError):
    """The circuit breaker for the target is open, so the call was not made at all."""

    def __init__(self, target: str, retry_after_seconds: float):
        super().__init__(
            f"circuit breaker for {target} is open after repeated failures; "
            f"not calling it for another {retry_after_seconds:.1f}s",
            target=target,
        )
        self.retry_after_seconds = retry_after_seconds


class TargetBusyError(TransientError):
    """Another run holds the lock on the target this run wants to change."""


class InvalidRequestError(PermanentError):
    """The request is wrong (4xx other than 401/403/404/409/410/429): fix the input."""


class AuthError(PermanentError):
    """401/403: the credentials are missing, wrong, or lack a permission."""


class NotFoundError(PermanentError):
    """404/410: the object or the endpoint does not exist."""


def from_status(
    status: int,
    action: str,
    *,
    detail: str = "",
    target: str | None = None,
    retry_after_seconds: float | None = None,
) -> RunbookError:
    """The error for an HTTP status met while doing ``action`` (e.g. "patch Deployment a/b")."""
    said = f": {detail}" if detail else ""
    if status in _UNAVAILABLE_STATUSES:
        return UnavailableError(
            f"{action} failed with HTTP {status}{said}; the target is unavailable, retry later",
            status=status,
            target=target,
            retry_after_seconds=retry_after_seconds,
        )
    if status == 409:
        return ConflictError(
            f"{action} conflicted (HTTP 409){said}; re-read the object and apply again",
            status=status,
            target=target,
        )
    if status in (401, 403):
        return AuthError(
            f"{action} was refused (HTTP {status}){said}; check the credentials in the block "
            "and their permissions",
            status=status,
            target=target,
        )
    if status in (404, 410):
        return NotFoundError(
            f"{action} found nothing (HTTP {status}){said}; check the name and namespace",
            status=status,
            target=target,
        )
    if 400 <= status < 500:
        return InvalidRequestError(
            f"{action} was rejected as invalid (HTTP {status}){said}",
            status=status,
            target=target,
        )
    return UnavailableError(
        f"{action} failed with HTTP {status}{said}", status=status, target=target
    )


def from_httpx(exc: Exception, action: str, *, target: str | None = None) -> RunbookError:
    """Translate an ``httpx.HTTPError`` (transport error or ``HTTPStatusError``)."""
    if isinstance(exc, RunbookError):
        return exc
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "status_code"):
        return from_status(
            response.status_code,
            action,
            detail=_short(response.reason_phrase),
            target=target,
            retry_after_seconds=parse_retry_after(response.headers.get("retry-after")),
        )
    kind = type(exc).__name__
    return UnavailableError(f"{action} failed: {kind} ({_short(str(exc))})", target=target)


def from_kubernetes(exc: Exception, action: str, *, target: str | None = None) -> RunbookError:
    """Translate a kubernetes ``ApiException`` or a urllib3 transport error."""
    if isinstance(exc, RunbookError):
        return exc
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status > 0:
        headers = getattr(exc, "headers", None) or {}
        return from_status(
            status,
            action,
            detail=_kubernetes_message(getattr(exc, "body", None))
            or _short(getattr(exc, "reason", "")),
            target=target,
            retry_after_seconds=parse_retry_after(_header(headers, "retry-after")),
        )
    kind = type(exc).__name__
    return UnavailableError(f"{action} failed: {kind} ({_short(str(exc))})", target=target)


def from_botocore(exc: Exception, action: str, *, target: str | None = None) -> RunbookError:
    """Translate a botocore ``ClientError`` or connection error. A parameter botocore refuses
    before sending (``ParamValidationError``) is the input's fault, not the service's."""
    if isinstance(exc, RunbookError):
        return exc
    if type(exc).__name__ == "ParamValidationError":
        return InvalidRequestError(f"{action}: {_short(str(exc))}", target=target)
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(error.get("Code", ""))
    detail = f"{code}: {_short(str(error.get('Message', '')))}" if code else ""
    if code in _AWS_THROTTLING:
        return UnavailableError(
            f"{action} was throttled by AWS ({detail}); retry later", status=status, target=target
        )
    if isinstance(status, int):
        return from_status(status, action, detail=detail, target=target)
    kind = type(exc).__name__
    return UnavailableError(f"{action} failed: {kind} ({_short(str(exc))})", target=target)


@contextmanager
def botocore_errors(action: str, target: str | None = None) -> Iterator[None]:
    """Translate botocore errors raised while doing ``action`` into this tree (with
    :func:`from_botocore`); every AWS task wraps its calls in it."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise from_botocore(exc, action, target=target) from exc


def is_transient(exc: BaseException) -> bool:
    """True when retrying the call that raised ``exc`` later may succeed."""
    return isinstance(exc, RunbookError) and exc.transient


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` for Prefect tasks: retry transient failures only.

    Use it only on tasks whose calls do not go through the resilience layer already (e.g. a wait
    for a rollout); one retry layer per call.
    """
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_AWS_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)


def _header(headers: Any, name: str) -> str | None:
    if hasattr(headers, "get"):
        for key in (name, name.title(), name.lower()):
            value = headers.get(key)
            if value is not None:
                return str(value)
    return None


def _kubernetes_message(body: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, which names the field at fault."""
    if not body:
        return ""
    import json

    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return _short(str(body))
    if isinstance(data, dict):
        return _short(str(data.get("message", "")))
    return ""


def _short(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
