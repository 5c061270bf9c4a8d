"""Prometheus alerts -> Prefect event specs: parsing, filtering, ids, bad input."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import pytest

from decisions.alert_events import (
    ALERT_FIRING_EVENT,
    SUMMARY_MAX_CHARS,
    Alert,
    MalformedAlertsError,
    alert_event,
    concerns,
    firing_for_runbook,
    parse_alerts,
)
from runbooks import alerts as shipped
from runbooks.kit.events import event_name

STORM_LABELS = {
    "alertname": shipped.RETRY_STORM_ALERT,
    "namespace": "default",
    "role": "checkout",
    "dependency": "payments",
    "severity": "critical",
    "runbook": shipped.RUNBOOK,
}


def _raw(
    labels: dict[str, str] | None = None,
    state: str = "firing",
    active_at: str = "2024-05-01T10:00:00.123456789Z",
    value: str = "4e+00",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "labels": dict(STORM_LABELS if labels is None else labels),
        "annotations": {"summary": "Retry storm: default/checkout retries payments at 400%"},
        "state": state,
        "activeAt": active_at,
        "value": value,
        **extra,
    }


def _alert(**kwargs: Any) -> Alert:
    return parse_alerts({"alerts": [_raw(**kwargs)]})[0]


def test_event_name_is_the_kits_style() -> None:
    assert event_name("alert", "firing") == ALERT_FIRING_EVENT


def test_parses_the_documented_answer() -> None:
    data = {
        "alerts": [
            _raw(keepFiringSince="2024-05-01T10:05:00Z"),  # newer Prometheus adds fields
            _raw(
                labels={"alertname": "Watchdog"},
                state="pending",
                active_at="2024-05-01T12:00:00+02:00",
                value="1e+00",
            ),
        ]
    }
    storm, watchdog = parse_alerts(data)
    assert storm.alertname == shipped.RETRY_STORM_ALERT
    assert storm.firing
    assert storm.value == 4.0
    assert storm.active_at.isoformat() == "2024-05-01T10:00:00.123456+00:00"
    assert not watchdog.firing
    assert watchdog.active_at.isoformat() == "2024-05-01T10:00:00+00:00"  # in UTC
    assert parse_alerts({"alerts": []}) == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "no 'alerts' list"),
        ({"alerts": {"a": 1}}, "no 'alerts' list"),
        ([], "no 'alerts' list"),
        ({"alerts": ["x"]}, r"alerts\[0\]: "),
        ({"alerts": [_raw(labels={"role": "x"})]}, r"alerts\[0\]\.labels: .*no alertname"),
        ({"alerts": [_raw(), _raw(state="resolved")]}, r"alerts\[1\]\.state"),
        ({"alerts": [_raw(active_at="yesterday")]}, r"alerts\[0\]\.activeAt"),
        ({"alerts": [_raw(active_at="2024-05-01T10:00:00")]}, r"alerts\[0\]\.activeAt"),
        ({"alerts": [_raw(value="lots")]}, r"alerts\[0\]\.value"),
        ({"alerts": [_raw(labels={"alertname": "a", "n": 3})]}, r"alerts\[0\]\.labels\.n"),
    ],
)
def test_malformed_answers_are_refused_naming_the_place(data: Any, message: str) -> None:
    with pytest.raises(MalformedAlertsError, match=message):
        parse_alerts(data)


def test_firing_for_runbook_keeps_firing_alerts_of_the_runbook_in_a_stable_order() -> None:
    breaker = _raw(labels={**STORM_LABELS, "alertname": shipped.BREAKER_OPEN_ALERT})
    relabelled = _raw(labels={k: v for k, v in STORM_LABELS.items() if k != "runbook"})
    relabelled["labels"]["dependency"] = "inventory"
    other = _raw(labels={"alertname": "DiskFull", "runbook": "disk"})
    pending = _raw(labels={**STORM_LABELS, "dependency": "ledger"}, state="pending")
    alerts = parse_alerts({"alerts": [other, _raw(), pending, relabelled, breaker]})

    chosen = firing_for_runbook(alerts, shipped.RUNBOOK)
    assert [(a.alertname, a.labels["dependency"]) for a in chosen] == [
        (shipped.BREAKER_OPEN_ALERT, "payments"),
        (shipped.RETRY_STORM_ALERT, "inventory"),  # no runbook label: its name counts
        (shipped.RETRY_STORM_ALERT, "payments"),
    ]
    assert firing_for_runbook(reversed(alerts), shipped.RUNBOOK) == chosen
    assert [a.alertname for a in firing_for_runbook(alerts, "disk")] == ["DiskFull"]
    assert len(firing_for_runbook(alerts, "")) == 4  # every firing alert
    assert firing_for_runbook(alerts, "blue-green") == ()


def test_alert_names_count_only_for_the_retry_storm_runbook() -> None:
    unlabelled = _alert(labels={"alertname": shipped.RETRY_STORM_ALERT})
    assert concerns(unlabelled, shipped.RUNBOOK)
    assert not concerns(unlabelled, "blue-green")


def test_event_of_a_firing_alert() -> None:
    alert = _alert()
    spec = alert_event(alert)
    assert spec.event == ALERT_FIRING_EVENT
    assert spec.summary == "retry_storm_detected: default/checkout -> payments"
    assert spec.id == alert.activation_id
    assert spec.id.version == 5
    resource_id = spec.resource["prefect.resource.id"]
    assert resource_id == f"prometheus.alert.retry_storm_detected.{alert.fingerprint}"
    assert len(alert.fingerprint) == 16
    assert spec.resource == {
        "prefect.resource.id": resource_id,
        "prefect.resource.name": spec.summary,
        "prometheus.alertname": "retry_storm_detected",
        **{f"prometheus.label.{k}": v for k, v in STORM_LABELS.items()},
    }
    assert spec.payload == {
        "labels": STORM_LABELS,
        "annotations": {"summary": "Retry storm: default/checkout retries payments at 400%"},
        "activeAt": "2024-05-01T10:00:00.123456+00:00",
        "value": 4.0,
        "summary": spec.summary,
    }


def test_one_activation_is_one_event_id_however_often_it_is_read() -> None:
    first = alert_event(_alert())
    again = alert_event(_alert(value="5e+00"))  # a later evaluation: other value, same id
    reordered = alert_event(_alert(labels=dict(reversed(list(STORM_LABELS.items())))))
    same_instant = alert_event(_alert(active_at="2024-05-01T12:00:00.123456+02:00"))
    assert first.id == again.id == reordered.id == same_instant.id
    assert first.resource == reordered.resource

    new_activation = alert_event(_alert(active_at="2024-05-01T11:00:00Z"))
    other_series = alert_event(_alert(labels={**STORM_LABELS, "role": "frontend"}))
    other_alert = alert_event(_alert(labels={**STORM_LABELS, "alertname": "x"}))
    assert len({first.id, new_activation.id, other_series.id, other_alert.id}) == 4
    assert new_activation.resource == first.resource  # same series, new activation
    assert other_series.resource["prefect.resource.id"] != first.resource["prefect.resource.id"]


def test_ids_are_stable_across_processes() -> None:
    """uuid5 and SHA-256, not hash(): pinned values catch an accidental change of the scheme
    (which would re-run the runbook once for every alert firing when the bridge is upgraded)."""
    alert = _alert()
    assert alert.activation_id == uuid.UUID("36a3e01c-4c5d-562f-b218-1127989bb685")
    assert alert.fingerprint == "685da3bc9f61579c"


def test_summary_without_caller_labels_and_bounded() -> None:
    bare = _alert(labels={"alertname": "Watchdog"})
    assert alert_event(bare).summary == "Watchdog"
    other = _alert(labels={"alertname": "DiskFull", "mount": "/var", "host": "db\n1"})
    assert alert_event(other).summary == "DiskFull: host=db 1, mount=/var"
    huge = _alert(labels={"alertname": "Big", "detail": "x" * 500})
    assert len(alert_event(huge).summary) == SUMMARY_MAX_CHARS


@pytest.mark.parametrize(("raw", "shown"), [("NaN", "NaN"), ("+Inf", "+Inf"), ("-Inf", "-Inf")])
def test_non_finite_values_stay_json(raw: str, shown: str) -> None:
    assert alert_event(_alert(value=raw)).payload["value"] == shown


def test_pending_alert_is_no_event() -> None:
    with pytest.raises(ValueError, match="pending, not firing"):
        alert_event(_alert(state="pending"))


def test_alerts_are_frozen() -> None:
    alert = _alert()
    with pytest.raises(ValueError, match="frozen"):
        alert.state = "pending"  # type: ignore[misc]


def test_the_module_is_pure() -> None:
    """No Prefect, kubernetes, boto3 or httpx behind the import (DESIGN: decisions are pure)."""
    code = (
        "import sys, decisions.alert_events; "
        "print(sorted({'prefect', 'kubernetes', 'boto3', 'httpx'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
