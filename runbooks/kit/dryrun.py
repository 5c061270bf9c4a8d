"""The dry-run gate every mutating runbook passes through (DESIGN principle 1).

A runbook observes, builds a frozen plan, then calls :func:`plan_gate`: the plan is always
published (so a dry run and a real run leave the same record of intent), and the return value
says whether to act. With ``dry_run=True`` the runbook stops there and returns
:func:`result_for_dry_run`, so every runbook's dry run has the same shape.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from runbooks.kit import _run
from runbooks.kit.artifacts import publish_plan
from runbooks.kit.results import RunbookResult, Timeline

R = TypeVar("R", bound=RunbookResult)

DRY_RUN_REASON = "dry run: plan published, nothing changed"
_LOGGER = __name__


def plan_gate(runbook: str, target: str, plan: BaseModel, *, dry_run: bool) -> bool:
    """Publish ``plan``; True when the runbook should go on and act, False on a dry run."""
    publish_plan(runbook, target, plan)
    log = _run.logger(_LOGGER)
    if dry_run:
        log.info(DRY_RUN_REASON)
        return False
    log.info("plan published; acting on %s", target)
    return True


def result_for_dry_run(
    timeline: Timeline,
    *,
    runbook: str,
    target: str,
    result_type: type[R] = RunbookResult,  # type: ignore[assignment]
    reason: str = DRY_RUN_REASON,
    **fields: Any,
) -> R:
    """The result of a dry run: outcome ``dry_run``, ``dry_run=True``, the timeline so far.

    ``result_type`` is the runbook's own result class; ``fields`` are its extra fields.
    """
    return result_type.for_dry_run(
        timeline, runbook=runbook, target=target, reason=reason, **fields
    )
