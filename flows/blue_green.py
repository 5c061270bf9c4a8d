"""Runbook ``blue-green``: health-gated blue-green rollout with automatic rollback.

Reads like the runbook (issue 4): observe -> plan -> publish (dry run stops) -> lock ->
deploy the idle colour -> wait for it -> point the preview Service at it -> pre-promotion
analysis -> (approval) -> switch the active Service -> bake -> scale the old colour down.

Undo: an explicit undo stack driven by :func:`decisions.bluegreen.rollback_steps` (the plan's
step keys reached so far -> the undo steps, newest first), not Prefect transactions: the pure
planner already decides what each reached step's undo is, and one ``try`` around the acting part
runs them in reverse on any failure, measuring the time from the first failing check to the
traffic being safe again.

Not done yet (refused up front, or seams left): ``approval.mode=required`` is refused;
``migration`` steps are refused (seam: ``_migrate``); ``flag`` rollout is refused; synthetic
load against the preview is not sent (pre-promotion metrics need real preview traffic).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from prefect import flow
from pydantic import Field

from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from decisions.analysis import AnalysisPhase, AnalysisRun, AnalysisSpec, Measurement, Verdict
from decisions.bluegreen import (
    ApprovalMode,
    BlueGreenParams,
    Colour,
    ColourState,
    ObservedState,
    PlanOutcome,
    RolloutPlan,
    Step,
    StepKind,
    deployment_name,
    plan_rollout,
    pod_labels,
    preview_service_name,
    rollback_steps,
)
from decisions.bluegreen_manifest import idle_manifest, preview_manifest
from runbooks.errors import InvalidRequestError, RunbookError
from runbooks.kit import (
    Outcome,
    RunbookResult,
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
    ServicePort,
    ServiceState,
    apply_deployment,
    ensure_service,
    patch_service_selector,
    read_deployment,
    read_deployment_manifest,
    read_service,
    scale_deployment,
    wait_for_rollout,
)
from tasks.prometheus import query_prometheus

RUNBOOK = "blue-green"
PREVIEW_READY_SECONDS = 15.0
_MIGRATIONS = (StepKind.MIGRATE_EXPAND, StepKind.MIGRATE_BACKFILL, StepKind.MIGRATE_CONTRACT)


class RolloutOutcome(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    NOOP = "noop"
    DRY_RUN = "dry_run"


_OUTCOME = {
    RolloutOutcome.PROMOTED: Outcome.SUCCEEDED,
    RolloutOutcome.ROLLED_BACK: Outcome.ROLLED_BACK,
    RolloutOutcome.NOOP: Outcome.NO_CHANGE,
    RolloutOutcome.DRY_RUN: Outcome.DRY_RUN,
}


class MeasurementRow(Measurement):
    """One analysis measurement with where it was taken and the verdict on it."""

    phase: str = Field(description="pre_analysis or post_analysis.")
    colour: str
    verdict: str
    reason: str


class BlueGreenResult(RunbookResult):
    rollout: RolloutOutcome = Field(description="promoted, rolled_back, noop or dry_run.")
    plan: RolloutPlan | None = None
    active_colour: Colour | None = Field(None, description="The colour serving after the run.")
    active_image: str | None = Field(None, description="The image serving after the run.")
    measurements: tuple[MeasurementRow, ...] = ()
    undone: tuple[str, ...] = Field((), description="Undo step keys run, in order.")
    rollback_seconds: float | None = Field(
        None, description="First failing check -> traffic safe on the old colour again."
    )


class AnalysisFailed(RunbookError):
    """An analysis ended failed or inconclusive: the version must not (stay) promoted."""


def _refuse_unsupported(params: BlueGreenParams, prometheus: HttpService | None) -> None:
    """Refuse, before anything changes, what this flow does not do yet (one sentence each)."""
    if params.approval.mode is ApprovalMode.REQUIRED:
        raise InvalidRequestError(
            "approval.mode 'required' is not supported by the blue-green flow yet: use "
            "approval.mode 'none'"
        )
    if params.flag is not None:
        raise InvalidRequestError(
            "flag rollout is not supported by the blue-green flow yet: leave flag empty"
        )
    if any(params.migration.due(phase) for phase in _migration_phases()):
        raise InvalidRequestError(
            "migration steps are not supported by the blue-green flow yet: leave migration empty"
        )
    if prometheus is None:
        for field, spec in (
            ("pre_promotion", params.pre_promotion),
            ("post_promotion", params.post_promotion),
        ):
            if spec.success_rate_min is not None or spec.p95_latency_max_ms is not None:
                raise InvalidRequestError(
                    f"{field} checks success_rate_min / p95_latency_max_ms but no prometheus "
                    "block was given: pass one, or set both thresholds to null (health only)"
                )


def _migration_phases() -> tuple[Any, ...]:
    from decisions.migrations import Phase

    return tuple(Phase)


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


def _service_url(state: ServiceState) -> str:
    node_port = state.ports[0].node_port if state.ports else None
    if not node_port:
        raise InvalidRequestError(
            f"Service {state.namespace}/{state.name} has no nodePort to reach it on"
        )
    return f"http://127.0.0.1:{node_port}"


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
        colour = selector.get("colour")
        if selector == pod_labels(svc, Colour.BLUE) or selector == pod_labels(svc, Colour.GREEN):
            active = Colour(colour)
        else:
            raise InvalidRequestError(
                f"Service {ns}/{svc} selects {selector}, not a blue-green colour "
                f"({pod_labels(svc, Colour.BLUE)}): fix its selector first"
            )
    blue = _colour_state(read_deployment(k8s, ns, deployment_name(svc, Colour.BLUE)))
    green = _colour_state(read_deployment(k8s, ns, deployment_name(svc, Colour.GREEN)))
    healthy = False
    if active_url is not None:
        probe = HttpService(base_url=active_url, health_path=params.pre_promotion.health_path)
        healthy = check_health(probe).ok
    return ObservedState(active_colour=active, blue=blue, green=green, active_healthy=healthy)


def _measure(
    spec: AnalysisSpec,
    url: str,
    prometheus: HttpService | None,
    params: BlueGreenParams,
    colour: Colour,
) -> Measurement:
    at = datetime.now(UTC)
    health = check_health(HttpService(base_url=url, health_path=spec.health_path))
    rate = p95 = None
    error = None
    if prometheus is not None:
        rate_q, p95_q = spec.queries(
            namespace=params.namespace, service=params.service, colour=colour.value
        )
        try:
            if spec.success_rate_min is not None:
                rate = query_prometheus(prometheus, rate_q)
            if spec.p95_latency_max_ms is not None:
                p95 = query_prometheus(prometheus, p95_q)
        except RunbookError as exc:
            error = str(exc)
    return Measurement(at=at, health_ok=health.ok, success_rate=rate, p95_ms=p95, error=error)


class _Run:
    """The acting part's mutable record: reached step keys, measurements, first failure."""

    def __init__(self, plan: RolloutPlan, timeline: Timeline) -> None:
        self.plan = plan
        self.timeline = timeline
        self.reached: list[str] = []
        self.rows: list[MeasurementRow] = []
        self.first_failure: float | None = None
        self.switched_at: float | None = None

    def start(self, step: Step) -> None:
        self.reached.append(step.key)
        self.timeline.add(step.key, step.sentence)

    def failed_now(self) -> None:
        if self.first_failure is None:
            self.first_failure = time.monotonic()


def _analyse(
    run: _Run,
    step: Step,
    spec: AnalysisSpec,
    url: str,
    prometheus: HttpService | None,
) -> None:
    """Measure every interval until the analysis decides; raise AnalysisFailed unless it passed."""
    params = run.plan.params
    colour = step.colour or run.plan.idle_colour
    analysis = AnalysisRun(spec=spec)
    while True:
        measurement = _measure(spec, url, prometheus, params, colour)
        analysis = analysis.add(measurement)
        judgement = analysis.judgements[-1]
        run.rows.append(
            MeasurementRow(
                **measurement.model_dump(),
                phase=step.key,
                colour=colour.value,
                verdict=judgement.verdict.value,
                reason=judgement.reason,
            )
        )
        if judgement.verdict is Verdict.FAILED:
            run.failed_now()  # the first failing check starts the rollback clock
        if analysis.phase is not AnalysisPhase.RUNNING:
            break
        time.sleep(spec.interval_seconds)
    run.timeline.add(step.key, analysis.reason, ok=analysis.phase is AnalysisPhase.SUCCESSFUL)
    if analysis.phase is not AnalysisPhase.SUCCESSFUL:
        run.failed_now()
        raise AnalysisFailed(
            f"{step.key} of {colour.value} ended {analysis.phase.value}: {analysis.reason}",
            target=params.target,
        )


def _wait_preview(url: str, deadline_seconds: float) -> None:
    """The preview Service routes to a ready pod (the proxy opens its port asynchronously)."""
    deadline = time.monotonic() + deadline_seconds
    probe = HttpService(base_url=url, health_path="/ready")
    while not check_health(probe).ok:
        if time.monotonic() >= deadline:
            raise InvalidRequestError(
                f"the preview Service at {url} did not route to a ready pod within "
                f"{deadline_seconds:g}s"
            )
        time.sleep(0.2)


def _migrate(run: _Run, step: Step) -> None:
    """Seam for expand / backfill / contract migrations (tasks.migrations, blocks.database).

    Unreachable today: :func:`_refuse_unsupported` refuses plans with migration steps.
    """
    raise InvalidRequestError(f"migration step {step.key} is not supported yet")


def _act(
    run: _Run,
    k8s: KubernetesTarget,
    prometheus: HttpService | None,
    active_url: str,
    active_ports: tuple[ServicePort, ...],
) -> None:
    """Execute the plan's steps in order (resume plans included)."""
    plan, p = run.plan, run.plan.params
    ns, svc = p.namespace, p.service
    old, new = plan.active_colour, plan.idle_colour
    preview_url: str | None = None
    for step in plan.steps:
        if step.kind is StepKind.LOCK:
            continue  # taken by the caller around _act
        run.start(step)
        if step.kind in _MIGRATIONS:
            _migrate(run, step)
        elif step.kind is StepKind.DEPLOY_IDLE:
            live = read_deployment_manifest(k8s, ns, deployment_name(svc, old))
            if live is None:
                raise InvalidRequestError(f"{deployment_name(svc, old)} disappeared")
            manifest = idle_manifest(
                live,
                service=svc,
                colour=new,
                image=step.image or p.image,
                replicas=step.replicas or p.replicas,
            )
            apply_deployment(k8s, manifest)
        elif step.kind is StepKind.WAIT_ROLLOUT:
            try:
                wait_for_rollout(
                    k8s,
                    ns,
                    deployment_name(svc, new),
                    timeout_seconds=step.seconds or float(p.progress_deadline_seconds),
                )
            except RunbookError:
                run.failed_now()
                raise
        elif step.kind is StepKind.POINT_PREVIEW:
            labels = pod_labels(svc, new)
            ports = [
                {
                    k: v
                    for k, v in (("name", q.name), ("port", q.port), ("targetPort", q.target_port))
                    if v is not None
                }
                for q in active_ports
            ]
            manifest = preview_manifest(service=svc, colour=new, ports=ports)
            state = ensure_service(k8s, manifest)
            if state.selector != labels:
                patch_service_selector(
                    k8s, ns, preview_service_name(svc), labels, expected=state.selector
                )
            preview_url = _service_url(state)
            _wait_preview(preview_url, PREVIEW_READY_SECONDS)
        elif step.kind is StepKind.PRE_ANALYSIS:
            assert preview_url is not None, "point_preview precedes pre_analysis in every plan"
            _analyse(run, step, p.pre_promotion, preview_url, prometheus)
        elif step.kind is StepKind.SWITCH:
            patch_service_selector(
                k8s, ns, svc, pod_labels(svc, new), expected=pod_labels(svc, old)
            )
            run.switched_at = time.monotonic()
            emit(
                RUNBOOK,
                "promoted",
                p.target,
                payload={"from": old.value, "to": new.value, "image": p.image},
            )
        elif step.kind is StepKind.POST_ANALYSIS:
            if run.switched_at is None:  # resume: the switch happened in an earlier run
                run.switched_at = time.monotonic()
            _analyse(run, step, p.post_promotion, active_url, prometheus)
        elif step.kind is StepKind.SCALE_DOWN_OLD:
            assert step.colour is not None
            since = time.monotonic() - (run.switched_at or time.monotonic())
            remaining = (step.seconds or 0.0) - since
            if remaining > 0:
                run.timeline.add("scale_down_delay", f"keep the old colour {remaining:.1f}s more")
                time.sleep(remaining)
            scale_deployment(k8s, ns, deployment_name(svc, step.colour), 0)
        else:
            raise InvalidRequestError(f"step kind {step.kind.value} is not supported yet")
        run.timeline.add(step.key, "done")


def _undo(run: _Run, k8s: KubernetesTarget) -> tuple[str, ...]:
    """Run the undo steps for the reached steps, newest first; returns their keys."""
    p = run.plan.params
    done: list[str] = []
    for step in rollback_steps(run.plan, run.reached):
        run.timeline.add(step.key, step.sentence)
        assert step.colour is not None
        if step.kind is StepKind.SWITCH_BACK:
            patch_service_selector(
                k8s,
                p.namespace,
                p.service,
                pod_labels(p.service, step.colour),
                expected=pod_labels(p.service, step.colour.other),
            )
        elif step.kind is StepKind.SCALE_DOWN_NEW:
            scale_deployment(k8s, p.namespace, deployment_name(p.service, step.colour), 0)
        elif step.kind is StepKind.SCALE_UP_OLD:
            name = deployment_name(p.service, step.colour)
            scale_deployment(k8s, p.namespace, name, step.replicas or p.replicas)
            wait_for_rollout(k8s, p.namespace, name, timeout_seconds=step.seconds or 600.0)
        else:
            raise InvalidRequestError(f"undo step kind {step.kind.value} is not supported yet")
        done.append(step.key)
        run.timeline.add(step.key, "done")
    return tuple(done)


@flow(name="blue-green", log_prints=False)
def blue_green(
    params: BlueGreenParams,
    kubernetes: KubernetesTarget,
    prometheus: HttpService | None = None,
) -> BlueGreenResult:
    """Roll ``params.image`` out to the idle colour of ``params.service``; promote or roll back."""
    log = run_logger(__name__)
    timeline = Timeline()
    p = params
    _refuse_unsupported(p, prometheus)
    active_service = read_service(kubernetes, p.namespace, p.service)
    active_url = _service_url(active_service) if active_service is not None else None
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
            outcome=_OUTCOME[outcome],
            reason=reason,
            dry_run=p.dry_run,
            rollout=outcome,
            plan=plan,
            **fields,
        )

    if not plan_gate(RUNBOOK, p.target, plan, dry_run=p.dry_run):
        return result(
            RolloutOutcome.DRY_RUN,
            "dry run: plan published, nothing changed",
            active_colour=plan.active_colour,
            active_image=plan.active_image,
        )
    if plan.outcome is PlanOutcome.NOOP:
        return result(
            RolloutOutcome.NOOP,
            plan.reason,
            active_colour=plan.active_colour,
            active_image=plan.active_image,
        )
    # a plan that is not refused has an active Service
    assert active_url is not None
    assert active_service is not None

    with target_lock(p.target, timeout_seconds=30):
        emit(RUNBOOK, "started", p.target, payload={"image": p.image, "plan": plan.outcome.value})
        run = _Run(plan, timeline)
        try:
            _act(run, kubernetes, prometheus, active_url, active_service.ports)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            timeline.add("failed", reason, ok=False)
            log.warning("rolling back %s: %s", p.target, reason)
            if run.first_failure is None:
                run.first_failure = time.monotonic()
            try:
                undone = _undo(run, kubernetes)
            except Exception as undo_exc:
                timeline.add("rollback", f"undo failed: {undo_exc}", ok=False)
                emit(RUNBOOK, "aborted", p.target, payload={"reason": str(undo_exc)})
                publish_timeline(RUNBOOK, p.target, timeline)
                raise undo_exc from exc
            rollback_seconds = time.monotonic() - run.first_failure
            _publish_measurements(p, run.rows)
            emit(
                RUNBOOK,
                "rolled-back",
                p.target,
                payload={"reason": reason, "rollback_seconds": round(rollback_seconds, 3)},
            )
            return result(
                RolloutOutcome.ROLLED_BACK,
                reason,
                active_colour=plan.active_colour,
                active_image=plan.active_image,
                measurements=tuple(run.rows),
                undone=undone,
                rollback_seconds=round(rollback_seconds, 3),
            )
    _publish_measurements(p, run.rows)
    new = plan.idle_colour if plan.outcome is PlanOutcome.ROLLOUT else plan.active_colour
    return result(
        RolloutOutcome.PROMOTED,
        f"{p.image} serves {p.target} on {new.value}",
        active_colour=new,
        active_image=p.image,
        measurements=tuple(run.rows),
    )


def _publish_measurements(p: BlueGreenParams, rows: list[MeasurementRow]) -> None:
    if rows:
        publish_table(
            f"{RUNBOOK}-measurements-{p.target}",
            [row.model_dump(mode="json") for row in rows],
            description=f"{RUNBOOK} analysis measurements for {p.target}",
        )
