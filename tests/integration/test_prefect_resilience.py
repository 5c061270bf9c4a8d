"""The resilience layer in Prefect runs: breaker events; task retries from the error tree."""

from __future__ import annotations

import time

import httpx
import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from decisions.breaker import BreakerSettings
from runbooks.errors import NotFoundError, UnavailableError, retry_transient
from runbooks.resilience import Backoff, Resilience, ResiliencePolicy, ResilientTransport
from sandbox.outage import OutageServer

pytestmark = pytest.mark.usefixtures("prefect_server")


def _events(name: str, target: str, deadline_seconds: float = 20.0) -> list:
    """Events of ``name`` about ``target``; delivered asynchronously, so poll, bounded."""
    wanted = EventFilter(
        event=EventNameFilter(name=[name]),
        resource=EventResourceFilter(id=[f"runbooks.target.{target}"]),
    )
    deadline = time.monotonic() + deadline_seconds
    with get_client(sync_client=True) as client:
        while True:
            # limit: Prefect's client default (100) is above its server's maximum (50)
            page = client.read_events(wanted, limit=50)
            if page.events or time.monotonic() > deadline:
                return page.events
            time.sleep(0.2)


def test_a_breaker_opening_inside_a_flow_run_is_an_event() -> None:
    layer = Resilience(
        ResiliencePolicy(backoff=Backoff(max_attempts=1), breaker=BreakerSettings(minimum_calls=2))
    )

    @flow
    def call_a_failing_dependency(url: str) -> int:
        transport = ResilientTransport("payments-in-flow", resilience=layer)
        with httpx.Client(transport=transport) as client:
            return sum(client.get(url).status_code for _ in range(2))

    with OutageServer() as backend:
        backend.fail(503)
        call_a_failing_dependency(backend.url)
    events = _events("runbooks.resilience.breaker-opened", "payments-in-flow")
    assert len(events) == 1
    event = events[0]
    assert event.resource.id == "runbooks.target.payments-in-flow"
    assert event.payload["to_state"] == "open"
    assert "failure rate 100%" in event.payload["reason"]


def test_outside_a_run_no_event_and_no_prefect_needed() -> None:
    layer = Resilience(
        ResiliencePolicy(backoff=Backoff(max_attempts=1), breaker=BreakerSettings(minimum_calls=1))
    )
    with (
        OutageServer() as backend,
        httpx.Client(transport=ResilientTransport("outside-a-run", resilience=layer)) as client,
    ):
        backend.fail(503)
        client.get(backend.url)
    assert _events("runbooks.resilience.breaker-opened", "outside-a-run", 2.0) == []


def test_prefect_task_retries_transient_errors_only() -> None:
    calls: list[str] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
    def flaky(kind: str) -> str:
        calls.append(kind)
        if kind == "transient" and calls.count(kind) < 3:
            raise UnavailableError("wait for rollout failed: API answered 503")
        if kind == "permanent":
            raise NotFoundError("read Deployment shop/web found nothing")
        return "done"

    @flow
    def runbook(kind: str) -> str:
        return flaky(kind)

    assert runbook("transient") == "done"
    assert calls.count("transient") == 3
    with pytest.raises(NotFoundError):
        runbook("permanent")
    assert calls.count("permanent") == 1
