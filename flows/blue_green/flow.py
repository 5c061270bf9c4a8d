"""The ``blue-green`` flow: observe, plan, publish, lock, roll out (or roll back), report."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from blocks.database import DatabaseTarget
from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from decisions.bluegreen import (
    BlueGreenParams,
    Colour,
    ColourState,
    ObservedState,
    PlanOutcome,
    deployment_name,
    plan_rollout,
    pod_labels,
)
from decisions.bluegreen_manifest import mounted_config_maps
from decisions.migrations import PHASE_ORDER
from flows.blue_green.analysis import service_url
from flows.blue_green.results import (
    OUTCOME,
    RUNBOOK,
    BlueGreenResult,
    MeasurementRow,
    RolloutOutcome,
    ending,
)
from flows.blue_green.rollout import Rollout
from runbooks.errors import InvalidRequestError
from runbooks.kit import (
    Timeline,
    emit,
    plan_gate,
    publish_table,
    publish_timeline,
    target_lock,
)
from runbooks.kit._run import logger as run_logger
from tasks.health import check_health
from tasks.kubernetes import (
    DeploymentState,
    ServiceState,
    namespace_exists,
    read_deployment,
    read_deployment_manifest,
    read_service,
)

LOCK_WAIT_SECONDS = 30
LOCK_LEASE_SECONDS = 60  # the shortest Prefect accepts: a killed run frees its target soonest


@flow(name="blue-green", log_prints=False)
def blue_green(
    params: BlueGreenParams,
    kubernetes: KubernetesTarget,
    prometheus: HttpService | None = None,
    database: DatabaseTarget | None = None,
) -> BlueGreenResult:
    """Roll ``params.image`` out to the idle colour of ``params.service``; promote or roll back."""
    log = run_logger(__name__)
    timeline = Timeline()
    p = params
    _refuse_unusable(p, kubernetes, prometheus, database)
    active_service = read_service(kubernetes, p.namespace, p.service)
    if active_service is None and not namespace_exists(kubernetes, p.namespace):
        raise InvalidRequestError(
            f"namespace: Namespace {p.namespace} does not exist in the cluster the kubernetes "
            "block points at: check the namespace parameter (and the block's context)"
        )
    active_url = service_url(active_service) if active_service is not None else None
    observed = observe(p, kubernetes, active_service, active_url)
    timeline.add("observe", f"active colour {observed.active_colour}")
    try:
        plan = plan_rollout(p, observed)
    except ValueError as exc:  # PlanRefused
        timeline.add("plan", str(exc), ok=False)
        emit(RUNBOOK, "aborted", p.target, payload={"reason": str(exc)})
        raise
    timeline.add("plan", plan.reason)

    def result(outcome: RolloutOutcome, reason: str, **fields: Any) -> BlueGreenResult:
        publish_timeline(RUNBOOK, p.target, timeline)
        return BlueGreenResult.from_timeline(
            timeline,
            runbook=RUNBOOK,
            target=p.target,
            outcome=OUTCOME[outcome],
            reason=reason,
            dry_run=p.dry_run,
            rollout=outcome,
            plan=plan,
            **fields,
        )

    unchanged = {"active_colour": plan.active_colour, "active_image": plan.active_image}
    if not plan_gate(RUNBOOK, p.target, plan, dry_run=p.dry_run):
        return result(
            RolloutOutcome.DRY_RUN, "dry run: plan published, nothing changed", **unchanged
        )
    if plan.outcome is PlanOutcome.NOOP:
        return result(RolloutOutcome.NOOP, plan.reason, **unchanged)
    assert active_url is not None
    assert active_service is not None

    with target_lock(p.target, timeout_seconds=LOCK_WAIT_SECONDS, lease_seconds=LOCK_LEASE_SECONDS):
        emit(RUNBOOK, "started", p.target, payload={"image": p.image, "plan": plan.outcome.value})
        rollout = Rollout(
            plan,
            timeline,
            k8s=kubernetes,
            prometheus=prometheus,
            database=database,
            active_url=active_url,
            active_ports=active_service.ports,
        )
        try:
            rollout.run()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("rolled back %s: %s", p.target, reason)
            _publish_measurements(p, rollout.rows)
            if rollout.undo_error is not None:
                timeline.add("rollback", f"undo failed: {rollout.undo_error}", ok=False)
                emit(RUNBOOK, "aborted", p.target, payload={"reason": str(rollout.undo_error)})
                publish_timeline(RUNBOOK, p.target, timeline)
                raise rollout.undo_error from exc
            started = rollout.first_failure or time.monotonic()
            rollback_seconds = round(time.monotonic() - started, 3)
            outcome = ending(exc)
            _emit_ending(rollout, outcome, reason, rollback_seconds)
            return result(
                outcome,
                reason,
                **unchanged,
                **_record(rollout),
                undone=tuple(rollout.undone),
                rollback_seconds=rollback_seconds,
            )
    _publish_measurements(p, rollout.rows)
    new = plan.idle_colour if plan.outcome is PlanOutcome.ROLLOUT else plan.active_colour
    return result(
        RolloutOutcome.PROMOTED,
        f"{p.image} serves {p.target} on {new.value}",
        active_colour=new,
        active_image=p.image,
        **_record(rollout),
    )


def observe(
    params: BlueGreenParams,
    k8s: KubernetesTarget,
    active_service: ServiceState | None,
    active_url: str | None,
) -> ObservedState:
    """Live state: active colour from the Service selector, both Deployments, active health."""
    ns, svc = params.namespace, params.service
    active: Colour | None = None
    if active_service is not None:
        selector = active_service.selector
        if selector not in (pod_labels(svc, Colour.BLUE), pod_labels(svc, Colour.GREEN)):
            raise InvalidRequestError(
                f"Service {ns}/{svc} selects {selector}, not a blue-green colour "
                f"({pod_labels(svc, Colour.BLUE)}): fix its selector first"
            )
        active = Colour(selector["colour"])
    blue = _colour_state(read_deployment(k8s, ns, deployment_name(svc, Colour.BLUE)))
    green = _colour_state(read_deployment(k8s, ns, deployment_name(svc, Colour.GREEN)))
    healthy = False
    if active_url is not None:
        probe = HttpService(base_url=active_url, health_path=params.pre_promotion.health_path)
        healthy = check_health(probe).ok
    return ObservedState(active_colour=active, blue=blue, green=green, active_healthy=healthy)


def _refuse_unusable(
    p: BlueGreenParams,
    k8s: KubernetesTarget,
    prometheus: HttpService | None,
    database: DatabaseTarget | None,
) -> None:
    """Refuse, before anything changes, parameters the given blocks cannot serve."""
    if database is None and any(p.migration.due(phase) for phase in PHASE_ORDER):
        raise InvalidRequestError(
            "migration has steps but no database block was given: pass database, or leave "
            "migration.steps empty"
        )
    if prometheus is None:
        specs = [("pre_promotion", p.pre_promotion), ("post_promotion", p.post_promotion)]
        if p.flag is not None:
            specs.append(("flag.hold", p.flag.hold))
        for field, spec in specs:
            if spec.success_rate_min is not None or spec.p95_latency_max_ms is not None:
                raise InvalidRequestError(
                    f"{field} checks success_rate_min / p95_latency_max_ms but no prometheus "
                    "block was given: pass one, or set both thresholds to null (health only)"
                )
    if p.flag is not None:
        config_map = p.flag.config_map_name(p.service)
        for colour in Colour:
            name = deployment_name(p.service, colour)
            manifest = read_deployment_manifest(k8s, p.namespace, name)
            if manifest is not None and config_map not in mounted_config_maps(manifest):
                raise InvalidRequestError(
                    f"flag.config_map: Deployment {p.namespace}/{name} does not mount ConfigMap "
                    f"{config_map}, so its pods would never see flag {p.flag.name}; mount it "
                    "as a volume, or name the ConfigMap they mount"
                )


def _colour_state(state: DeploymentState | None) -> ColourState:
    if state is None:
        return ColourState()
    return ColourState(
        exists=True,
        image=state.image,
        replicas=state.replicas,
        available_replicas=state.available_replicas,
        updated_replicas=state.updated_replicas,
        generation=state.generation,
        observed_generation=state.observed_generation,
    )


def _record(rollout: Rollout) -> dict[str, Any]:
    """The result fields every acting ending reports."""
    return {
        "measurements": tuple(rollout.rows),
        "approval": rollout.approval,
        "migrations_applied": tuple(rollout.migrated),
        "flag_percent": rollout.flag_percent,
    }


def _emit_ending(
    rollout: Rollout, outcome: RolloutOutcome, reason: str, rollback_seconds: float
) -> None:
    target = rollout.plan.params.target
    if outcome is RolloutOutcome.ROLLED_BACK:
        payload: dict[str, Any] = {"reason": reason, "rollback_seconds": rollback_seconds}
        emit(RUNBOOK, "rolled-back", target, payload=payload)
        return
    payload = {"reason": reason, "rollout": outcome.value}
    if rollout.approval is not None and rollout.approval.approver is not None:
        payload["approver"] = rollout.approval.approver
    emit(RUNBOOK, "aborted", target, payload=payload)


def _publish_measurements(p: BlueGreenParams, rows: list[MeasurementRow]) -> None:
    if rows:
        publish_table(
            f"{RUNBOOK}-measurements-{p.target}",
            [row.model_dump(mode="json") for row in rows],
            description=f"{RUNBOOK} analysis measurements for {p.target}",
        )
