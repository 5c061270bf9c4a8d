"""The Prefect automations of the runbooks, as code, and applying them idempotently.

One automation today: **retry-storm on its alerts**. ``alert-bridge`` (``flows/alert_bridge.py``,
every minute) turns each firing Prometheus alert into a ``runbooks.alert.firing`` event; this
automation matches the events of the retry-storm alerts (``retry_storm_detected``,
``circuit_breaker_open``: :data:`runbooks.alerts.ALERT_NAMES`) and runs the deployment
``retry-storm/retry-storm`` with ``{"params": {"trigger": "<alert summary>"}}``, so the run's
audit trail says why it started. The runbook stays runnable by hand (``runbooks run
retry-storm``, the UI) and from chat-ops; the automation is one more way in.

:func:`apply_automations` creates or updates each automation by name (re-running it changes
nothing, and heals duplicates left by hand), after resolving the deployments they run: an
automation pointing at a deployment that does not exist would fail silently at 3 a.m., so a
missing deployment is refused up front with ``NotFoundError``.

Prefect's server merges a run's parameters over the deployment's defaults key by key at the top
level only: the action's ``params`` replaces a ``params`` default of the deployment as a whole
(``RetryStormParams``' own defaults then apply), while the blocks (``prometheus``,
``kubernetes``) come from the deployment. Keep the deployment's tuning in its blocks or in the
model's defaults, not in a ``params`` default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import httpx

from decisions.alert_events import ALERT_FIRING_EVENT, ALERTNAME_LABEL, RESOURCE_PREFIX
from runbooks import alerts as shipped
from runbooks.errors import NotFoundError, from_httpx

if TYPE_CHECKING:
    from prefect.automations import Automation
    from prefect.client.orchestration import SyncPrefectClient

RETRY_STORM_DEPLOYMENT = "retry-storm/retry-storm"
"""``<flow name>/<deployment name>`` of the deployment the automation runs."""
RETRY_STORM_AUTOMATION = "retry-storm: run on its alerts"
"""The automation's name: the key :func:`apply_automations` creates or updates by."""
RETRY_STORM_COOLDOWN = timedelta(minutes=30)
"""After a run is started, further retry-storm alert events start none for this long."""
TRIGGER_TEMPLATE = "{{ event.payload.summary }}"
"""Jinja over the triggering event: the alert's one-line summary, e.g.
``retry_storm_detected: shop/checkout -> payments`` (``decisions.alert_events``)."""
API_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class AppliedAutomation:
    """What :func:`apply_automations` did to one automation."""

    name: str
    id: UUID
    action: Literal["created", "updated", "unchanged"]
    duplicates_deleted: int = 0


def retry_storm_automation(deployment_id: UUID) -> Automation:
    """The automation that runs ``retry-storm`` when its alerts fire (not yet saved).

    Why each trigger field has its value:

    - ``expect = {runbooks.alert.firing}``: the bridge's event, one per firing alert activation;
      only firing alerts, never pending ones (Prometheus' ``for:`` already filtered blips).
    - ``match``: the resource is a Prometheus alert (``prometheus.alert.*``) and its
      ``prometheus.alertname`` is one of the two retry-storm alerts; any other alert the bridge
      forwards is ignored here.
    - ``posture = Reactive``, ``threshold = 1``: one firing alert is enough to act; the
      alert's own ``for: 1m`` and the 5-minute rate window are the debounce, not the trigger.
    - ``for_each`` empty, i.e. one bucket for all callers: one ``retry-storm`` run measures and
      contains *every* storming caller, so a cascade (checkout -> payments, then frontend ->
      checkout) must start one run, not one per alert; and the breaker the runbook itself opens
      as its kill switch raises ``circuit_breaker_open``, which must not start a second run
      against the first.
    - ``within = 30 min``: a reactive trigger fires on the first event, then ignores matching
      events until ``within`` has passed. 30 minutes covers a run (contain within 30 s, then
      wait for the dependency to heal and restore step by step) plus the alerts' own lag
      (5-minute window, ``for: 1m``, a 1-minute bridge). Duplicate event ids (the same
      activation seen again) are dropped by the server anyway, but only for 5-30 minutes and
      only in memory, so this window is what bounds re-runs: an alert still firing after it
      starts at most one more run per 30 minutes, a re-check the runbook answers with "no
      storm, nothing changed" or a new containment.

    The action runs the selected deployment with only ``params.trigger`` set (rendered from the
    event by the server's Jinja), so the deployment's blocks apply.
    """
    from prefect.automations import Automation, EventTrigger, Posture, RunDeployment

    return Automation(
        name=RETRY_STORM_AUTOMATION,
        description=(
            "Runs retry-storm/retry-storm when Prometheus fires retry_storm_detected or "
            "circuit_breaker_open (events from the alert-bridge flow); at most one run per "
            "30 minutes. Defined in deployments/automations.py: edit it there, not in the UI."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect={ALERT_FIRING_EVENT},
            match={
                "prefect.resource.id": f"{RESOURCE_PREFIX}*",
                ALERTNAME_LABEL: list(shipped.ALERT_NAMES),
            },
            for_each=set(),
            posture=Posture.Reactive,
            threshold=1,
            within=RETRY_STORM_COOLDOWN,
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=deployment_id,
                parameters={
                    "params": {"trigger": {"__prefect_kind": "jinja", "template": TRIGGER_TEMPLATE}}
                },
            )
        ],
    )


def apply_automations(client: SyncPrefectClient | None = None) -> tuple[AppliedAutomation, ...]:
    """Create or update every automation of the project by name; what was done to each.

    ``client``: a synchronous Prefect client (``get_client(sync_client=True)``); by default one
    on the configured API, with a 30 s timeout per call. Raises ``NotFoundError`` when a
    deployment an automation runs is not deployed, ``UnavailableError`` when the API is not
    reachable; nothing is created or changed then.
    """
    if client is not None:
        return _apply(client)
    from prefect.client.orchestration import get_client

    with get_client(
        sync_client=True, httpx_settings={"timeout": httpx.Timeout(API_TIMEOUT_SECONDS)}
    ) as own:
        return _apply(own)


def _apply(client: SyncPrefectClient) -> tuple[AppliedAutomation, ...]:
    deployment_id = deployment_id_by_name(client, RETRY_STORM_DEPLOYMENT)
    wanted = [retry_storm_automation(deployment_id)]
    return tuple(_upsert(client, automation) for automation in wanted)


def deployment_id_by_name(client: SyncPrefectClient, name: str) -> UUID:
    """The id of deployment ``<flow>/<deployment>``; ``NotFoundError`` saying how to fix it."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name).id
    except ObjectNotFound as exc:
        raise NotFoundError(
            f"deployment {name!r} is not deployed on the Prefect API at "
            f"{client.api_url}; deploy it first (runbooks serve or prefect deploy), then apply "
            "the automations again",
            target=name,
        ) from exc
    except httpx.HTTPError as exc:
        raise from_httpx(exc, f"read deployment {name!r}", target=str(client.api_url)) from exc


def _upsert(client: SyncPrefectClient, automation: Automation) -> AppliedAutomation:
    from prefect.automations import AutomationCore

    name = automation.name
    # Every field, so an update replaces whatever was edited by hand (the server writes only
    # the fields sent), but ``owner_resource``: the server's update model refuses it (it is
    # set on creation only, and ours own nothing).
    core = AutomationCore.model_validate(automation.model_dump(exclude={"id", "owner_resource"}))
    try:
        existing = client.read_automations_by_name(name)  # newest update first
        if not existing:
            return AppliedAutomation(name, client.create_automation(core), "created")
        keep, *duplicates = existing
        assert keep.id is not None
        action: Literal["updated", "unchanged"] = "unchanged"
        if _definition(keep) != _definition(core):
            client.update_automation(keep.id, core)
            action = "updated"
        for duplicate in duplicates:
            assert duplicate.id is not None
            client.delete_automation(duplicate.id)
    except httpx.HTTPError as exc:
        raise from_httpx(exc, f"apply automation {name!r}", target=str(client.api_url)) from exc
    return AppliedAutomation(name, keep.id, action, duplicates_deleted=len(duplicates))


def _definition(automation: Any) -> dict[str, Any]:
    """What an automation does, without the ids the server assigns (to compare a saved one)."""
    data = automation.model_dump(mode="json", exclude={"id", "created", "updated"})
    data.get("trigger", {}).pop("id", None)
    return data
