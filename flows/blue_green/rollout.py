"""The acting part of a blue-green run: the plan's steps, each in a Prefect transaction.

Why transactions: each step runs inside its own ``prefect.transactions.transaction``, nested in
one transaction for the whole rollout, and stages an ``on_rollback`` hook *before* it acts (a
step that fails half-way, e.g. a selector patch whose answer was lost, may have changed the
world). When any step raises, Prefect rolls the failing step back, then the steps before it,
newest first: exactly the reverse order an undo needs. The UI shows each hook's log lines.

What each hook undoes is decided by the pure planner, :func:`decisions.bluegreen.rollback_steps`,
over *every* step reached so far (so plan-wide rules hold: one kill switch for several flag
steps, nothing undone once a contract migration started); a hook runs only the undo steps its
own step asked for. Two rules Prefect does not give us:

- a hook that fails stops the undo: Prefect logs the error and goes on to the older steps, so
  every later hook checks :attr:`Rollout.undo_error` and does nothing (scaling green down after
  the switch back failed would leave the Service selecting no ready pod);
- the undo step keys run are recorded (:attr:`Rollout.undone`) and never run twice.

A killed process runs no hook: re-running the flow rebuilds the plan from live state and
converges (see :mod:`decisions.bluegreen`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.transactions import Transaction, transaction

from blocks.database import DatabaseTarget
from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from decisions.bluegreen import (
    RolloutPlan,
    Step,
    StepKind,
    deployment_name,
    pod_labels,
    preview_service_name,
    rollback_steps,
)
from decisions.bluegreen_manifest import idle_manifest, preview_manifest
from decisions.migrations import Phase
from flows.blue_green.analysis import analyse, service_url, wait_routed
from flows.blue_green.approval import await_approval
from flows.blue_green.results import RUNBOOK, ApprovalRecord, MeasurementRow
from runbooks.errors import InvalidRequestError, RunbookError
from runbooks.kit import Timeline, emit
from tasks.flags import set_feature_flag
from tasks.kubernetes import (
    ServicePort,
    apply_deployment,
    ensure_service,
    patch_service_selector,
    read_deployment_manifest,
    scale_deployment,
    wait_for_no_pods,
    wait_for_rollout,
)
from tasks.migrations import apply_migrations

PREVIEW_READY_SECONDS = 15.0
MIGRATIONS = {
    StepKind.MIGRATE_EXPAND: Phase.EXPAND,
    StepKind.MIGRATE_BACKFILL: Phase.BACKFILL,
    StepKind.MIGRATE_CONTRACT: Phase.CONTRACT,
}


class Rollout:
    """One run's acting part and its record: steps reached, measurements, undo, timings."""

    def __init__(
        self,
        plan: RolloutPlan,
        timeline: Timeline,
        *,
        k8s: KubernetesTarget,
        prometheus: HttpService | None,
        database: DatabaseTarget | None,
        active_url: str,
        active_ports: tuple[ServicePort, ...],
    ) -> None:
        self.plan = plan
        self.timeline = timeline
        self.k8s = k8s
        self.prometheus = prometheus
        self.database = database
        self.active_url = active_url
        self.active_ports = active_ports
        self.reached: list[str] = []
        self.rows: list[MeasurementRow] = []
        self.undone: list[str] = []
        self.undo_error: Exception | None = None
        self.first_failure: float | None = None
        self.switched_at: float | None = None
        self.approval: ApprovalRecord | None = None
        self.migrated: list[str] = []
        self.flag_percent: float | None = None
        self._preview_url: str | None = None

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> None:
        """Every step of the plan in order; on a failure the reached steps are undone (newest
        first) before the exception propagates."""
        with transaction():
            for step in self.plan.steps:
                if step.kind is StepKind.LOCK:
                    continue  # taken by the flow around the run
                with self._step(step):
                    self._execute(step)

    def failed_now(self) -> None:
        """The first failing check starts the rollback clock."""
        if self.first_failure is None:
            self.first_failure = time.monotonic()

    @contextmanager
    def _step(self, step: Step) -> Iterator[None]:
        with transaction() as txn:
            txn.stage(step.key, on_rollback_hooks=[self._undo_hook(step)])
            self.reached.append(step.key)
            self.timeline.add(step.key, step.sentence)
            try:
                yield
            except BaseException as exc:
                self.failed_now()
                self.timeline.add(step.key, f"failed: {type(exc).__name__}: {exc}", ok=False)
                raise  # the transaction rolls this step back, then the earlier ones
        self.timeline.add(step.key, "done")

    # -- steps ------------------------------------------------------------------------------

    def _execute(self, step: Step) -> None:
        plan, p = self.plan, self.plan.params
        ns, svc = p.namespace, p.service
        old, new = plan.active_colour, plan.idle_colour
        if step.kind in MIGRATIONS:
            self._migrate(step)
        elif step.kind is StepKind.DEPLOY_IDLE:
            live = read_deployment_manifest(self.k8s, ns, deployment_name(svc, old))
            if live is None:
                raise InvalidRequestError(f"{deployment_name(svc, old)} disappeared")
            manifest = idle_manifest(
                live,
                service=svc,
                colour=new,
                image=step.image or p.image,
                replicas=step.replicas or p.replicas,
            )
            apply_deployment(self.k8s, manifest)
        elif step.kind is StepKind.WAIT_ROLLOUT:
            wait_for_rollout(
                self.k8s,
                ns,
                deployment_name(svc, new),
                timeout_seconds=step.seconds or float(p.progress_deadline_seconds),
            )
        elif step.kind is StepKind.POINT_PREVIEW:
            self._point_preview()
        elif step.kind is StepKind.PRE_ANALYSIS:
            assert self._preview_url is not None, "point_preview precedes pre_analysis"
            self._analyse(step, p.pre_promotion, self._preview_url)
        elif step.kind is StepKind.APPROVAL:
            self._approve()
        elif step.kind is StepKind.SWITCH:
            patch_service_selector(
                self.k8s, ns, svc, pod_labels(svc, new), expected=pod_labels(svc, old)
            )
            self.switched_at = time.monotonic()
            payload = {"from": old.value, "to": new.value, "image": p.image}
            emit(RUNBOOK, "promoted", p.target, payload=payload)
        elif step.kind is StepKind.POST_ANALYSIS:
            if self.switched_at is None:  # resume: the switch happened in an earlier run
                self.switched_at = time.monotonic()
            self._analyse(step, p.post_promotion, self.active_url)
        elif step.kind is StepKind.FLAG:
            self._flag(step)
        elif step.kind is StepKind.SCALE_DOWN_OLD:
            assert step.colour is not None
            since = time.monotonic() - (self.switched_at or time.monotonic())
            remaining = (step.seconds or 0.0) - since
            if remaining > 0:
                self.timeline.add(step.key, f"keep the old colour {remaining:.1f}s more")
                time.sleep(remaining)
            scale_deployment(self.k8s, ns, deployment_name(svc, step.colour), 0)
            if any(s.kind is StepKind.MIGRATE_CONTRACT for s in plan.steps):
                waited = wait_for_no_pods(
                    self.k8s,
                    ns,
                    pod_labels(svc, step.colour),
                    timeout_seconds=float(p.progress_deadline_seconds),
                )
                self.timeline.add(step.key, f"old pods gone after {waited:g}s")
        else:
            raise InvalidRequestError(f"step kind {step.kind.value} is not supported")

    def _point_preview(self) -> None:
        p, new = self.plan.params, self.plan.idle_colour
        labels = pod_labels(p.service, new)
        ports = [
            {
                k: v
                for k, v in (("name", q.name), ("port", q.port), ("targetPort", q.target_port))
                if v is not None
            }
            for q in self.active_ports
        ]
        state = ensure_service(
            self.k8s, preview_manifest(service=p.service, colour=new, ports=ports)
        )
        if state.selector != labels:
            name = preview_service_name(p.service)
            patch_service_selector(self.k8s, p.namespace, name, labels, expected=state.selector)
        self._preview_url = service_url(state)
        wait_routed(self._preview_url, PREVIEW_READY_SECONDS)

    def _analyse(self, step: Step, spec: Any, url: str) -> None:
        analyse(
            step_key=step.key,
            spec=spec,
            url=url,
            colour=step.colour or self.plan.idle_colour,
            params=self.plan.params,
            prometheus=self.prometheus,
            timeline=self.timeline,
            record=self.rows.append,
            on_failure=self.failed_now,
        )

    def _approve(self) -> None:
        p = self.plan.params
        try:
            self.approval = await_approval(p.approval, p.target, self.timeline)
        except RunbookError as exc:
            self.approval = getattr(exc, "record", None)
            raise

    def _flag(self, step: Step) -> None:
        p = self.plan.params
        assert p.flag is not None
        assert step.percent is not None
        config_map = p.flag.config_map_name(p.service)
        set_feature_flag(self.k8s, p.namespace, config_map, p.flag.name, float(step.percent))
        self.flag_percent = float(step.percent)
        self._analyse(step, p.flag.hold, self.active_url)

    def _migrate(self, step: Step) -> None:
        """Apply the step's phase of the migration (already applied step ids are skipped)."""
        p, database = self.plan.params, self.database
        assert database is not None, "the flow refuses migrations without a database"
        applied = apply_migrations(
            database, p.migration, MIGRATIONS[step.kind], runbook_target=p.target
        )
        self.migrated += applied
        detail = f"applied {', '.join(applied) or 'nothing'} on {database.target}"
        skipped = [i for i in step.migration_ids if i not in applied]
        if skipped:
            detail += f"; already applied: {', '.join(skipped)}"
        self.timeline.add(step.key, detail)

    # -- undo -------------------------------------------------------------------------------

    def _undo_hook(self, step: Step) -> Callable[[Transaction], None]:
        def hook(txn: Transaction) -> None:
            self._undo(step)

        hook.__name__ = f"undo {step.key}"  # Prefect logs the hook by this name
        return hook

    def _undo(self, step: Step) -> None:
        mine = {u.key for u in rollback_steps(self.plan, [step.key])}
        todo = [
            u
            for u in rollback_steps(self.plan, self.reached)
            if u.key in mine and u.key not in self.undone
        ]
        for undo in todo:
            if self.undo_error is not None:
                self.timeline.add(undo.key, "skipped: an earlier undo step failed", ok=False)
                continue
            self.timeline.add(undo.key, undo.sentence)
            try:
                self._execute_undo(undo)
            except Exception as exc:
                self.undo_error = exc
                self.timeline.add(undo.key, f"failed: {type(exc).__name__}: {exc}", ok=False)
                raise
            self.undone.append(undo.key)
            self.timeline.add(undo.key, "done")

    def _execute_undo(self, step: Step) -> None:
        p = self.plan.params
        assert step.colour is not None or step.kind is StepKind.FLAG_OFF
        if step.kind is StepKind.FLAG_OFF:
            assert p.flag is not None
            config_map = p.flag.config_map_name(p.service)
            set_feature_flag(self.k8s, p.namespace, config_map, p.flag.name, None)
            self.flag_percent = 0.0
        elif step.kind is StepKind.SWITCH_BACK:
            assert step.colour is not None
            patch_service_selector(
                self.k8s,
                p.namespace,
                p.service,
                pod_labels(p.service, step.colour),
                expected=pod_labels(p.service, step.colour.other),
            )
        elif step.kind is StepKind.SCALE_DOWN_NEW:
            assert step.colour is not None
            scale_deployment(self.k8s, p.namespace, deployment_name(p.service, step.colour), 0)
        elif step.kind is StepKind.SCALE_UP_OLD:
            assert step.colour is not None
            name = deployment_name(p.service, step.colour)
            scale_deployment(self.k8s, p.namespace, name, step.replicas or p.replicas)
            wait_for_rollout(self.k8s, p.namespace, name, timeout_seconds=step.seconds or 600.0)
        else:
            raise InvalidRequestError(f"undo step kind {step.kind.value} is not supported")
