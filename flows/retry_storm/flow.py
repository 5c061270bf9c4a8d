"""The ``retry-storm`` flow: read like the runbook it encodes (see the package docstring)."""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from decisions.retry_config import restore_change
from decisions.retry_storm import (
    RETRY_FIELDS,
    ContainmentPlan,
    Measurement,
    RetryStormParams,
    Rung,
    SettingsChange,
    Signal,
    containment_plan,
    healthy,
    load_reduction_percent,
    reverse,
    storming,
)
from flows.retry_storm.steps import (
    baseline_of,
    load_table,
    measure,
    pod_gauges,
    wait_taken,
    watch,
    write_changes,
)
from runbooks.errors import RunbookError
from runbooks.kit import (
    Outcome,
    RunbookResult,
    Timeline,
    artifact_key,
    emit,
    plan_gate,
    publish_table,
    publish_timeline,
    target_lock,
)
from tasks.retry_config import read_retry_config

RUNBOOK = "retry-storm"
LOCK_WAIT_SECONDS = 30
LOCK_LEASE_SECONDS = 3600

Stage = Literal[
    "refused", "no-storm", "planned", "failed", "not-contained", "contained", "recovered",
    "restored", "relapsed",
]  # fmt: skip


class PairReport(BaseModel):
    """One caller -> dependency pair as first measured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    caller: str
    dependency: str
    requests_per_second: float
    retries_per_request: float | None
    error_share: float
    breaker_open: bool
    storming: bool


class RetryStormResult(RunbookResult):
    stage: Stage = Field(description="How far the run got (restored is the whole way).")
    pairs: tuple[PairReport, ...] = Field(description="Every pair measured at the start.")
    plan: ContainmentPlan | None = None
    rungs_applied: tuple[str, ...] = ()
    contained_after_seconds: float | None = Field(
        None, description="From the run's start to the verdict 'contained'."
    )
    recovered_after_seconds: float | None = None
    load: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per dependency: attempts/s during the storm, contained, after restore, "
        "and the reduction in percent.",
    )


class _Run:
    """The run's state: what was changed (for undo and the report), and the timeline."""

    def __init__(self, params: RetryStormParams, prometheus: HttpService, k8s: KubernetesTarget):
        self.p, self.prometheus, self.k8s = params, prometheus, k8s
        self.target = ",".join(params.namespaces) or "cluster"
        self.timeline = Timeline()
        self.began = time.monotonic()
        self.rungs: list[Rung] = []
        self.baselines: dict[str, dict[str, float]] = {}
        self.load: dict[str, dict[str, Any]] = {}

    def elapsed(self) -> float:
        return round(time.monotonic() - self.began, 2)

    def change(self, step: str, changes: tuple[SettingsChange, ...]) -> float:
        """Write ``changes``, wait for every pod to take them; the clock then. On a failure the
        changes written so far are undone (a half-applied step is never left) and it re-raises."""
        done: list[SettingsChange] = []
        for caller in {c.caller for c in changes} - set(self.baselines):
            self.baselines[caller] = baseline_of(pod_gauges(self.prometheus, caller))
        try:
            write_changes(self.k8s, self.p, changes, done)
            taken = wait_taken(self.prometheus, changes, self.baselines, self.p)
        except RunbookError as exc:
            self.timeline.add(step, f"failed: {exc}", ok=False)
            if done:
                write_changes(self.k8s, self.p, reverse(done), [])
                self.timeline.add(step, f"its {len(done)} written change(s) undone")
            raise
        self.timeline.add(step, "; ".join(f"{c.caller}: {c.sentence()}" for c in changes))
        return taken

    def note_load(self, phase: str, m: Measurement | None, dependencies: set[str]) -> None:
        if m is None:
            return
        for dependency in dependencies:
            self.load.setdefault(dependency, {})[phase] = m.load.get(dependency, 0.0)


@flow(name=RUNBOOK, log_prints=False)
def retry_storm(
    params: RetryStormParams, prometheus: HttpService, kubernetes: KubernetesTarget
) -> RetryStormResult:
    """Detect a retry storm, contain it rung by rung, wait for recovery, restore the settings."""
    run = _Run(params, prometheus, kubernetes)
    p, timeline, target = params, run.timeline, run.target

    def result(stage: Stage, outcome: Outcome, reason: str, **fields: Any) -> RetryStormResult:
        timeline.add("end", reason, ok=outcome in (Outcome.SUCCEEDED, Outcome.NO_CHANGE))
        publish_timeline(RUNBOOK, target, timeline)
        if run.load:
            for row in run.load.values():
                row["reduction_percent"] = load_reduction_percent(
                    row.get("storm", 0.0), row.get("contained", float("nan"))
                )
            publish_table(
                artifact_key(RUNBOOK, "load", target),
                load_table(run.load),
                description="Attempts/s each dependency received: storm, contained, restored",
            )
        return RetryStormResult.from_timeline(
            timeline,
            runbook=RUNBOOK,
            target=target,
            outcome=outcome,
            reason=reason,
            dry_run=p.dry_run,
            stage=stage,
            pairs=pairs,
            rungs_applied=tuple(r.key for r in run.rungs),
            load=run.load,
            **fields,
        )

    pairs: tuple[PairReport, ...] = ()
    if p.trigger:
        timeline.add("trigger", p.trigger)
    # 1. measure: no Prometheus, no action
    try:
        first = measure(prometheus, p, p.window)
    except RunbookError as exc:
        return result(
            "refused",
            Outcome.FAILED,
            f"cannot measure the callers ({exc}); refusing to act blind: nothing was changed",
        )
    storm = storming(first.signals, p.thresholds)
    pairs = tuple(_pair(s, p, s in storm) for s in first.signals)
    timeline.add("measure", f"{len(first.signals)} caller/dependency pair(s) over {p.window}")
    if not storm:
        return _no_storm(run, first, result)

    callers = tuple(dict.fromkeys(s.caller for s in storm))
    dependencies = set(first.load)
    run.note_load("storm", first, dependencies)
    worst = storm[0]
    summary = ", ".join(
        f"{s.caller} -> {s.dependency} {s.retry_ratio(p.thresholds):.0%}" for s in storm
    )
    timeline.add("detected", f"retries per request over {p.thresholds.retry_ratio:.0%}: {summary}")
    emit(
        RUNBOOK,
        "detected",
        target,
        payload={
            "storming": [
                {
                    "caller": s.caller,
                    "dependency": s.dependency,
                    "ratio": s.retry_ratio(p.thresholds),
                }
                for s in storm
            ],
            "load": {d: first.load.get(d) for d in dependencies},
            "trigger": p.trigger,
        },
    )

    # 2. plan from the live settings (a caller we cannot read cannot be undone: refused)
    try:
        current = {c: _read(run, c).document for c in callers}
        plan = containment_plan(storm, current)
    except (RunbookError, ValueError) as exc:
        return result("refused", Outcome.FAILED, f"cannot plan the containment: {exc}")
    if not plan_gate(RUNBOOK, target, plan, dry_run=p.dry_run):
        return RetryStormResult.for_dry_run(
            timeline, runbook=RUNBOOK, target=target, stage="planned", pairs=pairs, plan=plan
        )

    with target_lock(
        f"{RUNBOOK}/{target}", timeout_seconds=LOCK_WAIT_SECONDS, lease_seconds=LOCK_LEASE_SECONDS
    ):
        # 3. contain: the lowest rung that changes something for the callers storming now,
        # verified over the time since the pods took it; again while anything storms (a caller
        # that starts storming meanwhile, e.g. the one upstream, gets its own first rung)
        contained_m: Measurement | None = None
        step_plan, latest = plan, first
        while not step_plan.empty:
            rung = step_plan.rungs[0]
            try:
                taken = run.change(rung.key, rung.changes)
            except RunbookError as exc:
                return _step_failed(run, rung, exc, result, plan)
            run.rungs.append(rung)
            verdict, m, _ = watch(
                prometheus,
                p,
                taken,
                judge=lambda m: True if not storming(m.signals, p.thresholds) else None,
                for_seconds=p.settle_seconds,
            )
            latest = m or latest
            if verdict:
                contained_m = m
                break
            still = storming(latest.signals, p.thresholds)
            timeline.add(
                rung.key,
                f"still storming {p.settle_seconds:g} s later: "
                + ", ".join(s.caller for s in still),
                ok=False,
            )
            try:
                live = {s.caller: _read(run, s.caller).document for s in still}
                step_plan = containment_plan(still, live)
            except (RunbookError, ValueError) as exc:
                return _step_failed(run, rung, exc, result, plan, applied=True)
        if contained_m is None:
            return result(
                "not-contained",
                Outcome.FAILED,
                f"every rung applied ({', '.join(r.key for r in run.rungs)}) and the storm goes "
                "on; the settings are kept (they cut the load); look at the callers",
                plan=plan,
            )
        callers = tuple(dict.fromkeys(c.caller for r in run.rungs for c in r.changes))
        seconds = run.elapsed()
        run.note_load("contained", contained_m, dependencies)
        cut = {
            d: load_reduction_percent(run.load[d]["storm"], run.load[d]["contained"])
            for d in dependencies
        }
        timeline.add(
            "contained",
            f"after {seconds:g} s by {run.rungs[-1].key}; load "
            + ", ".join(f"{d} -{c:.0f} %" for d, c in cut.items() if c is not None),
        )
        emit(
            RUNBOOK,
            "contained",
            target,
            payload={"seconds": seconds, "rungs": [r.key for r in run.rungs], "reduction": cut},
        )

        # 4. recover: the calls succeed again for N intervals in a row
        recovered_at = _wait_recovered(run, callers)
        if recovered_at is None:
            return result(
                "contained",
                Outcome.FAILED,
                f"contained, but {worst.dependency} did not recover within "
                f"{p.recovery_timeout_seconds:g} s: containment kept; run again to restore "
                "once it is healthy",
                plan=plan,
                contained_after_seconds=seconds,
            )
        emit(RUNBOOK, "recovered", target, payload={"seconds": recovered_at})
        if not p.restore:
            return result(
                "recovered",
                Outcome.SUCCEEDED,
                "contained and recovered; settings left contained (restore=false)",
                plan=plan,
                contained_after_seconds=seconds,
                recovered_after_seconds=recovered_at,
            )

        # 5. restore, newest rung first, watching each step for a relapse
        stage, reason = _restore(run, callers, dependencies)
        outcome = Outcome.SUCCEEDED if stage == "restored" else Outcome.FAILED
        return result(
            stage,
            outcome,
            reason,
            plan=plan,
            contained_after_seconds=seconds,
            recovered_after_seconds=recovered_at,
        )


def _pair(s: Signal, p: RetryStormParams, storm: bool) -> PairReport:
    ratio = s.retry_ratio(p.thresholds)
    return PairReport(
        caller=s.caller,
        dependency=s.dependency,
        requests_per_second=round(s.request_rate, 3),
        retries_per_request=None if ratio is None else round(ratio, 3),
        error_share=round(s.error_rate, 3),
        breaker_open=s.breaker_open,
        storming=storm,
    )


def _read(run: _Run, caller: str) -> Any:
    namespace, name = run.p.config_map_of(caller)
    return read_retry_config(run.k8s, namespace, name, run.p.config_key)


def _no_storm(run: _Run, first: Measurement, result: Any) -> RetryStormResult:
    """No storm. Settings an earlier run left contained are restored once the calls succeed;
    otherwise nothing changes."""
    p = run.p
    left: dict[str, SettingsChange] = {}
    for caller in sorted({s.caller for s in first.signals}):
        try:
            config = _read(run, caller)
        except RunbookError:
            continue  # a caller without our ConfigMap was never contained by us
        if config.original is not None:
            change = restore_change(caller, config.document, config.original, RETRY_FIELDS)
            if change is not None:
                left[caller] = change
    ratio = f"{p.thresholds.retry_ratio:.0%}"
    if not left:
        return result(
            "no-storm",
            Outcome.NO_CHANGE,
            f"no storm: no caller retries more than {ratio} of its requests over {p.window} "
            "(with at least "
            f"{p.thresholds.min_request_rate:g} calls/s); nothing changed",
        )
    callers = tuple(left)
    run.timeline.add("leftover", f"contained settings from an earlier run: {', '.join(callers)}")
    if p.dry_run:
        return RetryStormResult.for_dry_run(
            run.timeline, runbook=RUNBOOK, target=run.target,
            stage="planned", pairs=(),
        )  # fmt: skip
    dependencies = {s.dependency for s in first.signals if s.caller in left}
    if _wait_recovered(run, callers) is None:
        return result(
            "contained",
            Outcome.FAILED,
            f"no storm, but {', '.join(callers)} still fail: their contained settings are kept",
        )
    stage, reason = _restore(run, callers, dependencies, extra=tuple(left.values()))
    return result(stage, Outcome.SUCCEEDED if stage == "restored" else Outcome.FAILED, reason)


def _wait_recovered(run: _Run, callers: tuple[str, ...]) -> float | None:
    """Seconds since the start when the callers' calls had succeeded ``recovered_intervals``
    measurements in a row; ``None`` at the timeout."""
    p = run.p
    deadline = time.monotonic() + p.recovery_timeout_seconds
    streak = 0
    while time.monotonic() < deadline:
        m = measure(run.prometheus, p, p.recovery_window)
        if healthy(m, callers, p.thresholds):
            streak += 1
            if streak >= p.thresholds.recovered_intervals:
                at = run.elapsed()
                run.timeline.add(
                    "recovered",
                    f"errors at or under {p.thresholds.recovered_error_rate:.0%} for "
                    f"{streak} intervals in a row, {at:g} s after the start",
                )
                return at
        else:
            streak = 0
        time.sleep(p.poll_seconds)
    run.timeline.add("recovered", f"not within {p.recovery_timeout_seconds:g} s", ok=False)
    return None


def _restore(
    run: _Run,
    callers: tuple[str, ...],
    dependencies: set[str],
    extra: tuple[SettingsChange, ...] = (),
) -> tuple[Stage, str]:
    """Undo this run's rungs newest first, then whatever an earlier run left; after each step,
    watch for a relapse and, on one, re-apply that step and stop."""
    p = run.p
    steps = [(f"restore {r.key}", r.undo()) for r in reversed(run.rungs)]
    if extra:
        steps.append(("restore original", extra))

    def relapsed(m: Measurement) -> bool | None:
        if storming([s for s in m.signals if s.caller in callers], p.thresholds):
            return False
        return False if healthy(m, callers, p.thresholds) is False else None

    last: Measurement | None = None
    for name, changes in steps:
        taken = run.change(name, changes)
        verdict, m, _ = watch(
            run.prometheus, p, taken, judge=relapsed, for_seconds=p.relapse_watch_seconds
        )
        last = m or last
        if verdict is False:
            run.change(f"re-apply after relapse ({name})", reverse(changes))
            emit(RUNBOOK, "relapsed", run.target, payload={"step": name, "callers": callers})
            return "relapsed", f"relapse after '{name}': that step re-applied, restoring stopped"
    run.note_load("restored", last, dependencies)
    emit(RUNBOOK, "restored", run.target, payload={"steps": [n for n, _ in steps]})
    return "restored", "storm contained, dependency recovered, original settings restored"


def _step_failed(
    run: _Run,
    rung: Rung,
    exc: Exception,
    result: Any,
    plan: ContainmentPlan,
    *,
    applied: bool = False,
) -> RetryStormResult:
    """A rung could not be applied (its own partial writes are already undone): keep or undo the
    earlier rungs, as ``on_step_failure`` says, and report which."""
    earlier = [r.key for r in run.rungs]
    if run.p.on_step_failure == "undo" and run.rungs:
        for done in reversed(list(run.rungs)):
            run.change(f"undo {done.key}", done.undo())
        run.rungs.clear()
        decision = f"earlier step(s) {', '.join(earlier)} undone (on_step_failure=undo)"
        outcome = Outcome.ROLLED_BACK
    elif earlier:
        decision = f"earlier step(s) {', '.join(earlier)} kept (on_step_failure=keep)"
        outcome = Outcome.FAILED
    else:
        decision = "nothing else had been changed"
        outcome = Outcome.FAILED
    what = f"planning the step after {rung.key}" if applied else f"step {rung.key}"
    return result("failed", outcome, f"{what} failed ({exc}); {decision}", plan=plan)
