"""Calls to the next service (frontend -> checkout -> payments) through the resilience layer.

The retry settings are the knob of the retry-storm drill: they come from ``SHOP_RETRY_CONFIG``
(a JSON file standing for a ConfigMap, re-read when it changes) over ``SHOP_RETRY_*`` env vars
over defaults that are deliberately *naive* (5 attempts, no retry budget, no circuit breaker),
so a failing payments service produces a storm that a runbook can then contain by rewriting the
file. A changed file builds a fresh :class:`~runbooks.resilience.Resilience` (its budget and
breaker start empty, its counters from zero: Prometheus's ``rate()`` reads that as a reset),
swapped in under one ``httpx.Client`` whose connection pool is kept, so in-flight calls finish
on the layer they started with.

Each logical call is counted in the shop's own metrics (monotonic across reloads) with its
attempts, and in a sliding window whose failure ratio is the ``dependencies`` check of
``/health``: a cheap look at recent traffic, never a new call per probe.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from pydantic import BaseModel, ConfigDict, Field

from decisions.backoff import Backoff
from decisions.breaker import BreakerSettings
from decisions.budget import RetryBudgetSettings
from decisions.window import SlidingCounts
from runbooks.errors import CircuitOpenError
from runbooks.resilience import Resilience, ResiliencePolicy, ResilientTransport
from sandbox.shop.config import WatchedJson
from sandbox.shop.metrics import ShopMetrics

_NEVER = 1_000_000_000  # a floor or minimum no window ever reaches: the feature is off
HEALTH_WINDOW_SECONDS = 30.0
HEALTH_MIN_CALLS = 5
HEALTH_MAX_FAILURE_RATIO = 0.1


class RetrySettings(BaseModel):
    """Retry settings of a pod's downstream calls (the ``SHOP_RETRY_CONFIG`` document).

    ``budget_percent: null`` means no retry budget; ``breaker_enabled: false`` means a breaker
    that never opens. Unknown keys are refused, so a typo cannot silently keep a storm going.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per call, the first included.")
    base_seconds: float = Field(0.05, gt=0, le=60, description="Full-jitter backoff base.")
    cap_seconds: float = Field(1.0, gt=0, le=300, description="Full-jitter backoff cap.")
    max_total_seconds: float = Field(10.0, gt=0, le=600, description="No retry after this.")
    timeout_seconds: float = Field(5.0, gt=0, le=120, description="Per-attempt HTTP timeout.")
    budget_percent: float | None = Field(
        None, ge=0, le=100, description="Retry budget (% of requests); null: unlimited."
    )
    budget_window_seconds: float = Field(10.0, gt=0, le=600)
    budget_min_retries: int = Field(3, ge=0, description="Retries always allowed per window.")
    breaker_enabled: bool = False
    breaker_failure_rate_percent: float = Field(50.0, gt=0, le=100)
    breaker_minimum_calls: int = Field(10, ge=1)
    breaker_window_seconds: float = Field(30.0, gt=0, le=3600)
    breaker_open_seconds: float = Field(10.0, gt=0, le=3600)

    def policy(self) -> ResiliencePolicy:
        """The resilience layer's policy for these settings (``ValueError`` when inconsistent,
        e.g. a cap below the base)."""
        budget = self.budget_percent
        return ResiliencePolicy(
            backoff=Backoff(
                base_seconds=self.base_seconds,
                cap_seconds=self.cap_seconds,
                max_attempts=self.max_attempts,
                max_total_seconds=self.max_total_seconds,
            ),
            budget=RetryBudgetSettings(
                budget_percent=100.0 if budget is None else budget,
                window_seconds=self.budget_window_seconds,
                min_retries_per_window=_NEVER if budget is None else self.budget_min_retries,
            ),
            breaker=BreakerSettings(
                failure_rate_percent=self.breaker_failure_rate_percent,
                window_seconds=self.breaker_window_seconds,
                minimum_calls=self.breaker_minimum_calls if self.breaker_enabled else _NEVER,
                open_seconds=self.breaker_open_seconds,
            ),
        )


def retry_defaults_from_env(env: Mapping[str, str]) -> RetrySettings:
    """``SHOP_RETRY_<FIELD>`` env vars over the naive defaults (``ValueError`` when wrong)."""
    values: dict[str, object] = {}
    for name in RetrySettings.model_fields:
        raw = env.get(f"SHOP_RETRY_{name.upper()}")
        if raw is None:
            continue
        raw = raw.strip()
        values[name] = None if name == "budget_percent" and raw.lower() in ("", "none") else raw
    settings = RetrySettings.model_validate(values)
    settings.policy()
    return settings


def retry_parser(defaults: RetrySettings) -> Callable[[object], RetrySettings]:
    """Parse a retry file: its keys over ``defaults``."""

    def parse(document: object) -> RetrySettings:
        if not isinstance(document, dict):
            raise ValueError("retry config must be a JSON object")
        settings = RetrySettings.model_validate({**defaults.model_dump(), **document})
        settings.policy()
        return settings

    return parse


@dataclass(frozen=True, slots=True)
class CallResult:
    """The outcome of one logical downstream call."""

    status: int | None  # None: no answer (transport error or open breaker)
    body: object
    error: str | None
    attempts: int
    rejected: bool = False  # the circuit breaker was open: no attempt was made

    @property
    def ok(self) -> bool:
        """A 2xx: anything else (a 404 from a wrongly wired URL too) is a failed call."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """A failure the caller's callers may retry (we answer 503 for it, else 500)."""
        return self.status is None or self.status in (429, 502, 503, 504)


class _Counting(httpx.BaseTransport):
    """Counts every attempt that goes on the wire (first attempts and retries)."""

    def __init__(self, inner: httpx.BaseTransport, owner: Downstream):
        self._inner, self._owner = inner, owner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._owner._attempt_started()
        try:
            response = self._inner.handle_request(request)
        except httpx.HTTPError:
            self._owner.metrics.downstream_attempts.labels(self._owner.name, "error").inc()
            raise
        outcome = f"{response.status_code // 100}xx"
        self._owner.metrics.downstream_attempts.labels(self._owner.name, outcome).inc()
        return response


class _Switch(httpx.BaseTransport):
    """Delegates to the current :class:`ResilientTransport`; swapped when settings change."""

    def __init__(self, current: httpx.BaseTransport):
        self.current = current

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.current.handle_request(request)


class Downstream:
    """The client for one dependency, re-configured when its retry settings change."""

    def __init__(
        self,
        name: str,
        url: str,
        retry: WatchedJson[RetrySettings],
        metrics: ShopMetrics,
    ):
        self.name, self.url, self.metrics = name, url, metrics
        self._retry = retry
        self._lock = threading.Lock()
        self._local = threading.local()
        self._window = SlidingCounts(HEALTH_WINDOW_SECONDS, 10, ("calls", "failures"))
        pool = httpx.HTTPTransport(
            retries=0, limits=httpx.Limits(max_connections=128, max_keepalive_connections=32)
        )
        self._wire = _Counting(pool, self)
        self.settings = retry.get()
        self.resilience = Resilience(self.settings.policy())
        self._switch = _Switch(
            ResilientTransport(name, resilience=self.resilience, transport=self._wire)
        )
        self._client = httpx.Client(base_url=url, transport=self._switch)
        metrics.set_retry_settings(name, self.settings)

    def refresh(self) -> RetrySettings:
        """Take the current retry settings; build a new layer if they changed."""
        settings = self._retry.get()
        with self._lock:
            if settings != self.settings:
                self.settings = settings
                self.resilience = Resilience(settings.policy())
                self._switch.current = ResilientTransport(
                    self.name, resilience=self.resilience, transport=self._wire
                )
                self.metrics.set_retry_settings(self.name, settings)
            return settings

    def call(self, path: str, payload: dict[str, object], headers: dict[str, str]) -> CallResult:
        """POST ``payload`` to ``path`` as one logical call. It carries an ``Idempotency-Key``,
        as a payment call should (a real payments service dedupes retries by it), which is also
        what lets the resilience layer retry a POST at all."""
        settings = self.refresh()
        headers = {"Idempotency-Key": uuid.uuid4().hex, **headers}
        self._local.attempts = 0
        started = time.perf_counter()
        status: int | None = None
        body: object = None
        error: str | None = None
        rejected = False
        try:
            response = self._client.post(
                path, json=payload, headers=headers, timeout=settings.timeout_seconds
            )
            status = response.status_code
            try:
                body = response.json()
            except ValueError:
                body = None
        except CircuitOpenError as exc:
            error, rejected = f"circuit open: {exc}", True
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        result = CallResult(status, body, error, self._local.attempts, rejected)
        self._record(result, time.perf_counter() - started)
        return result

    def _attempt_started(self) -> None:
        self._local.attempts = getattr(self._local, "attempts", 0) + 1

    def _record(self, result: CallResult, seconds: float) -> None:
        if result.ok:
            outcome = "ok"
        elif result.rejected:
            outcome = "circuit_open"
        else:
            outcome = "failed"
        self.metrics.downstream_requests.labels(self.name, outcome).inc()
        self.metrics.downstream_duration.labels(self.name).observe(seconds)
        if result.attempts > 1:
            self.metrics.downstream_retries.labels(self.name).inc(result.attempts - 1)
        with self._lock:
            self._window.add(time.monotonic(), calls=1, failures=0 if result.ok else 1)

    def health(self) -> str:
        """``ok``, ``failing`` (over 10 % of the recent calls failed) or ``unknown`` (fewer
        than 5 calls in the last 30 s: no traffic is no evidence either way)."""
        with self._lock:
            totals = self._window.totals(time.monotonic())
        if totals["calls"] < HEALTH_MIN_CALLS:
            return "unknown"
        return (
            "failing" if totals["failures"] > HEALTH_MAX_FAILURE_RATIO * totals["calls"] else "ok"
        )

    def close(self) -> None:
        self._client.close()
