"""The ``retry-storm`` flow: read like the runbook it encodes (see the package docstring)."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from decisions.retry_config import restore_change
from decisions.retry_storm import (
    OPEN_BREAKER,
    RETRY_FIELDS,
    ContainmentPlan,
    Measurement,
    RetryStormParams,
    Rung,
    SettingsChange,
    Signal,
    contained_verdict,
    containment_plan,
    healthy,
    kill_switch_targets,
    load_reduction_percent,
    reverse,
    storming,
)
from flows.retry_storm.steps import (
    effective_of,
    load_table,
    measure,
    pod_gauges,
    pod_reloads,
    wait_taken,
    watch,
    window_seconds,
    write_changes,
)
from runbooks.errors import NotFoundError, RunbookError, TargetBusyError
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
from tasks.retry_config import RetryConfig, read_retry_config

RUNBOOK = "retry-storm"
LOCK_TARGET = "retry-storm/callers"
"""One lock for every run: runs with different ``namespaces`` may still share callers."""
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
    rungs_applied: tuple[str, ...] = Field((), description="Every rung this run applied.")
    in_force: tuple[str, ...] = Field(
        (), description="Rungs of this run still in force at the end (restore them by re-running)."
    )
    contained_after_seconds: float | None = Field(
        None, description="From the run's start to the verdict 'contained'."
    )
    recovered_after_seconds: float | None = None
    load: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per dependency: attempts/s during the storm, contained, after restore, "
        "and the reduction in percent (None: no data).",
    )


class _Run:
    """One run's state: what it changed (for undo and the report), the timeline, the result."""

    def __init__(self, params: RetryStormParams, prometheus: HttpService, k8s: KubernetesTarget):
        self.p, self.prometheus, self.k8s = params, prometheus, k8s
        self.target = ",".join(params.namespaces) or "cluster"
        self.timeline = Timeline()
        self.began = time.monotonic()
        self.applied: list[Rung] = []  # every rung applied, in order
        self.in_force: list[Rung] = []  # those not restored yet
        self.load: dict[str, dict[str, Any]] = {}
        self.pairs: tuple[PairReport, ...] = ()
        self.plan: ContainmentPlan | None = None
        self.contained_after: float | None = None
        self.recovered_after: float | None = None

    def elapsed(self) -> float:
        return round(time.monotonic() - self.began, 2)

    def result(self, stage: Stage, outcome: Outcome, reason: str) -> RetryStormResult:
        self.timeline.add("end", reason, ok=outcome in (Outcome.SUCCEEDED, Outcome.NO_CHANGE))
        publish_timeline(RUNBOOK, self.target, self.timeline)
        for row in self.load.values():
            row["reduction_percent"] = load_reduction_percent(
                row.get("storm", math.nan), row.get("contained", math.nan)
            )
        if self.load:
            publish_table(
                artifact_key(RUNBOOK, "load", self.target),
                load_table(self.load),
                description="Attempts/s each dependency received: storm, contained, restored",
            )
        return RetryStormResult.from_timeline(
            self.timeline,
            runbook=RUNBOOK,
            target=self.target,
            outcome=outcome,
            reason=reason,
            dry_run=self.p.dry_run,
            stage=stage,
            pairs=self.pairs,
            plan=self.plan,
            rungs_applied=tuple(r.key for r in self.applied),
            in_force=tuple(r.key for r in self.in_force),
            contained_after_seconds=self.contained_after,
            recovered_after_seconds=self.recovered_after,
            load=self.load,
        )

    def read(self, caller: str) -> RetryConfig:
        namespace, name = self.p.config_map_of(caller)
        return read_retry_config(self.k8s, namespace, name, self.p.config_key)

    def change(self, step: str, changes: tuple[SettingsChange, ...]) -> float:
        """Write ``changes`` and wait until every pod took them; the clock then. On a failure
        the changes this step wrote are undone (a half-applied step is never left), and the
        error is re-raised with what the undo did."""
        done: list[SettingsChange] = []
        before = {c: pod_reloads(self.prometheus, c) for c in {c.caller for c in changes}}
        try:
            write_changes(self.k8s, self.p, changes, done)
            taken = wait_taken(self.prometheus, changes, before, self.p)
        except RunbookError as exc:
            self.timeline.add(step, f"failed: {exc}", ok=False)
            if done:
                try:
                    write_changes(self.k8s, self.p, reverse(done), [])
                    self.timeline.add(step, f"its {len(done)} written change(s) undone")
                except RunbookError as undo_error:
                    self.timeline.add(step, f"undoing its writes failed: {undo_error}", ok=False)
                    raise type(exc)(
                        f"{exc}; undoing its own writes failed too: {undo_error}"
                    ) from exc
            raise
        self.timeline.add(step, "; ".join(f"{c.caller}: {c.sentence()}" for c in changes))
        return taken

    def apply(self, rung: Rung) -> float:
        taken = self.change(rung.key, rung.changes)
        self.applied.append(rung)
        self.in_force.append(rung)
        return taken

    def note_load(self, phase: str, m: Measurement | None, dependencies: set[str]) -> None:
        """The attempts/s each dependency receives; NaN when there is no data (never 0)."""
        for dependency in dependencies:
            value = math.nan if m is None else m.load.get(dependency, math.nan)
            self.load.setdefault(dependency, {})[phase] = value

    def effective(self, callers: set[str]) -> dict[str, dict[str, float]]:
        return {c: effective_of(pod_gauges(self.prometheus, c)) for c in callers}


@flow(name=RUNBOOK, log_prints=False)
def retry_storm(
    params: RetryStormParams, prometheus: HttpService, kubernetes: KubernetesTarget
) -> RetryStormResult:
    """Detect a retry storm, contain it rung by rung, wait for recovery, restore the settings."""
    run = _Run(params, prometheus, kubernetes)
    if params.trigger:
        run.timeline.add("trigger", params.trigger)
    lock = (
        contextlib.nullcontext()
        if params.dry_run
        else target_lock(
            LOCK_TARGET, timeout_seconds=LOCK_WAIT_SECONDS, lease_seconds=LOCK_LEASE_SECONDS
        )
    )
    try:
        with lock:
            return _respond(run)
    except TargetBusyError as exc:
        return run.result(
            "refused", Outcome.FAILED, f"another retry-storm run is acting ({exc}); nothing changed"
        )


def _respond(run: _Run) -> RetryStormResult:
    p, timeline = run.p, run.timeline
    # 1. measure: no Prometheus, no action
    try:
        first = measure(run.prometheus, p, p.window)
    except RunbookError as exc:
        return run.result(
            "refused",
            Outcome.FAILED,
            f"cannot measure the callers ({exc}); refusing to act blind: nothing was changed",
        )
    storm = storming(first.signals, p.thresholds)
    run.pairs = tuple(_pair(s, p, s in storm) for s in first.signals)
    timeline.add("measure", f"{len(first.signals)} caller/dependency pair(s) over {p.window}")
    if not storm:
        return _no_storm(run, first)

    run.note_load("storm", first, set(first.load))
    summary = ", ".join(
        f"{s.caller} -> {s.dependency} {s.retry_ratio(p.thresholds):.0%}" for s in storm
    )
    timeline.add("detected", f"retries per request over {p.thresholds.retry_ratio:.0%}: {summary}")
    emit(
        RUNBOOK,
        "detected",
        run.target,
        payload={
            "storming": [
                {"caller": s.caller, "to": s.dependency, "ratio": s.retry_ratio(p.thresholds)}
                for s in storm
            ],
            "load": dict(first.load),
            "trigger": p.trigger,
        },
    )
    # 2. plan from the live settings (a caller we cannot read cannot be undone: refused)
    callers = {s.caller for s in storm}
    try:
        current = {c: run.read(c).document for c in callers}
        run.plan = containment_plan(storm, current, run.effective(callers))
    except (RunbookError, ValueError) as exc:
        return run.result("refused", Outcome.FAILED, f"cannot plan the containment: {exc}")
    if not plan_gate(RUNBOOK, run.target, run.plan, dry_run=p.dry_run):
        return run.result("planned", Outcome.DRY_RUN, "dry run: plan published, nothing changed")
    try:
        return _contain_recover_restore(run, first)
    except RunbookError as exc:
        kept = ", ".join(r.key for r in run.in_force) or "nothing"
        return run.result(
            "failed",
            Outcome.FAILED,
            f"stopped by an error ({exc}); still in force from this run: {kept} (a re-run "
            "restores it once the dependency is healthy)",
        )


def _contain_recover_restore(run: _Run, first: Measurement) -> RetryStormResult:
    p, timeline = run.p, run.timeline
    assert run.plan is not None
    dependencies = set(first.load)
    # 3. contain: the lowest rung that changes something for the callers storming now, judged
    # over the time since every pod took it; again while anything storms (a caller that starts
    # storming meanwhile, e.g. the one upstream, gets its own first rung)
    step_plan, latest, contained_m = run.plan, first, None
    while not step_plan.empty:
        rung = step_plan.rungs[0]
        try:
            taken = run.apply(rung)
        except RunbookError as exc:
            return _step_failed(run, rung, exc)
        acted = frozenset(c.caller for r in run.applied for c in r.changes)
        verdict, m, _ = watch(
            run.prometheus,
            p,
            taken,
            judge=lambda m, acted=acted: contained_verdict(m.signals, acted, p.thresholds),
            for_seconds=p.settle_seconds,
        )
        latest = m or latest
        if verdict:
            contained_m = m
            break
        still = storming(latest.signals, p.thresholds)
        timeline.add(
            rung.key,
            f"not contained {p.settle_seconds:g} s later: "
            + (", ".join(s.caller for s in still) or "no data"),
            ok=False,
        )
        if not still:
            break  # no data to judge by: do not escalate blind
        live = {s.caller: run.read(s.caller).document for s in still}
        step_plan = containment_plan(still, live, run.effective({s.caller for s in still}))
    if contained_m is None:
        return run.result(
            "not-contained",
            Outcome.FAILED,
            f"rungs applied ({', '.join(r.key for r in run.applied)}) and the storm was not "
            "seen to stop; the settings are kept (they cut the load); look at the callers",
        )
    run.contained_after = run.elapsed()
    timeline.add("contained", f"after {run.contained_after:g} s by {run.applied[-1].key}")
    contained_m = _kill_switch(run, contained_m) or contained_m
    run.note_load("contained", contained_m, dependencies)
    cut = {
        d: load_reduction_percent(run.load[d]["storm"], run.load[d]["contained"])
        for d in dependencies
    }
    timeline.add(
        "load",
        ", ".join(f"{d} -{c:.0f} %" for d, c in sorted(cut.items()) if c is not None) or "no data",
    )
    emit(
        RUNBOOK,
        "contained",
        run.target,
        payload={
            "seconds": run.contained_after,
            "rungs": [r.key for r in run.applied],
            "reduction": cut,
        },
    )
    callers = tuple(dict.fromkeys(c.caller for r in run.applied for c in r.changes))
    # 4. recover: the calls succeed again for N intervals in a row
    if not _wait_recovered(run, callers):
        return run.result(
            "contained",
            Outcome.FAILED,
            f"contained, but the calls of {', '.join(callers)} did not recover within "
            f"{p.recovery_timeout_seconds:g} s: containment kept; run again to restore once "
            "the dependency is healthy",
        )
    emit(RUNBOOK, "recovered", run.target, payload={"seconds": run.recovered_after})
    if not p.restore:
        return run.result(
            "recovered",
            Outcome.SUCCEEDED,
            "contained and recovered; settings left contained (restore=false)",
        )
    # 5. restore, newest rung first, watching each step for a relapse
    stage, reason = _restore(run, callers, dependencies)
    return run.result(stage, Outcome.SUCCEEDED if stage == "restored" else Outcome.FAILED, reason)


def _kill_switch(run: _Run, m: Measurement) -> Measurement | None:
    """Once contained: the breaker on for the callers of a dependency still failing at least
    ``kill_switch_error_share`` of their calls, when that dependency is itself healthy
    upstream (a root cause: its own calls, if it makes any, are not failing). The dependency
    then gets time to recover; the breaker's half-open probes tell when it has."""
    p = run.p
    if p.kill_switch_error_share is None:
        return None
    roots = kill_switch_targets(m.signals, p.kill_switch_error_share)
    if not roots:
        return None
    live = {s.caller: run.read(s.caller).document for s in roots}
    plan = containment_plan(roots, live, run.effective({s.caller for s in roots}))
    rung = next((r for r in plan.rungs if r.key == OPEN_BREAKER), None)
    if rung is None:
        return None  # the breaker is already on
    run.timeline.add(
        "kill-switch",
        ", ".join(f"{s.dependency} fails {s.error_rate:.0%} of {s.caller}'s calls" for s in roots),
    )
    taken = run.apply(rung)
    _, after, _ = watch(
        run.prometheus, p, taken, judge=lambda m: True, for_seconds=p.verify_after_seconds
    )
    return after


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


def _no_storm(run: _Run, first: Measurement) -> RetryStormResult:
    """No storm. Settings an earlier run left contained (its annotation says so) are restored
    once the calls succeed; otherwise nothing changes."""
    p = run.p
    left: dict[str, SettingsChange] = {}
    for caller in sorted({s.caller for s in first.signals}):
        try:
            config = run.read(caller)
        except NotFoundError:
            continue  # a caller without our ConfigMap was never contained by us
        except RunbookError as exc:
            return run.result(
                "failed", Outcome.FAILED, f"no storm, but cannot read {caller}'s settings: {exc}"
            )
        if config.original is not None:
            change = restore_change(caller, config.document, config.original, RETRY_FIELDS)
            if change is not None:
                left[caller] = change
    if not left:
        return run.result(
            "no-storm",
            Outcome.NO_CHANGE,
            f"no storm: no caller retries more than {p.thresholds.retry_ratio:.0%} of its "
            f"requests over {p.window} (with at least {p.thresholds.min_request_rate:g} "
            "calls/s); nothing changed",
        )
    callers = tuple(left)
    run.timeline.add("leftover", f"contained settings from an earlier run: {', '.join(callers)}")
    if p.dry_run:
        return run.result("planned", Outcome.DRY_RUN, "dry run: leftovers found, nothing changed")
    try:
        if not _wait_recovered(run, callers):
            return run.result(
                "contained",
                Outcome.FAILED,
                f"no storm, but {', '.join(callers)} still fail: their contained settings are kept",
            )
        dependencies = {s.dependency for s in first.signals if s.caller in left}
        stage, reason = _restore(run, callers, dependencies, extra=tuple(left.values()))
    except RunbookError as exc:
        return run.result("failed", Outcome.FAILED, f"restoring the leftovers failed: {exc}")
    return run.result(stage, Outcome.SUCCEEDED if stage == "restored" else Outcome.FAILED, reason)


def _wait_recovered(run: _Run, callers: tuple[str, ...]) -> bool:
    """The callers' calls succeeded over ``recovered_intervals`` consecutive, non-overlapping
    windows; False at the timeout. A failed measurement counts as not healthy (and resets the
    count) rather than ending the run: Prometheus may blip during a long wait."""
    p = run.p
    deadline = time.monotonic() + p.recovery_timeout_seconds
    interval = max(p.poll_seconds, window_seconds(p.recovery_window))
    streak = 0
    while time.monotonic() < deadline:
        try:
            ok = healthy(measure(run.prometheus, p, p.recovery_window), callers, p.thresholds)
        except RunbookError as exc:
            run.timeline.add("recovering", f"cannot measure ({exc}); still waiting", ok=False)
            ok = False
        streak = streak + 1 if ok else 0
        if streak >= p.thresholds.recovered_intervals:
            run.recovered_after = run.elapsed()
            run.timeline.add(
                "recovered",
                f"errors at or under {p.thresholds.recovered_error_rate:.0%} for {streak} "
                f"intervals of {p.recovery_window} in a row, {run.recovered_after:g} s after "
                "the start",
            )
            return True
        time.sleep(interval)
    run.timeline.add("recovered", f"not within {p.recovery_timeout_seconds:g} s", ok=False)
    return False


def _restore(
    run: _Run,
    callers: tuple[str, ...],
    dependencies: set[str],
    extra: tuple[SettingsChange, ...] = (),
) -> tuple[Stage, str]:
    """Undo this run's rungs newest first, then whatever an earlier run left; after each step,
    watch for a relapse and, on one, re-apply that step and stop."""
    p = run.p
    steps: list[tuple[str, tuple[SettingsChange, ...], Rung | None]] = [
        (f"restore {r.key}", r.undo(), r) for r in reversed(list(run.in_force))
    ]
    if extra:
        steps.append(("restore original", extra, None))

    def relapsed(m: Measurement) -> bool | None:
        if storming([s for s in m.signals if s.caller in callers], p.thresholds):
            return False
        return False if healthy(m, callers, p.thresholds) is False else None

    last: Measurement | None = None
    for name, changes, rung in steps:
        taken = run.change(name, changes)
        if rung is not None:
            run.in_force.remove(rung)
        verdict, m, _ = watch(
            run.prometheus, p, taken, judge=relapsed, for_seconds=p.relapse_watch_seconds
        )
        last = m or last
        if verdict is False:
            run.change(f"re-apply after relapse ({name})", reverse(changes))
            if rung is not None:
                run.in_force.append(rung)
            emit(RUNBOOK, "relapsed", run.target, payload={"step": name, "callers": callers})
            return "relapsed", f"relapse after '{name}': that step re-applied, restoring stopped"
    run.note_load("restored", last, dependencies)
    emit(RUNBOOK, "restored", run.target, payload={"steps": [n for n, _, _ in steps]})
    return "restored", "storm contained, dependency recovered, original settings restored"


def _step_failed(run: _Run, rung: Rung, exc: RunbookError) -> RetryStormResult:
    """A rung could not be applied (its own partial writes are already undone): keep or undo the
    earlier rungs, as ``on_step_failure`` says, and report which."""
    earlier = [r.key for r in run.in_force]
    if run.p.on_step_failure == "undo" and run.in_force:
        try:
            for done in reversed(list(run.in_force)):
                run.change(f"undo {done.key}", done.undo())
                run.in_force.remove(done)
        except RunbookError as undo_error:
            kept = ", ".join(r.key for r in run.in_force)
            return run.result(
                "failed",
                Outcome.FAILED,
                f"step {rung.key} failed ({exc}); undoing the earlier steps failed too "
                f"({undo_error}): still in force: {kept}",
            )
        decision = f"earlier step(s) {', '.join(earlier)} undone (on_step_failure=undo)"
        outcome = Outcome.ROLLED_BACK
    elif earlier:
        decision = f"earlier step(s) {', '.join(earlier)} kept (on_step_failure=keep)"
        outcome = Outcome.FAILED
    else:
        decision = "nothing else had been changed"
        outcome = Outcome.FAILED
    return run.result("failed", outcome, f"step {rung.key} failed ({exc}); {decision}")
