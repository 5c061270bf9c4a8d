"""The pod's Prometheus metrics: what the runbooks' analyses query.

One registry per process, rendered on ``/metrics`` together with the resilience layer's own
counters (``runbooks_client_*``, from :meth:`ClientMetrics.render`), in one text exposition:

- ``shop_requests_total{role,route,status}`` and ``shop_request_duration_seconds{role,route}``
  (buckets from 5 ms to 5 s, fine enough around 0.1-1.5 s for a p95 via
  ``histogram_quantile``) for every request, probes and scrapes included, as a real server
  counts them; the blue-green analysis filters on ``route``;
- ``shop_downstream_requests_total{dependency,outcome}`` (logical calls: ``ok``, ``failed``,
  ``circuit_open``), ``shop_downstream_attempts_total{dependency,outcome}`` (every attempt on
  the wire: ``2xx`` .. ``5xx``, ``error``), ``shop_downstream_retries_total{dependency}``,
  ``shop_downstream_duration_seconds{dependency}``: unlike the layer's counters these survive a
  retry-config reload, so a storm and its containment read as one series;
- ``shop_retry_*`` gauges with the retry settings in force, so a runbook can check that a
  ConfigMap change was picked up; ``shop_config_reloads_total{file,result}``;
- ``shop_build_info{role,version,pod}`` and the standard ``process_*`` collector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

if TYPE_CHECKING:
    from sandbox.shop.downstream import RetrySettings

DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0,
)  # fmt: skip


class ShopMetrics:
    def __init__(self, role: str, version: str, pod: str):
        self.role = role
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        Gauge(
            "shop_build_info",
            "The version (image tag) and role this pod runs; always 1.",
            ("role", "version", "pod"),
            registry=registry,
        ).labels(role, version, pod).set(1)
        self.requests = Counter(
            "shop_requests",
            "HTTP requests served, by route and status.",
            ("role", "route", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "shop_request_duration_seconds",
            "Time to serve a request, from its request line to the last byte of the answer.",
            ("role", "route"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "shop_requests_in_flight", "Requests being served now.", registry=registry
        )
        self.downstream_requests = Counter(
            "shop_downstream_requests",
            "Logical calls to the dependency, by outcome (ok, failed, circuit_open).",
            ("dependency", "outcome"),
            registry=registry,
        )
        self.downstream_attempts = Counter(
            "shop_downstream_attempts",
            "Attempts sent to the dependency (first attempts and retries), by answer class.",
            ("dependency", "outcome"),
            registry=registry,
        )
        self.downstream_retries = Counter(
            "shop_downstream_retries",
            "Retries sent to the dependency.",
            ("dependency",),
            registry=registry,
        )
        self.downstream_duration = Histogram(
            "shop_downstream_duration_seconds",
            "Time of a logical call to the dependency, retries and backoff included.",
            ("dependency",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.config_reloads = Counter(
            "shop_config_reloads",
            "Config files (flags, retry, fault) taken (result=ok) or refused (result=error).",
            ("file", "result"),
            registry=registry,
        )
        self.retry_max_attempts = Gauge(
            "shop_retry_max_attempts",
            "Attempts per downstream call in force.",
            ("dependency",),
            registry=registry,
        )
        self.retry_budget_percent = Gauge(
            "shop_retry_budget_percent",
            "Retry budget in force (% of requests); -1 when there is no budget.",
            ("dependency",),
            registry=registry,
        )
        self.retry_breaker_enabled = Gauge(
            "shop_retry_breaker_enabled",
            "1 when the circuit breaker in front of the dependency can open.",
            ("dependency",),
            registry=registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(self.role, route, str(status)).inc()
        self.duration.labels(self.role, route).observe(seconds)

    def config_reloaded(self, name: str, ok: bool) -> None:
        self.config_reloads.labels(name, "ok" if ok else "error").inc()

    def set_retry_settings(self, dependency: str, settings: RetrySettings) -> None:
        self.retry_max_attempts.labels(dependency).set(settings.max_attempts)
        budget = settings.budget_percent
        self.retry_budget_percent.labels(dependency).set(-1 if budget is None else budget)
        self.retry_breaker_enabled.labels(dependency).set(1 if settings.breaker_enabled else 0)

    def render(self, *extra: bytes) -> bytes:
        """This registry's exposition followed by ``extra`` ones (distinct metric names)."""
        return b"".join((generate_latest(self.registry), *extra))
