"""Prometheus counters of the resilience layer, one set per :class:`Resilience` instance.

Each instance owns its ``CollectorRegistry`` so that two layers in one process (a benchmark
comparing settings, tests, a demo pod) never share or clash on series. Exposed in the text
format by :meth:`ClientMetrics.render`, which the sandbox's pods serve on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from decisions.breaker import BreakerState


class ClientMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("target",)
        self.requests = Counter(
            "runbooks_client_requests",
            "Logical requests (first attempts) sent by the resilience layer.",
            labels,
            registry=self.registry,
        )
        self.attempts = Counter(
            "runbooks_client_attempts",
            "Attempts that reached the target (first attempts and retries).",
            (*labels, "outcome"),
            registry=self.registry,
        )
        self.retries = Counter(
            "runbooks_client_retries", "Retries sent.", labels, registry=self.registry
        )
        self.retries_refused = Counter(
            "runbooks_client_retries_refused",
            "Retries refused by the retry budget.",
            labels,
            registry=self.registry,
        )
        self.breaker_rejections = Counter(
            "runbooks_client_breaker_rejections",
            "Calls not made because the circuit breaker was open.",
            labels,
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "runbooks_client_breaker_state",
            "1 for the circuit breaker's current state, 0 for the others.",
            (*labels, "state"),
            registry=self.registry,
        )

    def set_breaker_state(self, target: str, state: BreakerState) -> None:
        for each in BreakerState:
            self.breaker_state.labels(target=target, state=each.value).set(
                1 if each is state else 0
            )

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)
