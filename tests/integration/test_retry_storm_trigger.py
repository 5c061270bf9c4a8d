"""The retry-storm trigger end to end on loopback: Prometheus' alerts -> ``alert-bridge`` ->
Prefect events -> the automation -> a flow run of ``retry-storm/retry-storm``.

- A real Prometheus (Debian's, skipped with the reason when not installed) evaluates the
  shipped rules, ``for:`` shortened to 3 s so the test takes seconds and not minutes (the
  expressions, labels and annotations are the shipped ones; ``test_alert_rules.py`` proves
  they fire with the shipped ``for: 1m``), over a storming checkout pod's real metrics, plus an
  unrelated always-firing alert: the bridge reads it, forwards only the retry-storm alerts, and
  every read of one activation is the same event.
- The automation runs against the session's Prefect test server (whose ephemeral mode runs the
  triggers and actions services): a stand-in deployment ``retry-storm/retry-storm`` (no worker,
  so its runs stay scheduled), alerts served by a loopback stand-in of ``/api/v1/alerts`` so
  the test decides what fires when.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from polling import wait_for

from blocks.http import HttpService
from decisions.alert_events import alert_event, firing_for_runbook
from deployments.automations import (
    RETRY_STORM_AUTOMATION,
    RETRY_STORM_DEPLOYMENT,
    AppliedAutomation,
    apply_automations,
    retry_storm_automation,
)
from flows.alert_bridge import AlertBridgeParams, alert_bridge
from runbooks import alerts
from runbooks.errors import InvalidRequestError, UnavailableError
from runbooks.kit import Outcome
from runbooks.resilience.metrics import ClientMetrics
from sandbox.shop.metrics import ShopMetrics
from sandbox.stack import start_prometheus, stop_process
from tasks.alerts import read_alerts

CALLER = {"namespace": "shop", "role": "checkout"}
SHORT_FOR = "3s"


# --------------------------------------------------------------------------- real Prometheus


class _StormingPod:
    """A checkout pod's ``/metrics``: every scrape adds 20 calls to payments with 80 retries
    (a 400 % retry ratio) and its breaker to payments stays open."""

    def __init__(self) -> None:
        self.shop = ShopMetrics(role="checkout", version="v1", pod="checkout-a")
        self.client = ClientMetrics()
        from decisions.breaker import BreakerState

        self.client.set_breaker_state("payments", BreakerState.OPEN)
        self._lock = threading.Lock()

    def scrape(self) -> bytes:
        with self._lock:
            self.shop.downstream_requests.labels("payments", "failed").inc(20)
            self.shop.downstream_retries.labels("payments").inc(80)
            return self.shop.render(self.client.render())


class _Handler(BaseHTTPRequestHandler):
    answer: Callable[[], tuple[int, bytes]]

    def do_GET(self) -> None:
        status, body = type(self).answer()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(answer: Callable[[], tuple[int, bytes]]) -> tuple[ThreadingHTTPServer, str]:
    handler = type("Handler", (_Handler,), {"answer": staticmethod(answer)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="loopback-http", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping the storming pod and evaluating the shipped rules (``for:``
    shortened) and one unrelated rule every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    pod = _StormingPod()
    exporter, exporter_url = _serve(lambda: (200, pod.scrape()))
    document = yaml.safe_load(alerts.RETRY_STORM_RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["for"] = SHORT_FOR
    shipped = tmp_path / alerts.RETRY_STORM_RULES.name
    shipped.write_text(yaml.safe_dump(document, sort_keys=False))
    unrelated = tmp_path / "unrelated.rules.yml"
    unrelated.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "unrelated",
                        "rules": [
                            {"alert": "Watchdog", "expr": "vector(1)", "labels": {"runbook": "x"}}
                        ],
                    }
                ]
            }
        )
    )
    config = tmp_path / "prometheus.yml"
    target = exporter_url.removeprefix("http://")
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(shipped), str(unrelated)],
                "scrape_configs": [
                    {
                        "job_name": "pods",
                        "static_configs": [{"targets": [target], "labels": CALLER}],
                    }
                ],
            }
        )
    )
    process, url = start_prometheus(binary, config, tmp_path / "tsdb", tmp_path / "prom.log")
    try:
        yield url
    finally:
        stop_process(process)
        exporter.shutdown()
        exporter.server_close()


def _stored_events(ids: list[UUID]) -> dict[UUID, Any]:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter

    wanted = EventFilter(
        id=EventIDFilter(id=ids),
        occurred=EventOccurredFilter(since=datetime(2020, 1, 1, tzinfo=UTC)),
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=wanted, limit=50)
    return {event.id: event for event in page.events}


def test_bridge_forwards_the_firing_retry_storm_alerts_of_a_real_prometheus(
    prometheus: str, prefect_server: str
) -> None:
    block = HttpService(base_url=prometheus)
    wanted = {alerts.RETRY_STORM_ALERT, alerts.BREAKER_OPEN_ALERT}

    def firing() -> Any:
        found = firing_for_runbook(read_alerts.fn(block), alerts.RUNBOOK)
        return found if {a.alertname for a in found} == wanted else None

    chosen = wait_for("both retry-storm alerts firing", firing, 60)
    active = read_alerts.fn(block)
    assert "Watchdog" in {a.alertname for a in active}  # seen, not forwarded
    assert [alert_event(a).summary for a in chosen] == [
        "circuit_breaker_open: shop/checkout -> payments",
        "retry_storm_detected: shop/checkout -> payments",
    ]

    first = alert_bridge(AlertBridgeParams(), block)
    again = alert_bridge(AlertBridgeParams(), block)
    for result in (first, again):
        assert result.outcome is Outcome.SUCCEEDED, result.reason
        assert result.alerts_seen >= 3
        assert result.events_emitted == 2
        assert {row.alertname for row in result.firing} == wanted
    storm = next(r for r in first.firing if r.alertname == alerts.RETRY_STORM_ALERT)
    assert storm.labels == {
        "alertname": alerts.RETRY_STORM_ALERT,
        "severity": "critical",
        "runbook": alerts.RUNBOOK,
        **CALLER,
        "dependency": "payments",
    }
    assert storm.value == pytest.approx(4.0)
    # one activation, one event id, however often the bridge runs
    ids = [UUID(row.event_id) for row in first.firing]
    assert ids == [UUID(row.event_id) for row in again.firing]

    def both_stored() -> dict[UUID, Any] | None:
        found = _stored_events(ids)
        return found if len(found) == 2 else None

    stored = wait_for("both events stored", both_stored, 20)
    event = stored[UUID(storm.event_id)]
    assert event.event == "runbooks.alert.firing"
    assert event.resource.id == storm.resource_id
    assert event.resource["prometheus.label.dependency"] == "payments"
    assert event.payload["summary"] == "retry_storm_detected: shop/checkout -> payments"
    assert {r.role for r in event.related} >= {"flow-run", "flow"}  # linked to the bridge's run


# --------------------------------------------------------------------------- stand-in alerts


class _Alerts:
    """What the loopback stand-in of ``/api/v1/alerts`` answers (set by the test)."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.status = 200
        self.body: bytes | None = None

    def answer(self) -> tuple[int, bytes]:
        if self.body is not None:
            return self.status, self.body
        document = {"status": "success", "data": {"alerts": self.alerts}}
        return self.status, json.dumps(document).encode()


@pytest.fixture
def stand_in() -> Iterator[tuple[_Alerts, HttpService]]:
    state = _Alerts()
    server, url = _serve(state.answer)
    try:
        yield state, HttpService(base_url=url)
    finally:
        server.shutdown()
        server.server_close()


def _alert(alertname: str, active_at: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": alertname, **labels},
        "annotations": {},
        "state": "firing",
        "activeAt": active_at,
        "value": "4e+00",
    }


def _storm(alertname: str = alerts.RETRY_STORM_ALERT, active_at: str = "") -> dict[str, Any]:
    return _alert(
        alertname,
        active_at or datetime.now(UTC).isoformat(),
        namespace="default",
        role="checkout",
        dependency="payments",
        severity="critical",
        runbook=alerts.RUNBOOK,
    )


def test_read_alerts_maps_errors(stand_in: tuple[_Alerts, HttpService]) -> None:
    state, block = stand_in
    state.alerts = [{"labels": {}, "state": "firing", "activeAt": "2024-01-01T00:00:00Z"}]
    with pytest.raises(UnavailableError, match=r"malformed alerts \(alerts\[0\]\.labels"):
        read_alerts.fn(block)
    state.status, state.body = 400, b'{"status":"error","errorType":"bad_data","error":"nope"}'
    with pytest.raises(InvalidRequestError, match="bad_data: nope"):
        read_alerts.fn(block)
    state.status, state.body = 200, b"<html>a proxy</html>"
    with pytest.raises(UnavailableError, match="not a Prometheus API response"):
        read_alerts.fn(block)
    state.status, state.body = 200, b'{"status":"success","data":{}}'
    with pytest.raises(UnavailableError, match="no 'alerts' list"):
        read_alerts.fn(block)


def test_bridge_with_nothing_firing_changes_nothing(
    stand_in: tuple[_Alerts, HttpService], prefect_server: str
) -> None:
    state, block = stand_in
    state.alerts = [_alert("Watchdog", "2024-01-01T00:00:00Z", runbook="x")]
    result = alert_bridge(AlertBridgeParams(), block)
    assert result.outcome is Outcome.NO_CHANGE
    assert result.reason == "no alert firing for retry-storm"
    assert result.alerts_seen == 1
    assert result.firing == ()


def test_unreachable_prometheus_fails_the_bridge() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    block = HttpService(base_url=f"http://127.0.0.1:{port}", connect_timeout_seconds=1)
    with pytest.raises(UnavailableError, match="read the active alerts of Prometheus"):
        read_alerts.fn(block)


# --------------------------------------------------------------------------- the automation


def _flow_runs(deployment_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


@pytest.fixture
def retry_storm_deployment(prefect_server: str) -> Iterator[UUID]:
    """A stand-in ``retry-storm/retry-storm`` deployment (no worker: its runs stay scheduled),
    and no automation of ours before or after the test."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(RETRY_STORM_AUTOMATION):
            client.delete_automation(automation.id)
        flow_id = client.create_flow_from_name("retry-storm")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="retry-storm",
            parameters={"kubernetes": "from-the-deployment"},
            enforce_parameter_schema=False,
        )
    try:
        yield deployment_id
    finally:
        with get_client(sync_client=True) as client:
            for automation in client.read_automations_by_name(RETRY_STORM_AUTOMATION):
                client.delete_automation(automation.id)
            client.delete_deployment(deployment_id)


def test_apply_automations_refuses_a_missing_deployment(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from runbooks.errors import NotFoundError

    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectNotFound):  # not deployed: what this test wants
            client.delete_deployment(client.read_deployment_by_name(RETRY_STORM_DEPLOYMENT).id)
        with pytest.raises(NotFoundError, match="'retry-storm/retry-storm' is not deployed"):
            apply_automations(client)
        assert client.read_automations_by_name(RETRY_STORM_AUTOMATION) == []


def test_automation_runs_retry_storm_once_per_storm(
    retry_storm_deployment: UUID, stand_in: tuple[_Alerts, HttpService]
) -> None:
    from prefect.automations import AutomationCore
    from prefect.client.orchestration import get_client

    [first] = apply_automations()
    assert first.action == "created"
    assert apply_automations() == (
        AppliedAutomation(RETRY_STORM_AUTOMATION, first.id, "unchanged"),
    )
    # a copy made by hand and a pause in the UI: applying again leaves one, as defined
    copy = retry_storm_automation(retry_storm_deployment).model_dump(exclude={"id"})
    with get_client(sync_client=True) as client:
        client.create_automation(AutomationCore(**copy))
        client.pause_automation(first.id)
        edited = client.read_automation(first.id)
        edited.tags = ["edited-in-the-ui"]
        client.update_automation(
            first.id, AutomationCore(**edited.model_dump(exclude={"id", "owner_resource"}))
        )
    [healed] = apply_automations()
    assert healed.duplicates_deleted == 1
    assert healed.action == "updated"
    assert apply_automations() == (
        AppliedAutomation(RETRY_STORM_AUTOMATION, healed.id, "unchanged"),
    )
    with get_client(sync_client=True) as client:
        [saved] = client.read_automations_by_name(RETRY_STORM_AUTOMATION)
    assert saved.id == healed.id
    assert saved.enabled
    assert saved.tags == []
    assert saved.actions[0].deployment_id == retry_storm_deployment

    state, block = stand_in
    bridge_all = AlertBridgeParams(runbook="")  # forward every alert, the automation filters

    # an unrelated alert: forwarded, stored, and no run (had it matched, the run below would
    # carry its summary, and the cool-down would have swallowed the storm's event)
    state.alerts = [_alert("DiskFull", datetime.now(UTC).isoformat(), mount="/var")]
    unrelated = alert_bridge(bridge_all, block)
    assert unrelated.events_emitted == 1
    wait_for(
        "unrelated event stored", lambda: _stored_events([UUID(unrelated.firing[0].event_id)]), 20
    )
    time.sleep(1)  # the triggers service saw it when the persister did; give it a moment more
    assert _flow_runs(retry_storm_deployment) == []

    # the storm: one run, its trigger rendered from the event
    storm = _storm()
    state.alerts = [storm]
    fired = alert_bridge(bridge_all, block)
    assert fired.outcome is Outcome.SUCCEEDED
    [run] = wait_for("a retry-storm run", lambda: _flow_runs(retry_storm_deployment), 30)
    assert run.parameters == {
        "kubernetes": "from-the-deployment",
        "params": {"trigger": "retry_storm_detected: default/checkout -> payments"},
    }
    assert run.state.is_scheduled()

    # the same activation seen again, and the breaker the runbook opens: no second run
    breaker = _storm(alerts.BREAKER_OPEN_ALERT)
    state.alerts = [storm, breaker]
    later = alert_bridge(bridge_all, block)
    assert [r.event_id for r in later.firing if r.alertname == alerts.RETRY_STORM_ALERT] == [
        fired.firing[0].event_id
    ]
    breaker_id = next(
        UUID(r.event_id) for r in later.firing if r.alertname != alerts.RETRY_STORM_ALERT
    )
    wait_for("breaker event stored", lambda: _stored_events([breaker_id]), 20)
    time.sleep(2)  # the triggers service evaluates as events arrive; give it a moment more
    assert [r.id for r in _flow_runs(retry_storm_deployment)] == [run.id]
