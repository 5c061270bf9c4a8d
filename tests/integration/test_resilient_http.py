"""The httpx transport against a real loopback server: what is retried, what is not."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from decisions.backoff import Backoff
from decisions.breaker import BreakerSettings, BreakerState
from decisions.budget import RetryBudgetSettings
from runbooks import resilience
from runbooks.errors import CircuitOpenError
from runbooks.resilience import Resilience, ResiliencePolicy, ResilientTransport
from sandbox.outage import OutageServer

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")


@pytest.fixture
def backend() -> Iterator[OutageServer]:
    with OutageServer() as server:
        yield server


def _client(backend: OutageServer, **policy) -> tuple[httpx.Client, Resilience]:
    """A client whose budget never gets in the way, unless the test sets one."""
    policy.setdefault("budget", RetryBudgetSettings(min_retries_per_window=1000))
    layer = Resilience(ResiliencePolicy(**policy))
    transport = ResilientTransport("backend", resilience=layer)
    return httpx.Client(base_url=backend.url, transport=transport, timeout=2.0), layer


def test_transient_statuses_are_retried_with_full_jitter_waits(backend: OutageServer) -> None:
    client, layer = _client(backend, backoff=Backoff(base_seconds=0.5, cap_seconds=4))
    backend.script(503, 502)
    with resilience.testing() as slept, client:
        response = client.get("/orders")
    assert response.status_code == 200
    assert backend.requests == 3
    assert len(slept) == 2
    assert 0 <= slept[0] <= 1.0
    assert 0 <= slept[1] <= 2.0
    exposition = layer.metrics.render().decode()
    assert 'runbooks_client_retries_total{target="backend"} 2.0' in exposition
    assert 'runbooks_client_requests_total{target="backend"} 1.0' in exposition


def test_gives_up_after_three_attempts_and_returns_the_last_response(backend) -> None:
    client, _ = _client(backend)
    backend.fail(503)
    with client:
        response = client.get("/orders")
    assert response.status_code == 503
    assert backend.requests == 3


def test_retry_after_is_honoured(backend: OutageServer) -> None:
    client, _ = _client(backend)
    backend.fail(429, retry_after="2")
    with resilience.testing() as slept, client:
        client.get("/orders")
    assert slept == [2.0, 2.0]


def test_a_post_is_not_retried_unless_it_opts_in(backend: OutageServer) -> None:
    client, _ = _client(backend)
    backend.fail(503)
    with client:
        assert client.post("/orders", json={"id": 1}).status_code == 503
        assert backend.requests == 1
        client.post("/orders", json={"id": 1}, headers={"Idempotency-Key": "order-1"})
        assert backend.requests == 4
        client.post("/orders", json={"id": 1}, extensions={"retry_non_idempotent": True})
        assert backend.requests == 7
    assert {s.body for s in backend.seen} == {b'{"id":1}'}  # the body was replayed whole


def test_a_request_can_opt_out_of_retries(backend: OutageServer) -> None:
    client, _ = _client(backend)
    backend.fail(503)
    with client:
        assert client.get("/health", extensions={"no_retry": True}).status_code == 503
    assert backend.requests == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500, 501])
def test_permanent_and_unlisted_statuses_are_not_retried(backend, status: int) -> None:
    client, _ = _client(backend)
    backend.fail(status)
    with client:
        assert client.get("/orders").status_code == status
    assert backend.requests == 1


def test_connection_errors_are_retried_then_raised(backend: OutageServer) -> None:
    client, _ = _client(backend)
    backend.drop()
    with client, pytest.raises(httpx.TransportError):
        client.get("/orders")
    assert backend.requests == 3


def test_timeouts_are_retried_within_the_total_time_bound(backend: OutageServer) -> None:
    layer = Resilience(ResiliencePolicy(backoff=Backoff(max_attempts=5, max_total_seconds=0.5)))
    client = httpx.Client(
        base_url=backend.url,
        transport=ResilientTransport("backend", resilience=layer),
        timeout=httpx.Timeout(0.2),
    )
    backend.stall(5)
    with client, pytest.raises(httpx.ReadTimeout):
        client.get("/slow")
    assert backend.requests < 5  # the time bound stopped it before the attempts did


def test_the_budget_refuses_retries_during_an_outage(backend: OutageServer) -> None:
    client, layer = _client(
        backend,
        budget=RetryBudgetSettings(budget_percent=10, min_retries_per_window=0),
        breaker=BreakerSettings(minimum_calls=10_000),
    )
    backend.fail(503)
    with client:
        for _ in range(50):
            client.get("/orders")
    assert backend.requests <= 50 * 1.1
    assert layer.budget("backend").snapshot().refused_total >= 40
    assert 'runbooks_client_retries_refused_total{target="backend"}' in (
        layer.metrics.render().decode()
    )


def test_the_breaker_opens_then_fails_fast_then_recovers(backend: OutageServer) -> None:
    clock = [0.0]
    layer = Resilience(
        ResiliencePolicy(
            backoff=Backoff(max_attempts=1),
            breaker=BreakerSettings(minimum_calls=5, open_seconds=10, half_open_probes=1),
        ),
        clock=lambda: clock[0],
    )
    client = httpx.Client(
        base_url=backend.url, transport=ResilientTransport("backend", resilience=layer)
    )
    backend.fail(503)
    with client:
        for _ in range(5):
            client.get("/orders")
        assert layer.breaker("backend").state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError, match="backend is open"):
            client.get("/orders")
        assert backend.requests == 5
        backend.heal()
        clock[0] += 10
        assert client.get("/orders").status_code == 200
    assert layer.breaker("backend").state is BreakerState.CLOSED
    exposition = layer.metrics.render().decode()
    assert 'runbooks_client_breaker_state{state="closed",target="backend"} 1.0' in exposition
    assert 'runbooks_client_breaker_rejections_total{target="backend"} 1.0' in exposition


def test_every_request_carries_a_request_id_and_traceparent(backend: OutageServer) -> None:
    client, _ = _client(backend)
    backend.script(503)
    with client:
        client.get("/orders")
        client.get("/orders", headers={"X-Request-ID": "mine"})
    first, retry, mine = list(backend.seen)
    assert first.headers["x-request-id"] == retry.headers["x-request-id"]  # one logical request
    assert TRACEPARENT.match(first.headers["traceparent"])
    assert mine.headers["x-request-id"] == "mine"


def test_traceparent_follows_the_current_span(backend: OutageServer) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    client, _ = _client(backend)
    with client, trace.use_span(NonRecordingSpan(context)):
        client.get("/orders")
    assert backend.seen[-1].headers["traceparent"] == (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    )


def test_targets_have_separate_breakers(backend: OutageServer) -> None:
    layer = Resilience(ResiliencePolicy(breaker=BreakerSettings(minimum_calls=1)))
    failing = httpx.Client(
        base_url=backend.url, transport=ResilientTransport("payments", resilience=layer)
    )
    backend.script(500)
    with failing:
        failing.get("/")
    assert layer.breaker("payments").state is BreakerState.OPEN
    assert layer.breaker("inventory").state is BreakerState.CLOSED


def test_default_target_is_host_and_port(backend: OutageServer) -> None:
    layer = Resilience()
    with httpx.Client(transport=ResilientTransport(resilience=layer)) as client:
        client.get(f"{backend.url}/")
    host_port = backend.url.removeprefix("http://")
    assert f'target="{host_port}"' in layer.metrics.render().decode()
