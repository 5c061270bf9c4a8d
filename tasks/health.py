"""Health checks of HTTP services: one GET of the health endpoint, measured, as a result.

Why a failed check is a *result* (``ok=False`` with a sentence) and not an exception: the caller
is an analysis that counts successes, failures and errors over a window to reach a verdict; an
exception would end the analysis at the first 503 instead of counting it. The request still goes
through the ``HttpService`` block's resilient client (explicit timeouts, retry budget, breaker,
``traceparent``), so a check is bounded and a flapping connection is retried once or twice by
the layer, never by the caller.

``ok`` means: a 2xx answer whose JSON body, if it says a ``status``, says a healthy one
(``ok``, ``pass``, ``healthy``, ``up``). A 200 that says ``degraded`` is not ok.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from blocks.http import HttpService
from runbooks.errors import RunbookError, from_httpx
from runbooks.kit._run import logger as run_logger
from runbooks.resilience import NO_RETRY_EXTENSION
from tasks._http import json_object

HEALTHY_STATUSES = frozenset({"ok", "pass", "healthy", "up"})


class HealthCheck(BaseModel):
    """One health check: did it pass, how fast, what the service said about itself."""

    model_config = ConfigDict(frozen=True)

    url: str
    ok: bool
    status_code: int | None = Field(None, description="HTTP status; None when none came back.")
    latency_ms: float = Field(description="Time of the whole GET, retries by the layer included.")
    status: str | None = Field(None, description="The body's own status, e.g. ok or degraded.")
    version: str | None = Field(None, description="The body's version, when it says one.")
    checks: dict[str, str] = Field(
        default_factory=dict,
        description="The body's checks flattened (dependencies.payments -> ok).",
    )
    error: str | None = Field(None, description="Why the check failed, in one sentence.")
    checked_at: datetime

    @property
    def failing_checks(self) -> list[str]:
        return [name for name, value in self.checks.items() if value.lower() not in _OK_VALUES]


_OK_VALUES = HEALTHY_STATUSES | {"unconfigured"}


@task(name="check-health", cache_policy=NO_CACHE)
def check_health(service: HttpService, url_override: str | None = None) -> HealthCheck:
    """GET the service's health endpoint once (through its resilient client) and judge it.

    ``url_override`` checks another URL with the same block's settings (e.g. a preview Service's
    health URL while the block points at the active one); a relative one is joined to the base
    URL. Never raises for the service's failures: refused connections, timeouts, an open breaker
    and bad statuses all come back as ``ok=False`` with ``error`` saying why.
    """
    url = url_override or service.health_path
    checked_at = datetime.now(UTC)
    started = time.perf_counter()
    try:
        with service.get_client() as client:
            # one probe, one answer: retrying would hide the failure the analysis counts
            response = client.get(url, extensions={NO_RETRY_EXTENSION: True})
            response.read()
            shown = str(response.request.url)
    except (httpx.HTTPError, RunbookError) as exc:
        latency_ms = (time.perf_counter() - started) * 1000
        shown = _absolute(service, url)
        error = from_httpx(exc, f"GET {shown}", target=service.target)
        run_logger(__name__).warning("health check of %s failed: %s", shown, error)
        return HealthCheck(
            url=shown,
            ok=False,
            latency_ms=round(latency_ms, 3),
            error=str(error),
            checked_at=checked_at,
        )
    latency_ms = (time.perf_counter() - started) * 1000
    document = json_object(response)
    status = _text(document.get("status"))
    checks = _flatten(document.get("checks"))
    healthy_status = status is None or status.lower() in HEALTHY_STATUSES
    ok = response.is_success and healthy_status
    error = None
    if not ok:
        failing = [name for name, value in checks.items() if value.lower() not in _OK_VALUES]
        said = f"status {status}" if status else "no status"
        if failing:
            said += f"; failing checks: {', '.join(failing)}"
        error = f"GET {shown} answered HTTP {response.status_code} ({said})"
        run_logger(__name__).warning("health check failed: %s", error)
    return HealthCheck(
        url=shown,
        ok=ok,
        status_code=response.status_code,
        latency_ms=round(latency_ms, 3),
        status=status,
        version=_text(document.get("version")),
        checks=checks,
        error=error,
        checked_at=checked_at,
    )


def _absolute(service: HttpService, url: str) -> str:
    return url if "://" in url else service.base_url.rstrip("/") + url


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _flatten(checks: Any, prefix: str = "") -> dict[str, str]:
    """``{"db": "ok", "dependencies": {"payments": "ok"}}`` -> ``{"db": "ok",
    "dependencies.payments": "ok"}``; a check given as an object reports its ``status``."""
    out: dict[str, str] = {}
    if not isinstance(checks, dict):
        return out
    for name, value in checks.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and isinstance(value.get("status"), str):
            out[key] = value["status"]
        elif isinstance(value, dict):
            out |= _flatten(value, f"{key}.")
        else:
            out[key] = str(value)
    return out
