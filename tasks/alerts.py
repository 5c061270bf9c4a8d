"""Prometheus' active alerts (``GET /api/v1/alerts``), and sending an alert's Prefect event.

Errors are mapped as :mod:`tasks.prometheus` maps them: a timeout, a refused connection or a
5xx is ``UnavailableError``; a 4xx is the matching permanent error carrying Prometheus' own
``error`` sentence; a 200 whose body is not a Prometheus success document, or whose alerts are
malformed, is ``UnavailableError`` too (whatever answered is not a Prometheus we understand,
which a retry later or a fixed block URL may cure). The GET goes through the ``HttpService``
block's resilient client (explicit timeouts; retries on 502/503/504 and transport errors, the
one retry layer), so the task itself has no Prefect retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.http import HttpService
from decisions.alert_events import Alert, AlertEvent, MalformedAlertsError, parse_alerts
from runbooks.errors import UnavailableError, from_httpx, from_status
from tasks._http import json_object

if TYPE_CHECKING:
    from prefect.events import Event

ALERTS_PATH = "/api/v1/alerts"


@task(name="read-prometheus-alerts", cache_policy=NO_CACHE)
def read_alerts(prometheus: HttpService) -> tuple[Alert, ...]:
    """Every active alert (pending and firing) Prometheus' rules hold now; one GET."""
    action = f"read the active alerts of Prometheus at {prometheus.base_url}"
    try:
        with prometheus.get_client() as client:
            response = client.get(ALERTS_PATH)
            response.read()
    except httpx.HTTPError as exc:
        raise from_httpx(exc, action, target=prometheus.target) from exc
    document = json_object(response)
    if response.is_success and document.get("status") == "success":
        try:
            return parse_alerts(document.get("data"))
        except MalformedAlertsError as exc:
            raise UnavailableError(
                f"{action} got malformed alerts ({exc})",
                status=response.status_code,
                target=prometheus.target,
            ) from exc
    said = document.get("error")
    if isinstance(said, str) and said:
        detail = f"{document.get('errorType', 'error')}: {said}"
    else:
        detail = response.reason_phrase
    if response.is_success:
        raise UnavailableError(
            f"{action} got an answer that is not a Prometheus API response ({detail})",
            status=response.status_code,
            target=prometheus.target,
        )
    raise from_status(response.status_code, action, detail=detail, target=prometheus.target)


def emit_alert_event(spec: AlertEvent) -> Event | None:
    """Queue ``spec`` to Prefect's events worker; the Event, or None when Prefect sends no events.

    Not a Prefect task: it makes no call of its own (the events worker delivers in the
    background, a few seconds later at most), and a task run per alert would cost more than the
    event. Prefect's ``emit_event`` is used directly, not ``runbooks.kit.emit``, because the
    kit's events are about a runbook's target (``runbooks.target.<target>``) with random ids,
    while an alert event's resource is the alert series and its id is the activation's.
    Inside a flow run Prefect adds the run, flow and deployment as related resources.
    """
    from prefect.events import emit_event

    return emit_event(
        event=spec.event,
        resource=dict(spec.resource),
        payload=dict(spec.payload),
        id=spec.id,
    )
