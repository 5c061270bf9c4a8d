"""Prometheus alerts as Prefect events: what the ``alert-bridge`` flow reads and what it emits.

Why a bridge: the retry-storm alerts (:mod:`runbooks.alerts`) fire in Prometheus, but the
sandbox has no Alertmanager and Prefect OSS has no webhook endpoint, so nothing would tell
Prefect. ``alert-bridge`` reads Prometheus' firing alerts (``GET /api/v1/alerts``) every minute
and emits one Prefect event per firing alert; an automation (``deployments/automations.py``)
matches those events and runs the runbook. This module is the pure half: the alert as the API
returns it, which alerts concern a runbook, and the exact event each one becomes.

Why the event has a deterministic id: the bridge is stateless and runs every minute, so an alert
that keeps firing is seen again and again. The id is a UUID5 over the alert's name, its labels
and ``activeAt`` (when this activation began), so every sighting of one activation is *the same
event*: Prefect's server drops an event whose id it has already seen (its event publisher
de-duplicates by id for 5 minutes, and the triggers service skips ids it has evaluated in the
last 30 minutes), so the event feed holds one event per activation and an automation counts it
once. A new activation (the alert resolved, then fired again) has a new ``activeAt``, hence a
new id. Those server windows are in memory and bounded, so the automation's trigger adds its own
cool-down (see ``deployments/automations.py``) rather than relying on them alone.

Why the resource is the alert *series* (``prometheus.alert.<alertname>.<hash of the labels>``)
and every label is a resource label (``prometheus.label.<name>``): an automation or a person can
then match on any label (the alert name, the caller's namespace, the dependency) without
parsing a payload, and all activations of one series share one resource in the UI.

Pure: no I/O, no Prefect; the flow hands :class:`AlertEvent` to Prefect's ``emit_event``.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from runbooks import alerts as shipped

ALERT_FIRING_EVENT = "runbooks.alert.firing"
"""``runbooks.kit.event_name("alert", "firing")``: named like every runbook event (the kit is not
imported here, as it imports Prefect)."""

RESOURCE_PREFIX = "prometheus.alert."
ALERTNAME_LABEL = "prometheus.alertname"
LABEL_PREFIX = "prometheus.label."
SUMMARY_MAX_CHARS = 200
"""A summary is one line for a flow parameter and an audit trail, not a description."""

_ACTIVATION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:runbooks:prometheus-alert-activation")
_CALLER_AND_DEPENDENCY = ("namespace", "role", "dependency")


class MalformedAlertsError(ValueError):
    """The ``/api/v1/alerts`` answer is not the document Prometheus documents; the message names
    the first wrong place (``alerts[2].labels``)."""


class Alert(BaseModel):
    """One alert as ``GET /api/v1/alerts`` returns it (pending or firing).

    ``activeAt`` is when the alert's expression started holding (the alert turns firing once it
    has held for the rule's ``for:``). ``value`` is the expression's value at the last rule
    evaluation; Prometheus sends it as a string, and it may be ``NaN`` or ``+Inf``.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    labels: dict[str, str] = Field(description="The alert's labels, alertname included.")
    annotations: dict[str, str] = Field(default_factory=dict)
    state: Literal["pending", "firing", "inactive"]
    active_at: AwareDatetime = Field(alias="activeAt")
    value: float

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("alertname"):
            raise ValueError("has no alertname label")
        return value

    @field_validator("active_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def alertname(self) -> str:
        return self.labels["alertname"]

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    @property
    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the sorted labels: the same series, the same value, in
        every process (Python's ``hash()`` is salted per process)."""
        return hashlib.sha256(_canonical_labels(self.labels).encode()).hexdigest()[:16]

    @property
    def resource_id(self) -> str:
        return f"{RESOURCE_PREFIX}{self.alertname}.{self.fingerprint}"

    @property
    def activation_id(self) -> uuid.UUID:
        """The event id of this activation: UUID5 over alertname, labels and ``activeAt``."""
        name = "\n".join(
            (self.alertname, _canonical_labels(self.labels), self.active_at.isoformat())
        )
        return uuid.uuid5(_ACTIVATION_NAMESPACE, name)

    @property
    def summary(self) -> str:
        """One line: ``retry_storm_detected: shop/checkout -> payments`` for an alert with the
        caller and dependency labels, else the alert name and its other labels."""
        labels = self.labels
        if all(labels.get(name) for name in _CALLER_AND_DEPENDENCY):
            text = (
                f"{self.alertname}: {labels['namespace']}/{labels['role']} -> "
                f"{labels['dependency']}"
            )
        else:
            rest = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
            text = f"{self.alertname}: {rest}" if rest else self.alertname
        text = " ".join(text.split())  # label values may hold line breaks
        if len(text) > SUMMARY_MAX_CHARS:
            text = text[: SUMMARY_MAX_CHARS - 1] + "…"
        return text


class AlertEvent(BaseModel):
    """The Prefect event for one firing alert, ready for ``prefect.events.emit_event``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    event: str
    resource: dict[str, str]
    payload: dict[str, Any]
    summary: str


def parse_alerts(data: Any) -> tuple[Alert, ...]:
    """The alerts of the ``data`` object of a ``/api/v1/alerts`` answer (``{"alerts": [...]}``).

    Raises :class:`MalformedAlertsError` naming the first place that is not as Prometheus
    documents it, since acting on half-read alerts would trigger (or miss) a runbook.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("alerts"), list):
        raise MalformedAlertsError(
            "the alerts answer has no 'alerts' list in its data (is this a Prometheus "
            "/api/v1/alerts endpoint?)"
        )
    parsed = []
    for index, item in enumerate(data["alerts"]):
        try:
            parsed.append(Alert.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            place = f"alerts[{index}]" + (f".{where}" if where else "")
            raise MalformedAlertsError(f"{place}: {first['msg']}") from exc
    return tuple(parsed)


def concerns(alert: Alert, runbook: str) -> bool:
    """True when ``alert`` points at ``runbook``: its ``runbook`` label, or, for the shipped
    retry-storm alerts, their name (a Prometheus that relabels away ``runbook`` still counts).
    An empty ``runbook`` means every alert."""
    if not runbook:
        return True
    if alert.labels.get("runbook") == runbook:
        return True
    return runbook == shipped.RUNBOOK and alert.alertname in shipped.ALERT_NAMES


def firing_for_runbook(alerts: Iterable[Alert], runbook: str) -> tuple[Alert, ...]:
    """The firing alerts that concern ``runbook`` (pending ones are not yet alerts), in a stable
    order (name, then labels), so runs and tests see them alike."""
    chosen = [alert for alert in alerts if alert.firing and concerns(alert, runbook)]
    return tuple(sorted(chosen, key=lambda a: (a.alertname, _canonical_labels(a.labels))))


def alert_event(alert: Alert) -> AlertEvent:
    """The ``runbooks.alert.firing`` event of one firing alert.

    Resource: the alert series, with ``prometheus.alertname`` and a ``prometheus.label.<name>``
    per label. Payload: labels, annotations, ``activeAt``, value (a number; ``NaN`` / ``+Inf``
    as Prometheus spells them, since JSON has no such numbers) and the one-line summary that
    the automation hands to the runbook as its ``trigger``.
    """
    if not alert.firing:
        raise ValueError(f"alert {alert.summary!r} is {alert.state}, not firing: no event")
    summary = alert.summary
    resource = {
        "prefect.resource.id": alert.resource_id,
        "prefect.resource.name": summary,
        ALERTNAME_LABEL: alert.alertname,
    }
    resource |= {f"{LABEL_PREFIX}{name}": value for name, value in sorted(alert.labels.items())}
    value: float | str = alert.value if math.isfinite(alert.value) else _prometheus_float(alert)
    payload = {
        "labels": dict(sorted(alert.labels.items())),
        "annotations": dict(sorted(alert.annotations.items())),
        "activeAt": alert.active_at.isoformat(),
        "value": value,
        "summary": summary,
    }
    return AlertEvent(
        id=alert.activation_id,
        event=ALERT_FIRING_EVENT,
        resource=resource,
        payload=payload,
        summary=summary,
    )


def _canonical_labels(labels: Mapping[str, str]) -> str:
    return json.dumps(sorted(labels.items()), separators=(",", ":"), ensure_ascii=False)


def _prometheus_float(alert: Alert) -> str:
    if math.isnan(alert.value):
        return "NaN"
    return "+Inf" if alert.value > 0 else "-Inf"
