"""The Prefect automations of the runbooks, as code, and applying them idempotently.

Three automations:

**retry-storm on its alerts**. ``alert-bridge`` (``flows/alert_bridge.py``,
every minute) turns each firing Prometheus alert into a ``runbooks.alert.firing`` event; this
automation matches the events of the retry-storm alerts (``retry_storm_detected``,
``circuit_breaker_open``: :data:`runbooks.alerts.ALERT_NAMES`) and runs the deployment
``retry-storm/retry-storm`` with ``{"params": {"trigger": "<alert summary>"}}``, so the run's
audit trail says why it started. The runbook stays runnable by hand (``runbooks run
retry-storm``, the UI) and from chat-ops; the automation is one more way in.

**Notify on rollback** and **notify on failed runs** post to Slack through the saved
``slack-incoming-webhook`` block (:class:`blocks.slack.SlackIncomingWebhook`, default name
``runbooks``): the first on our runbooks' rollback events (:data:`ROLLBACK_EVENTS`), the second
when a flow run tagged ``runbooks`` ends Failed or Crashed. See
:func:`rollback_notification_automation` for why the action is Prefect's ``CallWebhook`` on a
Prefect ``Webhook`` block that :func:`apply_automations` keeps in step with ours. With no Slack
block saved they are skipped with a warning (the retry-storm automation still applies).

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

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import httpx

from decisions.alert_events import ALERT_FIRING_EVENT, ALERTNAME_LABEL, RESOURCE_PREFIX
from runbooks import alerts as shipped
from runbooks.errors import InvalidRequestError, NotFoundError, from_httpx
from runbooks.notify import DEFAULT_WEBHOOK_BLOCK, NO_LINK, NO_REASON, message_template

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

ROLLBACK_NOTIFICATION_AUTOMATION = "runbooks: notify Slack on rollback"
FAILURE_NOTIFICATION_AUTOMATION = "runbooks: notify Slack on failed runs"
ROLLBACK_EVENTS = (
    "runbooks.blue-green.rolled-back",
    "runbooks.geo-routing.rolled-back",
    "runbooks.geo-routing.rollback-failed",
    "runbooks.tracing-rollout.reverted",
    "runbooks.retry-storm.relapsed",
)
"""The events our flows emit when they undid a change (``grep 'emit(' flows``): blue-green's and
geo-routing's rollbacks (and geo-routing's failed one), tracing-rollout's revert of a service
whose traces did not arrive, retry-storm's relapse (a restored step re-applied)."""
FAILED_RUN_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")
RUNBOOKS_TAG = "runbooks"
"""The tag every runbook deployment carries; its flow runs inherit it."""
WEBHOOK_BLOCK_SUFFIX = "-for-automations"
"""The Prefect ``webhook`` block mirroring ``slack-incoming-webhook/<name>`` is named
``<name>-for-automations``."""

_LINK = (
    f"('<' ~ (flow_run | ui_url) ~ '|Open the flow run in Prefect>') "
    f"if flow_run.id and (flow_run | ui_url) else '{NO_LINK}'"
)
logger = logging.getLogger(__name__)


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


def rollback_notification_automation(webhook_block_id: UUID) -> Automation:
    """The automation posting to Slack when a runbook rolled back (not yet saved).

    Why this action: Prefect's server runs automation actions itself, and it can only load
    block types it ships (it never imports this repository), so our ``SlackIncomingWebhook``
    cannot be the action's block. Of Prefect's own: ``SlackWebhook`` (a notification block for
    ``SendNotification``) goes through apprise, whose Slack plugin rebuilds the URL on
    ``hooks.slack.com`` from the tokens, so it can never reach a test receiver, and it sends
    only a title and a body; ``CustomWebhookNotificationBlock`` keeps its URL in clear and
    substitutes a single body string into its JSON. ``CallWebhook`` with a ``webhook`` block
    keeps the URL a secret and sends our whole rendered template: the same Block Kit layout as
    :func:`runbooks.notify.outcome_message`. What it lacks: the server posts once, with no
    retry; Slack's status and answer are recorded in the action's
    ``prefect.automation.action.executed`` event.

    Trigger: any of :data:`ROLLBACK_EVENTS` about a runbook target, one notification per event
    (``for_each`` the target, reactive, threshold 1, no window).
    """
    from prefect.automations import Automation, CallWebhook, EventTrigger, Posture

    rolled_back = "event.event.endswith('rolled-back') or event.event.endswith('reverted')"
    reason = (
        "event.payload.reason or event.payload.why or "
        "(('relapse after ' ~ event.payload.step ~ '; that step was re-applied') "
        f"if event.payload.step else '{NO_REASON}')"
    )
    payload = message_template(
        emoji=f"':rewind:' if {rolled_back} else ':x:' if 'failed' in event.event else ':warning:'",
        runbook="event.resource['runbooks.runbook'] or event.event",
        target="event.resource['prefect.resource.name'] or event.resource.id",
        outcome="(event.event.split('.') | last) | replace('-', ' ')",
        reason=reason,
        link=_LINK,
    )
    return Automation(
        name=ROLLBACK_NOTIFICATION_AUTOMATION,
        description=(
            "Posts to the runbooks' Slack channel when a runbook rolls back, reverts or relapses "
            f"({', '.join(ROLLBACK_EVENTS)}). Defined in deployments/automations.py: edit it "
            "there, not in the UI."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect=set(ROLLBACK_EVENTS),
            match={"prefect.resource.id": "runbooks.target.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[CallWebhook(block_document_id=webhook_block_id, payload=payload)],
    )


def failure_notification_automation(webhook_block_id: UUID, tag: str = RUNBOOKS_TAG) -> Automation:
    """The automation posting to Slack when a flow run tagged ``tag`` fails or crashes.

    Why a tag rather than the catalogue's flow names: a trigger's ``match_related`` specs must
    all match (no "or"), the tag is what every runbook deployment carries (and any team flow
    can opt in with it), and runs of other flows on the same server stay quiet. One
    notification per flow run (``for_each`` the run), only for its final state: a run that
    will be retried passes through ``AwaitingRetry``, not ``Failed``. A runbook that ends
    *completed* with outcome ``failed`` or ``rolled_back`` is not a failed run: its own
    :func:`runbooks.notify.notify_outcome` and the rollback automation report it.
    """
    from prefect.automations import Automation, CallWebhook, EventTrigger, Posture

    payload = message_template(
        emoji="':x:'",
        runbook="flow.name or 'a flow'",
        target=(
            "flow_run.parameters.params.target or flow_run.parameters.params.service or "
            "('run ' ~ flow_run.name)"
        ),
        outcome="'crashed' if event.event.endswith('Crashed') else 'failed'",
        reason=(
            f"flow_run.state.message or event.payload.validated_state.message or '{NO_REASON}'"
        ),
        link=_LINK,
    )
    return Automation(
        name=FAILURE_NOTIFICATION_AUTOMATION,
        description=(
            f"Posts to the runbooks' Slack channel when a flow run tagged {tag!r} ends Failed or "
            "Crashed. Defined in deployments/automations.py: edit it there, not in the UI."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect=set(FAILED_RUN_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "tag",
                "prefect.resource.id": f"prefect.tag.{tag}",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[CallWebhook(block_document_id=webhook_block_id, payload=payload)],
    )


def apply_automations(
    client: SyncPrefectClient | None = None, *, slack_block: str = DEFAULT_WEBHOOK_BLOCK
) -> tuple[AppliedAutomation, ...]:
    """Create or update every automation of the project by name; what was done to each.

    ``client``: a synchronous Prefect client (``get_client(sync_client=True)``); by default one
    on the configured API, with a 30 s timeout per call. ``slack_block``: the name of the saved
    ``slack-incoming-webhook`` block the notification automations post to; when none is saved
    they are skipped with a warning and left out of the answer. Raises ``NotFoundError`` when a
    deployment an automation runs is not deployed, ``InvalidRequestError`` when the saved Slack
    block is invalid, ``UnavailableError`` when the API is not reachable; nothing is created or
    changed then.
    """
    if client is not None:
        return _apply(client, slack_block)
    from prefect.client.orchestration import get_client

    with get_client(
        sync_client=True, httpx_settings={"timeout": httpx.Timeout(API_TIMEOUT_SECONDS)}
    ) as own:
        return _apply(own, slack_block)


def _apply(client: SyncPrefectClient, slack_block: str) -> tuple[AppliedAutomation, ...]:
    deployment_id = deployment_id_by_name(client, RETRY_STORM_DEPLOYMENT)
    slack_url = _slack_url(client, slack_block)
    wanted = [retry_storm_automation(deployment_id)]
    if slack_url is None:
        logger.warning(
            "notification automations skipped: no slack-incoming-webhook block named %r is saved "
            "on the Prefect API at %s; save one (SlackIncomingWebhook(url=...).save(%r)) and "
            "apply the automations again",
            slack_block,
            client.api_url,
            slack_block,
        )
    else:
        webhook_id = _mirror_webhook(client, slack_block + WEBHOOK_BLOCK_SUFFIX, slack_url)
        wanted += [
            rollback_notification_automation(webhook_id),
            failure_notification_automation(webhook_id),
        ]
    return tuple(_upsert(client, automation) for automation in wanted)


def _slack_url(client: SyncPrefectClient, name: str) -> str | None:
    """The URL of the saved ``slack-incoming-webhook/<name>``, checked; None when none is saved."""
    from prefect.exceptions import ObjectNotFound
    from pydantic import ValidationError

    from blocks.slack import SlackIncomingWebhook

    slug = SlackIncomingWebhook.get_block_type_slug()
    try:
        document = client.read_block_document_by_name(name, slug, include_secrets=True)
    except ObjectNotFound:
        return None
    except httpx.HTTPError as exc:
        raise from_httpx(exc, f"read block {slug}/{name}", target=str(client.api_url)) from exc
    try:
        block = SlackIncomingWebhook.model_validate(document.data)
    except ValidationError as exc:
        problems = "; ".join(str(error["msg"]) for error in exc.errors())
        raise InvalidRequestError(
            f"the saved block {slug}/{name} is invalid ({problems}); save it again with a Slack "
            "incoming webhook URL, then apply the automations again",
            target=f"{slug}/{name}",
        ) from None
    return block.url.get_secret_value()


def _mirror_webhook(client: SyncPrefectClient, name: str, url: str) -> UUID:
    """Create or update the Prefect ``webhook`` block ``name`` posting JSON to ``url``; its id.

    Written only when it differs, so a re-run changes nothing. Private URLs (the loopback
    receivers of tests and the sandbox) are allowed only when ``url`` is one: Slack's is public,
    and Prefect then refuses to follow it anywhere private (its SSRF guard).
    """
    from prefect.blocks.webhook import Webhook
    from prefect.client.schemas.actions import BlockDocumentCreate, BlockDocumentUpdate
    from prefect.exceptions import ObjectNotFound

    from blocks.slack import LOOPBACK_HOSTS

    private = (httpx.URL(url).host or "").lower() in LOOPBACK_HOSTS
    data = {
        "method": "POST",
        "url": url,
        "headers": {"Content-Type": "application/json; charset=utf-8"},
        "allow_private_urls": private,
        "verify": True,
    }
    slug = Webhook.get_block_type_slug()
    try:
        try:
            existing = client.read_block_document_by_name(name, slug, include_secrets=True)
        except ObjectNotFound:
            existing = None
        if existing is not None:
            assert existing.id is not None
            if existing.data != data:
                client.update_block_document(
                    existing.id, BlockDocumentUpdate(data=data, merge_existing_data=False)
                )
            return existing.id
        # The server registers its built-in block types and schemas when it starts; take the
        # schema it has (its Prefect may be another version than ours), not our checksum's.
        try:
            block_type = client.read_block_type_by_slug(slug)
            schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        except ObjectNotFound:
            schema = None
        if schema is None:
            raise NotFoundError(
                f"the Prefect API at {client.api_url} has no schema for block type {slug!r}; "
                "run `prefect block register -m prefect.blocks.webhook`, then apply again",
                target=slug,
            )
        created = client.create_block_document(
            BlockDocumentCreate(
                name=name, data=data, block_schema_id=schema.id, block_type_id=block_type.id
            )
        )
    except httpx.HTTPError as exc:
        raise from_httpx(exc, f"save block {slug}/{name}", target=str(client.api_url)) from exc
    return created.id


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
    trigger = data.get("trigger", {})
    trigger.pop("id", None)
    for key in ("expect", "after", "for_each"):  # sets: their JSON order is arbitrary
        if isinstance(trigger.get(key), list):
            trigger[key] = sorted(trigger[key])
    return data
