"""EC2 Auto Scaling tasks: read a group and its scheduled actions, write the planned schedule.

Each call goes through a client from the ``AwsTarget`` block, whose botocore *standard* retry
mode (explicit timeouts, full-jitter backoff, a retry quota, bounded attempts) is the one retry
layer for AWS calls, so the tasks have **no Prefect retries** and **no caching** (live state is
never answered from an earlier run). Vendor errors are translated where the call is made
(:func:`runbooks.errors.from_botocore`), naming the group and action.

:func:`apply_asg_schedule` writes a plan made by :mod:`decisions.asg_schedule`; see that module
for what is ours, what is compared and why. Here:

- every put sends the whole action (``Recurrence`` or ``StartTime``, and ``MinSize``): AWS keeps
  a field a put leaves out, moto drops it, and a complete put means the same on both;
- puts come before deletes, so a failure half-way leaves each hour with the old floor or the
  new one, never none; the error then says what was applied and what was not, and re-running
  converges (a put of the same action and a delete of a gone one change nothing);
- a refusal (a planned MinSize above the group's MaxSize) happens before any write, dry run or
  not: the dry run shows what the real run would do, including refusing.

``boto3`` comes from the block's factory, imported there: importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.aws import AwsTarget
from decisions.asg_schedule import (
    ACTION_PREFIX,
    AsgAction,
    AsgScheduleDiff,
    diff_asg_actions,
    max_size_refusal,
    planned_asg_actions,
)
from decisions.scaling import ScheduledAction
from runbooks.errors import InvalidRequestError, RunbookError, botocore_errors
from runbooks.kit._run import logger as run_logger


class AsgGroup(BaseModel):
    """An Auto Scaling group's sizes, as read."""

    model_config = ConfigDict(frozen=True)

    name: str
    min_size: int
    max_size: int
    desired: int


@task(name="describe-auto-scaling-group", cache_policy=NO_CACHE)
def describe_group(aws: AwsTarget, group: str) -> AsgGroup:
    """The group's min, max and desired sizes.

    Raises :class:`InvalidRequestError` naming the group when the region has none of that name
    (AWS answers an empty list, not an error).
    """
    return _describe_group(aws.get_client("autoscaling"), group, aws.region_name)


@task(name="list-scheduled-actions", cache_policy=NO_CACHE)
def list_scheduled_actions(aws: AwsTarget, group: str) -> tuple[AsgAction, ...]:
    """This runbook's scheduled actions on the group (name starts with ``ACTION_PREFIX``).

    Only ours: :class:`AsgAction` models what this runbook writes (MinSize), not everything an
    action can say, and others' actions are never changed, so they are not read into a plan.
    All pages are read.
    """
    return _list_ours(aws.get_client("autoscaling"), group)


@task(name="apply-asg-schedule", cache_policy=NO_CACHE)
def apply_asg_schedule(
    aws: AwsTarget,
    group: str,
    actions: Sequence[ScheduledAction],
    *,
    now: datetime,
    dry_run: bool,
) -> AsgScheduleDiff:
    """Make ``group``'s scheduled actions of ours equal the plan's ``actions``; the diff.

    Reads the group and our actions, diffs them against the plan (past one-offs dropped),
    refuses a planned MinSize above the group's MaxSize (:class:`InvalidRequestError`, nothing
    written), then, unless ``dry_run``, puts the creates and updates and deletes the stale
    actions. A failure after the first write is raised as the same kind of error (transient or
    permanent) with a sentence naming what was applied and what was not.
    """
    log = run_logger(__name__)
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidRequestError(f"now must be timezone-aware (UTC), got {now.isoformat()}")
    try:
        planned = planned_asg_actions(actions)
    except ValueError as exc:  # the plan contradicts itself: refused before any call
        raise InvalidRequestError(f"group {group}: {exc}", target=group) from exc
    client = aws.get_client("autoscaling")
    found = _describe_group(client, group, aws.region_name)
    diff = diff_asg_actions(group, _list_ours(client, group), planned, now=now)
    for note in diff.notes:
        log.warning("group %s: %s", group, note)
    refusal = max_size_refusal(group, diff.puts + _unchanged(diff), found.max_size)
    if refusal is not None:
        raise InvalidRequestError(refusal, target=group)
    if not diff.changed:
        log.info("group %s: %d scheduled action(s) already as planned", group, len(diff.unchanged))
        return diff
    steps = [f"put {a.name}" for a in diff.puts] + [f"delete {n}" for n in diff.delete]
    if dry_run:
        log.info("dry run, group %s: would %s", group, ", ".join(steps))
        return diff
    done: list[str] = []
    try:
        for action in diff.puts:
            _put(client, group, action)
            done.append(f"put {action.name}")
            log.info(
                "group %s: put %s (MinSize %d, %s)",
                group,
                action.name,
                action.min_size,
                action.when,
            )
        for name in diff.delete:
            gone = _delete(client, group, name)
            done.append(f"delete {name}")
            log.info("group %s: deleted %s%s", group, name, "" if gone else " (already gone)")
    except RunbookError as exc:
        if not done:
            raise
        raise _partial(exc, group, done, steps[len(done) :]) from exc
    return diff


def _unchanged(diff: AsgScheduleDiff) -> tuple[AsgAction, ...]:
    kept = set(diff.unchanged)
    return tuple(a for a in diff.current if a.name in kept)


def _describe_group(client: Any, group: str, region: str) -> AsgGroup:
    with botocore_errors(f"describe Auto Scaling group {group}", group):
        found = client.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    groups = [g for g in found["AutoScalingGroups"] if g["AutoScalingGroupName"] == group]
    if not groups:
        raise InvalidRequestError(
            f"Auto Scaling group {group!r} does not exist in {region}; check the service's "
            "group name and the block's region",
            target=group,
        )
    data = groups[0]
    return AsgGroup(
        name=group,
        min_size=data["MinSize"],
        max_size=data["MaxSize"],
        desired=data["DesiredCapacity"],
    )


def _list_ours(client: Any, group: str) -> tuple[AsgAction, ...]:
    ours: list[AsgAction] = []
    with botocore_errors(f"list scheduled actions of Auto Scaling group {group}", group):
        pages = client.get_paginator("describe_scheduled_actions").paginate(
            AutoScalingGroupName=group
        )
        for page in pages:
            for data in page["ScheduledUpdateGroupActions"]:
                if data["ScheduledActionName"].startswith(ACTION_PREFIX):
                    ours.append(_action(group, data))
    return tuple(sorted(ours, key=lambda a: a.name))


def _action(group: str, data: dict[str, Any]) -> AsgAction:
    name = data["ScheduledActionName"]
    if data.get("MinSize") is None:
        # A put keeps the fields it leaves out, so an action we made always has MinSize; one
        # without was made under our name by someone else, and replacing it could lose intent.
        raise InvalidRequestError(
            f"scheduled action {name} on group {group} carries this runbook's name prefix but "
            "sets no MinSize; delete or rename it, then re-run",
            target=group,
        )
    start = data.get("StartTime")
    return AsgAction(
        name=name, recurrence=data.get("Recurrence"), start=start, min_size=data["MinSize"]
    )


def _put(client: Any, group: str, action: AsgAction) -> None:
    when: dict[str, Any] = (
        {"Recurrence": action.recurrence}
        if action.recurrence is not None
        else {"StartTime": action.start}
    )
    with botocore_errors(
        f"put scheduled action {action.name} on Auto Scaling group {group}", group
    ):
        client.put_scheduled_update_group_action(
            AutoScalingGroupName=group,
            ScheduledActionName=action.name,
            MinSize=action.min_size,
            **when,
        )


def _delete(client: Any, group: str, name: str) -> bool:
    """Delete one action; False when it was already gone (a one-off that ran meanwhile: AWS
    removes those after they run, and answers ``ValidationError ... not found``)."""
    from botocore.exceptions import ClientError

    with botocore_errors(f"delete scheduled action {name} of Auto Scaling group {group}", group):
        try:
            client.delete_scheduled_action(AutoScalingGroupName=group, ScheduledActionName=name)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            message = str(error.get("Message", "")).lower()
            if error.get("Code") == "ValidationError" and "not found" in message:
                return False
            raise
    return True


def _partial(exc: RunbookError, group: str, done: list[str], pending: list[str]) -> RunbookError:
    """``exc`` as the same kind of error, saying what was applied before it and what was not."""
    message = (
        f"{exc.message}; on group {group} this run applied {', '.join(done)} and did not apply "
        f"{', '.join(pending)}; re-run to converge (each step is idempotent)"
    )
    return type(exc)(message, status=exc.status, target=exc.target)
