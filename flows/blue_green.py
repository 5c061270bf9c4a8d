"""Runbook ``blue-green``: health-gated blue-green rollout with automatic rollback.

Reads like the runbook (issue 4): observe -> plan -> publish (dry run stops) -> lock ->
deploy the idle colour -> wait for it -> point the preview Service at it -> pre-promotion
analysis -> (approval) -> switch the active Service -> bake -> scale the old colour down.

Undo: an explicit undo stack driven by :func:`decisions.bluegreen.rollback_steps` (the plan's
step keys reached so far -> the undo steps, newest first), not Prefect transactions: the pure
planner already decides what each reached step's undo is, and one ``try`` around the acting part
runs them in reverse on any failure, measuring the time from the first failing check to the
traffic being safe again.

Approval (``approval.mode=required``): after pre-promotion analysis the flow run pauses with
Prefect's ``pause_flow_run(wait_for_input=ApprovalInput)``; answer it in the UI (the form is
:class:`ApprovalInput`) or with ``prefect.flow_runs.resume_flow_run(id, run_input={...})``. The
approver and reason go into the timeline (the audit-trail artifact) and ``result.approval``.
Endings, each undone like any failure (green scaled to 0; the active selector is never touched
before the switch):

- ``reject``, or ``approve`` by someone not in ``allowed_approvers`` (when it is non-empty):
  ``rollout=rejected``, ``outcome=rolled_back`` (a change, deploying green, was undone), event
  ``runbooks.blue-green.aborted`` with ``{"rollout": "rejected", "approver": ...}``;
- no answer within ``timeout_seconds``: ``rollout=aborted``, ``outcome=rolled_back``, event
  ``runbooks.blue-green.aborted`` with ``{"rollout": "aborted"}``. Prefect leaves the run Paused
  (or its pause-expiry service marks it Failed) and refuses task runs of a run that is not
  Running, so the flow forces its run back to Running before undoing.

Migrations (``migration.steps`` with a ``database`` block, refused without one): ``expand``
before green is deployed, ``backfill`` once green is rolled out, ``contract`` last, after the
bake and the scale-down delay (the rollback window), and only with ``migration.run_contract``
(the plan holds no contract step otherwise). Rolling back never contracts: a failure stops the
plan before its contract step, and expand / backfill are kept (backward compatible by
definition). Applied step ids are recorded in a ledger table, so a re-run skips them.

Not done yet (refused up front, or seams left): ``flag`` rollout is refused; synthetic
load against the preview is not sent (pre-promotion metrics need real preview traffic).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field

from blocks.database import DatabaseTarget
from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from decisions.analysis import AnalysisPhase, AnalysisRun, AnalysisSpec, Measurement, Verdict
from decisions.bluegreen import (
    ApprovalSpec,
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
from decisions.migrations import PHASE_ORDER, Phase
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
from tasks.migrations import apply_migrations
from tasks.prometheus import query_prometheus

RUNBOOK = "blue-green"
PREVIEW_READY_SECONDS = 15.0
APPROVAL_POLL_SECONDS = 1  # pause_flow_run's default (10 s) would delay every answer
_MIGRATIONS = {
    StepKind.MIGRATE_EXPAND: Phase.EXPAND,
    StepKind.MIGRATE_BACKFILL: Phase.BACKFILL,
    StepKind.MIGRATE_CONTRACT: Phase.CONTRACT,
}


class RolloutOutcome(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    ABORTED = "aborted"
    NOOP = "noop"
    DRY_RUN = "dry_run"


_OUTCOME = {
    RolloutOutcome.PROMOTED: Outcome.SUCCEEDED,
    RolloutOutcome.ROLLED_BACK: Outcome.ROLLED_BACK,
    # rejected / approval timed out: green was deployed, then undone, so the world changed back
    RolloutOutcome.REJECTED: Outcome.ROLLED_BACK,
    RolloutOutcome.ABORTED: Outcome.ROLLED_BACK,
    RolloutOutcome.NOOP: Outcome.NO_CHANGE,
    RolloutOutcome.DRY_RUN: Outcome.DRY_RUN,
}


class MeasurementRow(Measurement):
    """One analysis measurement with where it was taken and the verdict on it."""

    phase: str = Field(description="pre_analysis or post_analysis.")
    colour: str
    verdict: str
    reason: str


class ApprovalDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalInput(RunInput):
    """The answer to a paused blue-green rollout (the Prefect UI renders it as a form)."""

    decision: ApprovalDecision = Field(description="approve to switch traffic, reject to undo.")
    approver: str = Field(min_length=1, max_length=200, description="Who answers.")
    reason: str = Field("", max_length=2000, description="Why, for the audit trail.")


class ApprovalRecord(BaseModel):
    """What the approval gate decided, and who decided it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: ApprovalDecision | None = Field(description="The answer; None when none came.")
    approver: str | None = None
    reason: str = ""
    accepted: bool = Field(description="True only for an approve by an allowed approver.")
    note: str = Field(description="One sentence for the audit trail.")
    at: datetime


class BlueGreenResult(RunbookResult):
    rollout: RolloutOutcome = Field(
        description="promoted, rolled_back, rejected, aborted, noop or dry_run."
    )
    plan: RolloutPlan | None = None
    active_colour: Colour | None = Field(None, description="The colour serving after the run.")
    active_image: str | None = Field(None, description="The image serving after the run.")
    measurements: tuple[MeasurementRow, ...] = ()
    undone: tuple[str, ...] = Field((), description="Undo step keys run, in order.")
    approval: ApprovalRecord | None = Field(None, description="The approval gate's answer.")
    migrations_applied: tuple[str, ...] = Field(
        (), description="Migration step ids applied by this run, in order."
    )
    rollback_seconds: float | None = Field(
        None, description="First failing check -> traffic safe on the old colour again."
    )


class AnalysisFailed(RunbookError):
    """An analysis ended failed or inconclusive: the version must not (stay) promoted."""


class ApprovalRejected(RunbookError):
    """The approval gate was answered with reject, or by someone not allowed to approve."""


class ApprovalTimedOut(RunbookError):
    """Nobody answered the approval gate in time."""


def _refuse_unsupported(
    params: BlueGreenParams, prometheus: HttpService | None, database: DatabaseTarget | None
) -> None:
    """Refuse, before anything changes, what this flow does not do yet (one sentence each)."""
    if params.flag is not None:
        raise InvalidRequestError(
            "flag rollout is not supported by the blue-green flow yet: leave flag empty"
        )
    if database is None and any(params.migration.due(phase) for phase in PHASE_ORDER):
        raise InvalidRequestError(
            "migration has steps but no database block was given: pass database, or leave "
            "migration.steps empty"
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
        self.approval: ApprovalRecord | None = None
        self.migrated: list[str] = []

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


def _await_approval(run: _Run, step: Step) -> None:
    """Pause the flow run for an :class:`ApprovalInput`; return on an accepted approval only."""
    spec = run.plan.params.approval
    target = run.plan.params.target
    try:
        answer = pause_flow_run(
            wait_for_input=ApprovalInput,
            timeout=spec.timeout_seconds,
            poll_interval=APPROVAL_POLL_SECONDS,
            key="approval",  # lowercase letters, digits and dashes only
        )
    except FlowPauseTimeout as exc:
        _take_run_back()
        note = f"no answer within {spec.timeout_seconds} s: aborting"
        run.approval = ApprovalRecord(decision=None, accepted=False, note=note, at=_now())
        run.timeline.add(step.key, note, ok=False)
        raise ApprovalTimedOut(
            f"approval timed out after {spec.timeout_seconds} s", target=target
        ) from exc
    run.approval = _judge(spec, answer)
    run.timeline.add(step.key, run.approval.note, ok=run.approval.accepted)
    if not run.approval.accepted:
        raise ApprovalRejected(run.approval.note, target=target)


def _judge(spec: ApprovalSpec, answer: ApprovalInput) -> ApprovalRecord:
    """An answer as the audit trail records it: approve counts only from an allowed approver."""
    who, why = answer.approver, answer.reason or "no reason given"
    if answer.decision is ApprovalDecision.REJECT:
        note, accepted = f"rejected by {who}: {why}", False
    elif not spec.may_approve(who):
        allowed = ", ".join(spec.allowed_approvers)
        note, accepted = f"approve by {who} refused: not an allowed approver ({allowed})", False
    else:
        note, accepted = f"approved by {who}: {why}", True
    return ApprovalRecord(
        decision=answer.decision,
        approver=who,
        reason=answer.reason,
        accepted=accepted,
        note=note,
        at=_now(),
    )


def _take_run_back() -> None:
    """After a pause timed out the server keeps the run Paused (or marks it Failed) and refuses
    its task runs; force it back to Running so the undo steps can run."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    context = FlowRunContext.get()
    assert context is not None, "called inside the flow run"
    assert context.flow_run is not None
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def _now() -> datetime:
    return datetime.now(UTC)


def _migrate(run: _Run, step: Step, database: DatabaseTarget | None) -> None:
    """Apply the step's phase of the migration (already applied step ids are skipped)."""
    p = run.plan.params
    assert database is not None, "_refuse_unsupported refuses migrations without a database"
    phase = _MIGRATIONS[step.kind]
    applied = apply_migrations(database, p.migration, phase, runbook_target=p.target)
    run.migrated += applied
    detail = f"applied {', '.join(applied) or 'nothing'} on {database.target}"
    skipped = [i for i in step.migration_ids if i not in applied]
    if skipped:
        detail += f"; already applied: {', '.join(skipped)}"
    run.timeline.add(step.key, detail)


def _act(
    run: _Run,
    k8s: KubernetesTarget,
    prometheus: HttpService | None,
    active_url: str,
    active_ports: tuple[ServicePort, ...],
    database: DatabaseTarget | None,
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
            _migrate(run, step, database)
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
        elif step.kind is StepKind.APPROVAL:
            _await_approval(run, step)
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
    database: DatabaseTarget | None = None,
) -> BlueGreenResult:
    """Roll ``params.image`` out to the idle colour of ``params.service``; promote or roll back."""
    log = run_logger(__name__)
    timeline = Timeline()
    p = params
    _refuse_unsupported(p, prometheus, database)
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
            _act(run, kubernetes, prometheus, active_url, active_service.ports, database)
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
            rollback_seconds = round(time.monotonic() - run.first_failure, 3)
            _publish_measurements(p, run.rows)
            ending = _ending(exc)
            _emit_ending(run, ending, reason, rollback_seconds)
            return result(
                ending,
                reason,
                active_colour=plan.active_colour,
                active_image=plan.active_image,
                measurements=tuple(run.rows),
                undone=undone,
                rollback_seconds=rollback_seconds,
                approval=run.approval,
                migrations_applied=tuple(run.migrated),
            )
    _publish_measurements(p, run.rows)
    new = plan.idle_colour if plan.outcome is PlanOutcome.ROLLOUT else plan.active_colour
    return result(
        RolloutOutcome.PROMOTED,
        f"{p.image} serves {p.target} on {new.value}",
        active_colour=new,
        active_image=p.image,
        measurements=tuple(run.rows),
        approval=run.approval,
        migrations_applied=tuple(run.migrated),
    )


def _ending(exc: Exception) -> RolloutOutcome:
    """How an undone rollout ended: rejected at the gate, aborted (no answer) or rolled back."""
    if isinstance(exc, ApprovalRejected):
        return RolloutOutcome.REJECTED
    if isinstance(exc, ApprovalTimedOut):
        return RolloutOutcome.ABORTED
    return RolloutOutcome.ROLLED_BACK


def _emit_ending(run: _Run, ending: RolloutOutcome, reason: str, rollback_seconds: float) -> None:
    target = run.plan.params.target
    if ending is RolloutOutcome.ROLLED_BACK:
        payload = {"reason": reason, "rollback_seconds": rollback_seconds}
        emit(RUNBOOK, "rolled-back", target, payload=payload)
        return
    payload = {"reason": reason, "rollout": ending.value}
    if run.approval is not None and run.approval.approver is not None:
        payload["approver"] = run.approval.approver
    emit(RUNBOOK, "aborted", target, payload=payload)


def _publish_measurements(p: BlueGreenParams, rows: list[MeasurementRow]) -> None:
    if rows:
        publish_table(
            f"{RUNBOOK}-measurements-{p.target}",
            [row.model_dump(mode="json") for row in rows],
            description=f"{RUNBOOK} analysis measurements for {p.target}",
        )
