"""Runbook ``apply-scaling``: make each Kubernetes service follow its planned minimum, hourly.

Reads the schedules ``load-forecast`` stored (one Prefect variable per service) and, for each
service's Deployment:

- when a KEDA ``ScaledObject`` scales it, writes the schedule as KEDA ``cron`` triggers (KEDA
  then raises the floor itself at each window; the other triggers are kept);
- otherwise patches its HorizontalPodAutoscaler's ``minReplicas`` to this hour's planned
  minimum, never above ``maxReplicas`` and never below the floor a person configured (recorded
  on the HPA the first time, :mod:`decisions.kube_scaling`). An hour the schedule does not cover
  (``load-forecast`` failed two nights running) goes back to that floor, and says so.

Only the floor moves: the HPA (or KEDA) still scales out on live load above it, so a forecast
that was too low costs headroom, never the autoscaler. Idempotent: a second run in the same
hour changes nothing. One service's failure (its HPA gone, the API refusing) is reported and
the others are applied. Reports: a table artifact of what changed and the event
``runbooks.apply-scaling.applied``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from blocks.kubernetes import KubernetesTarget
from decisions.load_forecast import ApplyScalingParams, StoredSchedule
from runbooks.kit import Outcome, RunbookResult, Timeline, emit, publish_table
from tasks.kube_scaling import apply_hpa_minimum, apply_keda_schedule, find_scaled_object
from tasks.schedules import read_schedules

RUNBOOK = "apply-scaling"


class ScalingChange(BaseModel):
    """What one service's autoscaler was, and is now (or why it could not be changed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    target: str = Field(description="namespace/deployment")
    scaler: str = Field(description="hpa, keda, or none when it failed before finding one")
    changed: bool
    before: str = ""
    after: str = ""
    note: str = Field(description="What was done, or the error, in one sentence.")
    ok: bool = True


class ApplyScalingResult(RunbookResult):
    hour: AwareDatetime = Field(description="The hour whose plan was applied (UTC).")
    changes: tuple[ScalingChange, ...] = Field(description="Per service, by name.")
    failed: tuple[str, ...] = Field(description="Services not applied, with errors in changes.")


@flow(name="apply-scaling", log_prints=False)
def apply_scaling(params: ApplyScalingParams, kubernetes: KubernetesTarget) -> ApplyScalingResult:
    """Apply this hour's planned minimum of every stored schedule (or of ``services``)."""
    p = params
    timeline = Timeline()
    hour = (p.at or timeline.now()).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    schedules, errors = read_schedules(p.services)
    changes = [
        ScalingChange(service=name, target="", scaler="none", changed=False, note=e, ok=False)
        for name, e in errors.items()
    ]
    timeline.add("read", f"{len(schedules)} schedule(s) read", ok=not errors)
    for service, schedule in sorted(schedules.items()):
        changes.append(_apply_one(kubernetes, service, schedule, hour, dry_run=p.dry_run))
    changes.sort(key=lambda c: c.service)
    changed = [c for c in changes if c.changed]
    failed = tuple(c.service for c in changes if not c.ok)
    verb = "would change" if p.dry_run else "changed"
    timeline.add("apply", f"{len(changed)} of {len(changes)} autoscaler(s) {verb}", ok=not failed)
    publish_table(
        f"{RUNBOOK}-{kubernetes.namespace or 'cluster'}",
        [c.model_dump(exclude={"ok"}) | {"ok": c.ok} for c in changes],
        description=f"Planned minimums applied for {hour:%Y-%m-%d %H:00} UTC",
    )
    if not p.dry_run:
        emit(
            RUNBOOK,
            "applied",
            "cluster",
            payload={
                "hour": hour.isoformat(),
                "changed": {c.service: f"{c.before} -> {c.after}" for c in changed},
                "failed": {c.service: c.note for c in changes if not c.ok},
            },
        )
    fields = {"hour": hour, "changes": tuple(changes), "failed": failed}
    if failed:
        outcome, reason = (
            Outcome.FAILED,
            f"{len(failed)} service(s) not applied: {', '.join(failed)}",
        )
    elif p.dry_run:
        outcome, reason = Outcome.DRY_RUN, f"dry run: {len(changed)} autoscaler(s) would change"
    elif changed:
        outcome, reason = Outcome.SUCCEEDED, f"{len(changed)} autoscaler(s) changed"
    else:
        outcome, reason = Outcome.NO_CHANGE, "every autoscaler already follows this hour's plan"
    return ApplyScalingResult.from_timeline(
        timeline,
        runbook=RUNBOOK,
        target="cluster",
        outcome=outcome,
        reason=reason,
        dry_run=p.dry_run,
        **fields,
    )


def _apply_one(
    kubernetes: KubernetesTarget,
    service: str,
    schedule: StoredSchedule,
    hour: datetime,
    *,
    dry_run: bool,
) -> ScalingChange:
    where = schedule.kubernetes
    if where is None:
        return ScalingChange(
            service=service,
            target="",
            scaler="none",
            changed=False,
            note="the schedule names no Kubernetes deployment (load-forecast's kubernetes field)",
            ok=False,
        )
    target = f"{where.namespace}/{where.deployment}"
    windows = schedule.windows()
    try:
        scaled_object = find_scaled_object(kubernetes, where.namespace, where.deployment)
        if scaled_object is not None:
            keda = apply_keda_schedule(
                kubernetes, where.namespace, where.deployment, windows, dry_run=dry_run
            )
            return ScalingChange(
                service=service,
                target=target,
                scaler="keda",
                changed=keda.changed,
                before=f"{len(keda.before)} cron trigger(s)",
                after=f"{len(keda.after)} cron trigger(s)",
                note=keda.note,
            )
        hpa = apply_hpa_minimum(
            kubernetes, where.namespace, where.deployment, windows, now=hour, dry_run=dry_run
        )
        return ScalingChange(
            service=service,
            target=target,
            scaler="hpa",
            changed=hpa.changed,
            before=str(hpa.before),
            after=str(hpa.after),
            note=hpa.note,
        )
    except Exception as exc:  # one service's failure is its own: report it, apply the others
        return ScalingChange(
            service=service, target=target, scaler="none", changed=False, note=str(exc), ok=False
        )
