"""The ``load-forecast`` flow: read like the runbook it encodes (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from prefect import flow
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from blocks.aws import AwsTarget
from blocks.http import HttpService
from decisions.asg_schedule import AsgScheduleDiff
from decisions.load_forecast import ForecastService, LoadForecastParams, StoredSchedule
from decisions.scaling import (
    CapacityPlan,
    PlanInputError,
    ScheduleWindow,
    ServicePlan,
    plan_capacity,
    scheduled_actions,
)
from flows.load_forecast.forecasting import ServiceFailure, ServiceForecast, run_forecasts
from flows.load_forecast.publish import RUNBOOK, publish_all
from runbooks.errors import InvalidRequestError
from runbooks.kit import Outcome, RunbookResult, Timeline, emit, publish_timeline, target_lock
from runbooks.kit._run import logger as run_logger
from tasks.autoscaling import apply_asg_schedule
from tasks.schedules import store_schedule

LOCK_WAIT_SECONDS = 60
LOCK_LEASE_SECONDS = 900


class ServiceOutcome(BaseModel):
    """One service's night: the model chosen, the schedule, where it went, or why it failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    ok: bool = Field(description="Planned (and stored/applied unless a dry run).")
    stage: str | None = Field(None, description="Where it failed: fetch, clean, plan, ...")
    error: str | None = Field(None, description="Why, in one sentence.")
    model: str | None = None
    metric: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    windows: tuple[ScheduleWindow, ...] = ()
    schedule_stored: bool = False
    auto_scaling: AsgScheduleDiff | None = None


class LoadForecastResult(RunbookResult):
    as_of: AwareDatetime = Field(description="The first planned hour (UTC).")
    services: tuple[ServiceOutcome, ...] = Field(description="Per service, in input order.")
    plan: CapacityPlan | None = Field(description="The capacity plan of the forecast services.")
    failed: tuple[str, ...] = Field(description="Services not planned or not applied.")
    over_budget: bool = Field(description="A budget cut something: see plan.shortfalls.")


@flow(name="load-forecast", log_prints=False)
def load_forecast(
    params: LoadForecastParams,
    prometheus: HttpService | None = None,
    aws: AwsTarget | None = None,
) -> LoadForecastResult:
    """Forecast every service, plan capacity within budget, store and apply the schedules."""
    p = params
    timeline = Timeline()
    as_of = p.as_of or _this_hour(timeline.now())
    _check_blocks(p, prometheus, aws)

    results = run_forecasts(p, as_of, prometheus, aws)
    forecasts = [r for r in results if isinstance(r, ServiceForecast)]
    failures = {r.service: r for r in results if isinstance(r, ServiceFailure)}
    timeline.add(
        "forecast",
        f"{len(forecasts)} of {len(p.services)} service(s) forecast from {as_of:%Y-%m-%d %H:00} "
        f"UTC for {p.horizon_hours} h"
        + (f"; failed: {', '.join(sorted(failures))}" if failures else ""),
        ok=not failures,
    )

    plan = _plan(p, forecasts, failures)
    if plan is not None:
        timeline.add("plan", _plan_summary(plan), ok=not plan.over_budget)
    publish_all(p, forecasts, list(failures.values()), plan, as_of=as_of)
    _emit_plan_events(p, plan, failures, as_of)

    applied: dict[str, tuple[bool, AsgScheduleDiff | None]] = {}
    if plan is not None:
        if p.dry_run:
            applied = _apply(p, plan, as_of, aws, failures, timeline, dry_run=True)
        else:
            with target_lock(
                f"{RUNBOOK}/{p.target}",
                timeout_seconds=LOCK_WAIT_SECONDS,
                lease_seconds=LOCK_LEASE_SECONDS,
            ):
                applied = _apply(p, plan, as_of, aws, failures, timeline, dry_run=False)

    outcomes = tuple(_outcome(s, forecasts, failures, plan, applied) for s in p.services)
    failed = tuple(o.service for o in outcomes if not o.ok)
    publish_timeline(RUNBOOK, p.target, timeline)
    fields = {
        "as_of": as_of,
        "services": outcomes,
        "plan": plan,
        "failed": failed,
        "over_budget": bool(plan and plan.over_budget),
    }
    if failed:
        reason = f"{len(failed)} of {len(p.services)} service(s) failed ({', '.join(failed)}); " + (
            "the others were planned" if len(failed) < len(p.services) else "none planned"
        )
        return LoadForecastResult.from_timeline(
            timeline,
            runbook=RUNBOOK,
            target=p.target,
            outcome=Outcome.FAILED,
            reason=reason,
            dry_run=p.dry_run,
            **fields,
        )
    if p.dry_run:
        return LoadForecastResult.for_dry_run(
            timeline,
            runbook=RUNBOOK,
            target=p.target,
            reason="dry run: plan published, nothing stored or written",
            **fields,
        )
    return LoadForecastResult.from_timeline(
        timeline,
        runbook=RUNBOOK,
        target=p.target,
        outcome=Outcome.SUCCEEDED,
        reason=f"{len(outcomes)} service(s) planned for {p.horizon_hours} h and applied",
        dry_run=False,
        **fields,
    )


def _this_hour(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _check_blocks(
    p: LoadForecastParams, prometheus: HttpService | None, aws: AwsTarget | None
) -> None:
    """Refuse before any work when a source or target needs a block that was not given."""
    sources = [(s.name, s.source) for s in p.services] + [
        (f"{s.name}.{m}", src) for s in p.services for m, src in s.business_metrics.items()
    ]
    for name, source in sources:
        if source.kind == "prometheus" and prometheus is None:
            raise InvalidRequestError(
                f"service {name!r}: a Prometheus source needs the prometheus block"
            )
        if source.kind == "cloudwatch" and aws is None:
            raise InvalidRequestError(f"service {name!r}: a CloudWatch source needs the aws block")
    for s in p.services:
        if s.auto_scaling_group and aws is None:
            raise InvalidRequestError(
                f"service {s.name!r}: auto_scaling_group {s.auto_scaling_group!r} needs the "
                "aws block"
            )


def _plan(
    p: LoadForecastParams,
    forecasts: Sequence[ServiceForecast],
    failures: dict[str, ServiceFailure],
) -> CapacityPlan | None:
    """Plan the forecast services; a service the planner refuses is failed and the rest
    re-planned (the global budget is shared, so the plan cannot just drop its rows)."""
    by_name = {s.name: s for s in p.services}
    planned = [f for f in forecasts if f.service not in failures]
    while planned:
        try:
            return plan_capacity(
                [by_name[f.service].scaling() for f in planned],
                {f.service: f.hours for f in planned},
                rules=p.business_rules,
                global_budget_per_hour=p.global_budget_per_hour,
            )
        except PlanInputError as exc:
            failures[exc.service] = ServiceFailure(
                service=exc.service, stage="plan", error=str(exc)
            )
            planned = [f for f in planned if f.service != exc.service]
    return None


def _plan_summary(plan: CapacityPlan) -> str:
    peak = max((t.cost_per_hour for t in plan.totals), default=0.0)
    text = f"{len(plan.services)} service(s), {len(plan.totals)} hour(s); peak cost {peak:g}/h"
    if plan.shortfalls:
        missing = sum(s.missing for s in plan.shortfalls)
        text += f"; {len(plan.shortfalls)} shortfall(s), {missing} instance-hour(s) short"
    return text


def _emit_plan_events(
    p: LoadForecastParams,
    plan: CapacityPlan | None,
    failures: dict[str, ServiceFailure],
    as_of: datetime,
) -> None:
    emit(
        RUNBOOK,
        "planned",
        p.target,
        payload={
            "as_of": as_of.isoformat(),
            "horizon_hours": p.horizon_hours,
            "planned": [s.service.name for s in plan.services] if plan else [],
            "failed": {name: f.error for name, f in sorted(failures.items())},
            "peak_cost_per_hour": max((t.cost_per_hour for t in plan.totals), default=0.0)
            if plan
            else 0.0,
            "shortfalls": len(plan.shortfalls) if plan else 0,
            "dry_run": p.dry_run,
        },
    )
    if plan is not None and plan.over_budget:
        shortfalls = plan.budget_shortfalls
        run_logger(__name__).warning(
            "over budget: %d shortfall(s); first: %s",
            len(shortfalls),
            shortfalls[0].sentence if shortfalls else "the minimums alone exceed a budget",
        )
        emit(
            RUNBOOK,
            "over-budget",
            p.target,
            payload={
                "shortfalls": len(shortfalls),
                "instance_hours_short": sum(s.missing for s in shortfalls),
                "services": sorted({s.service for s in shortfalls}),
                "first": [s.sentence for s in shortfalls[:10]],
                "hours_over_budget": [t.hour.isoformat() for t in plan.totals if t.over_budget],
            },
        )


def _apply(
    p: LoadForecastParams,
    plan: CapacityPlan,
    as_of: datetime,
    aws: AwsTarget | None,
    failures: dict[str, ServiceFailure],
    timeline: Timeline,
    *,
    dry_run: bool,
) -> dict[str, tuple[bool, AsgScheduleDiff | None]]:
    """Store each Kubernetes service's schedule and write each group's scheduled actions.

    One service's failure (AWS refusing its group) is that service's: the others go on.
    """
    by_name = {s.name: s for s in p.services}
    applied: dict[str, tuple[bool, AsgScheduleDiff | None]] = {}
    for service_plan in plan.services:
        service = by_name[service_plan.service.name]
        stored, diff = False, None
        try:
            if service.kubernetes is not None and not dry_run:
                store_schedule(_stored(service, service_plan))
                stored = True
            if service.auto_scaling_group is not None and aws is not None:
                diff = apply_asg_schedule(
                    aws,
                    service.auto_scaling_group,
                    scheduled_actions(service_plan.schedule()),
                    now=as_of,
                    dry_run=dry_run,
                )
        except Exception as exc:
            failures[service.name] = ServiceFailure(
                service=service.name, stage="apply", error=str(exc)
            )
            timeline.add("apply", f"{service.name}: {exc}", ok=False)
        applied[service.name] = (stored, diff)
    stored_count = sum(1 for ok, _ in applied.values() if ok)
    changed = [d for _, d in applied.values() if d is not None and d.changed]
    timeline.add(
        "apply" if not dry_run else "dry-run",
        f"{stored_count} schedule(s) stored for apply-scaling; "
        f"{len(changed)} Auto Scaling group(s) {'would change' if dry_run else 'changed'}",
    )
    return applied


def _stored(service: ForecastService, service_plan: ServicePlan) -> StoredSchedule:
    from prefect.runtime import flow_run

    return StoredSchedule.from_windows(
        service.name,
        service_plan.schedule(),
        kubernetes=service.kubernetes,
        planned_at=datetime.now(UTC),
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )


def _outcome(
    service: ForecastService,
    forecasts: Sequence[ServiceForecast],
    failures: dict[str, ServiceFailure],
    plan: CapacityPlan | None,
    applied: dict[str, tuple[bool, AsgScheduleDiff | None]],
) -> ServiceOutcome:
    forecast = next((f for f in forecasts if f.service == service.name), None)
    failure = failures.get(service.name)
    stored, diff = applied.get(service.name, (False, None))
    windows: tuple[ScheduleWindow, ...] = ()
    if plan is not None and any(s.service.name == service.name for s in plan.services):
        windows = plan.service(service.name).schedule()
    return ServiceOutcome(
        service=service.name,
        ok=failure is None,
        stage=failure.stage if failure else None,
        error=failure.error if failure else None,
        model=forecast.model if forecast else None,
        metric=forecast.metric if forecast else None,
        scores=forecast.scores if forecast else {},
        windows=windows,
        schedule_stored=stored,
        auto_scaling=diff,
    )
