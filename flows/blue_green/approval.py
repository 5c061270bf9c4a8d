"""The approval gate: pause the flow run for a typed answer, judge it, record who gave it.

Answer in the Prefect UI (the form is :class:`ApprovalInput`) or with
``prefect.flow_runs.resume_flow_run(id, run_input={...})`` (chat-ops does the same). Endings:

- ``approve`` by an allowed approver (anyone when ``allowed_approvers`` is empty): go on;
- ``reject``, or ``approve`` by someone not allowed: :class:`ApprovalRejected`;
- no answer within ``timeout_seconds``: :class:`ApprovalTimedOut`. Prefect leaves the run Paused
  (or its pause-expiry service marks it Failed) and refuses task runs of a run that is not
  Running, so the run is forced back to Running first: the undo steps are task runs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from decisions.bluegreen import ApprovalSpec
from flows.blue_green.results import (
    ApprovalDecision,
    ApprovalRecord,
    ApprovalRejected,
    ApprovalTimedOut,
)
from runbooks.kit import Timeline

POLL_SECONDS = 1  # pause_flow_run's default (10 s) would delay every answer
PAUSE_KEY = "approval"  # lowercase letters, digits and dashes only


class ApprovalInput(RunInput):
    """The answer to a paused blue-green rollout (the Prefect UI renders it as a form)."""

    decision: ApprovalDecision = Field(description="approve to switch traffic, reject to undo.")
    approver: str = Field(min_length=1, max_length=200, description="Who answers.")
    reason: str = Field("", max_length=2000, description="Why, for the audit trail.")


def await_approval(spec: ApprovalSpec, target: str, timeline: Timeline) -> ApprovalRecord:
    """Pause for an :class:`ApprovalInput`; the record of an accepted approval, else raise.

    The record is attached to the exception (``exc.record``) when the gate refuses.
    """
    try:
        answer = pause_flow_run(
            wait_for_input=ApprovalInput,
            timeout=spec.timeout_seconds,
            poll_interval=POLL_SECONDS,
            key=PAUSE_KEY,
        )
    except FlowPauseTimeout as exc:
        _take_run_back()
        note = f"no answer within {spec.timeout_seconds} s: aborting"
        timeline.add("approval", note, ok=False)
        timed_out = ApprovalTimedOut(
            f"approval timed out after {spec.timeout_seconds} s", target=target
        )
        timed_out.record = ApprovalRecord(decision=None, accepted=False, note=note, at=_now())
        raise timed_out from exc
    record = judge(spec, answer)
    timeline.add("approval", record.note, ok=record.accepted)
    if not record.accepted:
        rejected = ApprovalRejected(record.note, target=target)
        rejected.record = record
        raise rejected
    return record


def judge(spec: ApprovalSpec, answer: ApprovalInput) -> ApprovalRecord:
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
    """Force the timed-out run back to Running so its undo task runs are accepted."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    context = FlowRunContext.get()
    assert context is not None, "called inside the flow run"
    assert context.flow_run is not None
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def _now() -> datetime:
    return datetime.now(UTC)
