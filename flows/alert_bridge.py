"""Flow ``alert-bridge``: Prometheus' firing alerts -> one Prefect event each.

The trigger of the ``retry-storm`` runbook (issue 8): there is no Alertmanager in the sandbox
and Prefect OSS has no webhooks, so this flow reads ``GET /api/v1/alerts`` (one task,
:func:`tasks.alerts.read_alerts`) and emits ``runbooks.alert.firing`` for every firing alert
that concerns the runbook (:func:`decisions.alert_events.firing_for_runbook`). The automation
``deployments/automations.py`` matches those events and runs ``retry-storm/retry-storm``.

Meant to run every minute (a deployment with ``cron: "* * * * *"``, issue 9): a run is one
GET and a few queued events, well under a second. Running it more often than that, or twice at
once, is harmless: an alert's activation always becomes the same event id (see
:mod:`decisions.alert_events`), which the server counts once.

What it reports: the result lists every firing alert seen and every event sent (``no_change``
when nothing fires for the runbook, ``succeeded`` when every event was queued, ``failed`` when
Prefect refused one); a table artifact ``alert-bridge-<runbook>`` only when something fires, so
a quiet minute leaves nothing behind. Prometheus unreachable fails the run with
``UnavailableError``: a bridge that cannot see the alerts must not look like "all quiet".
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from blocks.http import HttpService
from decisions.alert_events import alert_event, firing_for_runbook
from runbooks import alerts as shipped
from runbooks.kit import Outcome, RunbookResult, Timeline, publish_table
from tasks.alerts import emit_alert_event, read_alerts

RUNBOOK = "alert-bridge"


class AlertBridgeParams(BaseModel):
    """Parameters of ``alert-bridge`` (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runbook: str = Field(
        shipped.RUNBOOK,
        description="Only alerts whose 'runbook' label is this runbook (for retry-storm, its "
        "alert names count too); empty: every firing alert.",
    )


class BridgedAlert(BaseModel):
    """One firing alert the run saw, and the event it became."""

    model_config = ConfigDict(frozen=True)

    alertname: str
    summary: str
    labels: dict[str, str]
    active_at: str
    value: float | str
    event_id: str
    resource_id: str
    emitted: bool = Field(description="False when Prefect did not queue the event.")


class AlertBridgeResult(RunbookResult):
    runbook_filter: str = ""
    alerts_seen: int = Field(0, description="Active alerts Prometheus returned (any runbook).")
    firing: tuple[BridgedAlert, ...] = ()
    events_emitted: int = 0


@flow(name="alert-bridge", log_prints=False)
def alert_bridge(params: AlertBridgeParams, prometheus: HttpService) -> AlertBridgeResult:
    """Read Prometheus' active alerts; emit ``runbooks.alert.firing`` per firing alert of
    ``params.runbook``; the alerts seen and the events sent."""
    timeline = Timeline()
    active = read_alerts(prometheus)
    chosen = firing_for_runbook(active, params.runbook)
    scope = params.runbook or "all"
    timeline.add(
        "read-alerts",
        f"{len(active)} active alert(s) at {prometheus.target}, {len(chosen)} firing for {scope}",
    )
    rows = []
    for alert in chosen:
        spec = alert_event(alert)
        sent = emit_alert_event(spec) is not None
        timeline.add("emit", f"{spec.summary} (event {spec.id})", ok=sent)
        rows.append(
            BridgedAlert(
                alertname=alert.alertname,
                summary=spec.summary,
                labels=alert.labels,
                active_at=spec.payload["activeAt"],
                value=spec.payload["value"],
                event_id=str(spec.id),
                resource_id=alert.resource_id,
                emitted=sent,
            )
        )
    if rows:
        publish_table(
            f"{RUNBOOK}-{scope}",
            [
                {
                    "alert": row.alertname,
                    "summary": row.summary,
                    "active_at": row.active_at,
                    "value": row.value,
                    "event_id": row.event_id,
                    "emitted": row.emitted,
                }
                for row in rows
            ],
            description=f"{RUNBOOK}: firing alerts for {scope} and their events",
        )
    emitted = sum(row.emitted for row in rows)
    if not rows:
        outcome, reason = Outcome.NO_CHANGE, f"no alert firing for {scope}"
    elif emitted == len(rows):
        outcome, reason = Outcome.SUCCEEDED, f"{emitted} firing alert(s) sent as events"
    else:
        outcome = Outcome.FAILED
        reason = (
            f"{len(rows) - emitted} of {len(rows)} alert event(s) not sent: Prefect has no "
            "events client here (is PREFECT_API_URL set?)"
        )
    return AlertBridgeResult.from_timeline(
        timeline,
        runbook=RUNBOOK,
        target=prometheus.target,
        outcome=outcome,
        reason=reason,
        dry_run=False,
        runbook_filter=params.runbook,
        alerts_seen=len(active),
        firing=tuple(rows),
        events_emitted=emitted,
    )
