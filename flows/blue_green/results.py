"""What a blue-green run reports: its result model, its endings, and the errors that end it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from decisions.analysis import Measurement
from decisions.bluegreen import Colour, RolloutPlan
from runbooks.errors import RunbookError
from runbooks.kit import Outcome, RunbookResult

RUNBOOK = "blue-green"


class RolloutOutcome(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    ABORTED = "aborted"
    NOOP = "noop"
    DRY_RUN = "dry_run"


OUTCOME = {
    RolloutOutcome.PROMOTED: Outcome.SUCCEEDED,
    RolloutOutcome.ROLLED_BACK: Outcome.ROLLED_BACK,
    # rejected / approval timed out: green was deployed, then undone, so the world changed back
    RolloutOutcome.REJECTED: Outcome.ROLLED_BACK,
    RolloutOutcome.ABORTED: Outcome.ROLLED_BACK,
    RolloutOutcome.NOOP: Outcome.NO_CHANGE,
    RolloutOutcome.DRY_RUN: Outcome.DRY_RUN,
}
"""The runbook-neutral :class:`Outcome` of each blue-green ending."""


class MeasurementRow(Measurement):
    """One analysis measurement with where it was taken and the verdict on it."""

    phase: str = Field(description="The step that measured: pre_analysis, post_analysis, flag_N.")
    colour: str
    verdict: str
    reason: str


class ApprovalDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


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
    flag_percent: float | None = Field(
        None, description="The flag's rollout percentage after the run (0 after a kill switch)."
    )
    rollback_seconds: float | None = Field(
        None, description="First failing check -> traffic safe on the old colour again."
    )


class AnalysisFailed(RunbookError):
    """An analysis ended failed or inconclusive: the version must not (stay) promoted."""


class ApprovalRejected(RunbookError):
    """The approval gate was answered with reject, or by someone not allowed to approve."""

    record: ApprovalRecord | None = None


class ApprovalTimedOut(RunbookError):
    """Nobody answered the approval gate in time."""

    record: ApprovalRecord | None = None


def ending(exc: BaseException) -> RolloutOutcome:
    """How an undone rollout ended: rejected at the gate, aborted (no answer) or rolled back."""
    if isinstance(exc, ApprovalRejected):
        return RolloutOutcome.REJECTED
    if isinstance(exc, ApprovalTimedOut):
        return RolloutOutcome.ABORTED
    return RolloutOutcome.ROLLED_BACK
