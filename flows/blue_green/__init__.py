"""Runbook ``blue-green``: health-gated blue-green rollout with approval, expand/contract
migrations, a staged feature-flag rollout and automatic rollback.

Reads like the runbook (issue 4), in :mod:`.flow`: observe -> plan -> publish (a dry run stops)
-> lock the target -> expand migration -> deploy the idle colour -> wait for it (a crash loop
fails at once) -> backfill -> point the preview Service at it -> pre-promotion analysis (with
synthetic load, so the metrics have data) -> approval -> switch the active Service (one selector
patch) -> bake -> flag steps, each held while health holds -> scale the old colour down after
``scale_down_delay_seconds`` -> contract, only when asked.

Modules: :mod:`.flow` (the flow and its result), :mod:`.rollout` (the steps, each a Prefect
transaction whose ``on_rollback`` hook undoes it), :mod:`.analysis` (measurements until a
verdict), :mod:`.approval` (the pause for a typed answer), :mod:`.results` (result model,
endings, errors).

Endings (``result.rollout``): ``promoted``; ``rolled_back`` (a step failed after a change: the
reached steps were undone newest first: flag off, old colour scaled back up, selector back,
new colour scaled to 0; expand and backfill kept, contract never run); ``rejected`` (the
approval gate said no, or an approver who is not allowed said yes); ``aborted`` (no answer in
time); ``noop``; ``dry_run``. Events ``runbooks.blue-green.{started, promoted, rolled-back,
aborted}``; artifacts: the plan, the audit trail (timeline) and the measurements table.

Killed mid-rollout (the process dies: no hook runs), re-running the same parameters converges:
before the switch the plan deploys the idle colour again (idempotent) and carries on; after it
the new image is active, so the plan *resumes* (post-promotion analysis, then scale-down; a
failing bake switches back to the old colour) or finds nothing to do; a crash during a rollback
re-attempts the rollout, which fails its analysis again and rolls back. The killed run's lock
lease (60 s) blocks re-runs until it expires or an operator who knows the run is dead frees it
with ``runbooks.kit.release_target("<namespace>/<service>")``; the re-run's busy error says so.
The killed run itself stays Running in the Prefect UI: cancel it there.
"""

from flows.blue_green.approval import ApprovalInput
from flows.blue_green.flow import blue_green
from flows.blue_green.results import (
    ApprovalDecision,
    ApprovalRecord,
    BlueGreenResult,
    MeasurementRow,
    RolloutOutcome,
)

__all__ = [
    "ApprovalDecision",
    "ApprovalInput",
    "ApprovalRecord",
    "BlueGreenResult",
    "MeasurementRow",
    "RolloutOutcome",
    "blue_green",
]
