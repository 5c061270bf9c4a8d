"""The ``tracing-rollout`` flow: read like the runbook it encodes (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from blocks.kubernetes import KubernetesTarget
from blocks.traces import TraceBackend
from decisions.spans import Span
from decisions.trace_analysis import (
    CoverageRow,
    LatencyRow,
    coverage,
    dependency_edges,
    latency_attribution,
    mermaid_graph,
)
from decisions.tracing_collector import collector_config, config_map, validate_tail_sampling
from decisions.tracing_plan import (
    PlanRefused,
    ServicePlan,
    TracedService,
    TracingPlan,
    TracingRolloutParams,
    plan_rollout,
)
from flows.tracing_rollout.steps import (
    Verification,
    apply_change,
    describe,
    observe,
    revert_change,
    verify,
    wait_rolled_out,
)
from runbooks.errors import InvalidRequestError
from runbooks.kit import (
    Outcome,
    RunbookResult,
    Timeline,
    emit,
    plan_gate,
    publish_markdown,
    publish_table,
    publish_timeline,
    target_lock,
)
from tasks.kubernetes import apply_config_map, apply_custom_object, delete_custom_object

RUNBOOK = "tracing-rollout"
LOCK_WAIT_SECONDS = 60
LOCK_LEASE_SECONDS = 900
INSTRUMENTATION = ("opentelemetry.io", "v1alpha1", "instrumentations")
"""group, version, plural of the OpenTelemetry Operator's Instrumentation."""

Status = Literal["traced", "already_traced", "reverted", "not_reporting", "failed", "skipped"]


class ServiceReport(BaseModel):
    """One service's end: traced (changed and verified), already traced, reverted, ..."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str = Field(description="namespace/deployment")
    service: str = Field(description="Its service.name.")
    status: Status
    detail: str = Field(description="Why, in one sentence.")
    requests_sent: int = 0
    traces_seen: int = 0
    verify_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("traced", "already_traced")


class TracingRolloutResult(RunbookResult):
    plan_summary: str = Field(description="What the plan was.")
    services: tuple[ServiceReport, ...] = Field(description="Per service, in input order.")
    dependency_map: str = Field(description="A mermaid graph of the calls seen in the traces.")
    coverage: tuple[CoverageRow, ...] = Field(description="Per service: spans, traces, ratio.")
    latency: tuple[LatencyRow, ...] = Field(description="p50/p99 per service and operation.")
    collector_config: dict[str, Any] | None = Field(description="The Collector config, if any.")


@flow(name="tracing-rollout", log_prints=False)
def tracing_rollout(
    params: TracingRolloutParams, kubernetes: KubernetesTarget, traces: TraceBackend
) -> TracingRolloutResult:
    """Roll tracing out service by service, prove each one reports, undo the ones that do not."""
    p = params
    timeline = Timeline()
    target = _target(p)

    current = observe(kubernetes, p)
    try:
        plan = plan_rollout(p, current)
    except PlanRefused as exc:
        raise InvalidRequestError(str(exc)) from exc
    collector = _collector(p)
    timeline.add("plan", plan.summary + "".join(f" Warning: {w}" for w in plan.warnings))
    if not plan_gate(RUNBOOK, target, plan, dry_run=p.dry_run):
        return _result(p, plan, timeline, {}, [], collector, dry_run=True)

    reports: dict[str, ServiceReport] = {}
    seen: list[Span] = []
    with target_lock(
        f"{RUNBOOK}/{target}", timeout_seconds=LOCK_WAIT_SECONDS, lease_seconds=LOCK_LEASE_SECONDS
    ):
        if collector is not None and p.collector_config_map:
            namespace, name = p.collector_config_map.split("/", 1)
            apply_config_map(kubernetes, config_map(namespace, name, collector))
            timeline.add("collector", f"Collector config written to ConfigMap {namespace}/{name}")
        created = _apply_instrumentations(kubernetes, plan, timeline)
        for stage in plan.stages:
            stage_plans = [plan.service(t) for t in stage.targets]
            _run_stage(p, kubernetes, traces, stage_plans, timeline, reports, seen)
            failed = [t for t in stage.targets if not reports[t].ok]
            if stage.canary and failed:
                timeline.add("canary", f"canary {failed[0]} did not report: stopping", ok=False)
                break
        for service_plan in plan.services:
            if service_plan.target in reports:
                continue
            if service_plan in plan.unchanged:
                reports[service_plan.target] = _check_unchanged(p, traces, service_plan, seen)
            else:
                reports[service_plan.target] = ServiceReport(
                    target=service_plan.target,
                    service=_service(p, service_plan).name,
                    status="skipped",
                    detail="not changed: the canary did not report",
                )
        if created and not any(r.ok for r in reports.values()):
            _delete_instrumentations(kubernetes, created, timeline)
    return _result(p, plan, timeline, reports, seen, collector, dry_run=False)


def _apply_instrumentations(
    k8s: KubernetesTarget, plan: TracingPlan, timeline: Timeline
) -> list[tuple[str, str]]:
    """Operator mode: each namespace's ``Instrumentation`` created or replaced before any pod
    template points at it; the ones created here (an undo deletes only those)."""
    if not plan.changed:
        return []
    created = []
    for manifest in plan.instrumentations:
        meta = manifest["metadata"]
        if apply_custom_object(k8s, *INSTRUMENTATION, manifest):
            created.append((meta["namespace"], meta["name"]))
        timeline.add("instrumentation", f"Instrumentation {meta['namespace']}/{meta['name']}")
    return created


def _delete_instrumentations(
    k8s: KubernetesTarget, created: list[tuple[str, str]], timeline: Timeline
) -> None:
    """No service was traced: the Instrumentations this run created serve nobody; remove them."""
    for namespace, name in created:
        try:
            delete_custom_object(k8s, *INSTRUMENTATION, namespace, name)
            timeline.add("revert", f"Instrumentation {namespace}/{name} deleted")
        except Exception as exc:
            timeline.add("revert", f"Instrumentation {namespace}/{name}: {describe(exc)}", ok=False)


def _target(p: TracingRolloutParams) -> str:
    namespaces = sorted({s.namespace for s in p.services})
    return "+".join(namespaces)


def _service(p: TracingRolloutParams, plan: ServicePlan) -> TracedService:
    return next(s for s in p.services if s.target == plan.target)


def _collector(p: TracingRolloutParams) -> dict[str, Any] | None:
    """The Collector config when asked for; refused (nothing changed) when it does not validate."""
    if p.collector_exporter_endpoint is None:
        return None
    config = collector_config(p, p.collector_exporter_endpoint)
    problems = validate_tail_sampling(config)
    if problems:
        raise InvalidRequestError(f"tail_sampling: {'; '.join(problems)}")
    return config


def _run_stage(
    p: TracingRolloutParams,
    k8s: KubernetesTarget,
    traces: TraceBackend,
    plans: Sequence[ServicePlan],
    timeline: Timeline,
    reports: dict[str, ServiceReport],
    seen: list[Span],
) -> None:
    """Change the stage's services together, wait for their pods, verify each, revert each one
    that does not report (the others of the stage stay traced)."""
    changed: list[tuple[ServicePlan, datetime]] = []
    for plan in plans:
        since = datetime.now(UTC)
        try:
            apply_change(k8s, plan)
        except Exception as exc:
            reports[plan.target] = _failed(p, k8s, plan, timeline, "change", exc)
            continue
        timeline.add("change", f"{plan.target}: {_changes_text(plan)}")
        changed.append((plan, since))
    rolled: list[tuple[ServicePlan, datetime]] = []
    for plan, since in changed:
        try:
            wait_rolled_out(k8s, plan)
        except Exception as exc:
            reports[plan.target] = _failed(p, k8s, plan, timeline, "rollout", exc)
            continue
        rolled.append((plan, since))
    for plan, since in rolled:
        service = _service(p, plan)
        try:
            verdict = verify(traces, service, p, since=since)
        except Exception as exc:  # the backend cannot be asked: unverified is not traced
            reports[plan.target] = _failed(p, k8s, plan, timeline, "verify", exc)
            continue
        seen.extend(verdict.spans)
        if verdict.reporting:
            reports[plan.target] = _report(plan, service, "traced", verdict)
            timeline.add("verify", f"{plan.target}: {verdict.detail}")
            emit(RUNBOOK, "traced", plan.target, payload={"service": service.name})
            continue
        timeline.add("verify", f"{plan.target}: {verdict.detail}", ok=False)
        reports[plan.target] = _revert(p, k8s, plan, timeline, verdict)


def _revert(
    p: TracingRolloutParams,
    k8s: KubernetesTarget,
    plan: ServicePlan,
    timeline: Timeline,
    verdict: Verification,
) -> ServiceReport:
    service = _service(p, plan)
    try:
        revert_change(k8s, plan)
    except Exception as exc:
        timeline.add("revert", f"{plan.target}: revert FAILED: {describe(exc)}", ok=False)
        return _report(
            plan, service, "failed", verdict, f"{verdict.detail}; and its revert failed: {exc}"
        )
    timeline.add("revert", f"{plan.target}: previous env and annotations restored")
    emit(RUNBOOK, "reverted", plan.target, payload={"service": service.name, "why": verdict.detail})
    return _report(plan, service, "reverted", verdict, f"{verdict.detail}; reverted")


def _failed(
    p: TracingRolloutParams,
    k8s: KubernetesTarget,
    plan: ServicePlan,
    timeline: Timeline,
    step: str,
    exc: BaseException,
) -> ServiceReport:
    """A change, its rollout or its verification failed: undo it (the patch may have been
    stored; an unverified change is not left behind), report both."""
    service = _service(p, plan)
    timeline.add(step, f"{plan.target}: {describe(exc)}", ok=False)
    try:
        revert_change(k8s, plan)
        undone = "reverted"
    except Exception as undo:
        undone = f"its revert failed too ({describe(undo)})"
    return ServiceReport(
        target=plan.target,
        service=service.name,
        status="failed",
        detail=f"{step} failed: {describe(exc)}; {undone}",
    )


def _check_unchanged(
    p: TracingRolloutParams, traces: TraceBackend, plan: ServicePlan, seen: list[Span]
) -> ServiceReport:
    """A service already configured as asked is not touched; it is verified all the same."""
    service = _service(p, plan)
    try:
        verdict = verify(traces, service, p, since=datetime.now(UTC))
    except Exception as exc:
        return ServiceReport(
            target=plan.target,
            service=service.name,
            status="not_reporting",
            detail=f"already configured as asked; could not be verified: {describe(exc)}",
        )
    seen.extend(verdict.spans)
    if verdict.reporting:
        return _report(plan, service, "already_traced", verdict)
    return _report(
        plan,
        service,
        "not_reporting",
        verdict,
        f"{verdict.detail}; already configured as asked, so not changed (look at its pods)",
    )


def _report(
    plan: ServicePlan,
    service: TracedService,
    status: Status,
    verdict: Verification,
    detail: str | None = None,
) -> ServiceReport:
    return ServiceReport(
        target=plan.target,
        service=service.name,
        status=status,
        detail=detail or verdict.detail,
        requests_sent=verdict.requests_sent,
        traces_seen=verdict.traces_seen,
        verify_seconds=verdict.seconds,
    )


def _changes_text(plan: ServicePlan) -> str:
    changes = [*plan.env_changes, *plan.annotation_changes]
    return ", ".join(f"{c.name} {c.action}" for c in changes) or "no change"


def _result(
    p: TracingRolloutParams,
    plan: TracingPlan,
    timeline: Timeline,
    reports: dict[str, ServiceReport],
    seen: Sequence[Span],
    collector: dict[str, Any] | None,
    *,
    dry_run: bool,
) -> TracingRolloutResult:
    target = _target(p)
    unique = list({s.span_id: s for s in seen}.values())
    names = [s.name for s in p.services]
    graph = mermaid_graph(dependency_edges(unique), names)
    rows = coverage(unique, names, sum(r.requests_sent for r in reports.values()))
    latency = latency_attribution(unique)
    ordered = tuple(reports[s.target] for s in p.services if s.target in reports)
    _publish(p, target, ordered, graph, rows, latency, collector)
    publish_timeline(RUNBOOK, target, timeline)
    fields: dict[str, Any] = {
        "plan_summary": plan.summary,
        "services": ordered,
        "dependency_map": graph,
        "coverage": tuple(rows),
        "latency": tuple(latency),
        "collector_config": collector,
    }
    if dry_run:
        return TracingRolloutResult.for_dry_run(timeline, runbook=RUNBOOK, target=target, **fields)
    bad = [r for r in ordered if not r.ok]
    if bad:
        outcome = Outcome.FAILED
        reason = f"{len(bad)} of {len(ordered)} service(s) not traced: " + "; ".join(
            f"{r.target} {r.status}" for r in bad
        )
    elif not plan.changed:
        outcome, reason = Outcome.NO_CHANGE, f"all {len(ordered)} service(s) already report"
    else:
        outcome = Outcome.SUCCEEDED
        reason = f"{len(plan.changed)} service(s) traced and verified; {len(ordered)} report"
    return TracingRolloutResult.from_timeline(
        timeline,
        runbook=RUNBOOK,
        target=target,
        outcome=outcome,
        reason=reason,
        dry_run=False,
        **fields,
    )


def _publish(
    p: TracingRolloutParams,
    target: str,
    reports: Sequence[ServiceReport],
    graph: str,
    rows: Sequence[CoverageRow],
    latency: Sequence[LatencyRow],
    collector: dict[str, Any] | None,
) -> None:
    by_service = {r.service: r for r in reports}
    publish_table(
        f"{RUNBOOK}-coverage-{target}",
        [
            {
                "service": row.service,
                "status": by_service[row.service].status if row.service in by_service else "-",
                "spans_seen": row.spans,
                "traces_seen": row.traces,
                "observed_sample_ratio": row.sample_ratio,
                "detail": by_service[row.service].detail if row.service in by_service else "",
            }
            for row in rows
        ],
        description="Per service: spans and traces seen in the backend, observed sample ratio",
    )
    publish_markdown(
        f"{RUNBOOK}-dependencies-{target}",
        f"# Service dependencies seen in the traces\n\n```mermaid\n{graph}\n```\n",
        description="Caller -> callee, from parent/child spans across services",
    )
    publish_table(
        f"{RUNBOOK}-latency-{target}",
        [row.model_dump() for row in latency],
        description="p50/p99 per service and operation, and share of the critical path",
    )
    if collector is not None:
        publish_markdown(
            f"{RUNBOOK}-collector-{target}",
            "# OpenTelemetry Collector config (tail sampling)\n\n```yaml\n"
            + json.dumps(collector, indent=2)
            + "\n```\n",
            description="The Collector's tail_sampling policies encode the input's policy",
        )
