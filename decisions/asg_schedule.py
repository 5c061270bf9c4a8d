"""The AWS side of ``load-forecast``: the plan as EC2 Auto Scaling scheduled actions, and the diff
against what a group has. Pure: actions in, frozen diff out; :mod:`tasks.autoscaling` does the
calls.

Choices, and why:

- **Ours by name.** Every action this runbook writes is named ``ACTION_PREFIX`` + a name derived
  from the schedule alone (``daily-0900``, ``at-20261201T0900Z``), so a re-run finds the same
  names, and an action without the prefix (a human's, another tool's) is never updated or
  deleted: it is not in the diff at all.
- **A floor, not a size.** The planned instances become ``MinSize`` only, like the capacity
  forecast of predictive scaling and like the HPA ``minReplicas`` the Kubernetes side sets.
  ``MaxSize`` and ``DesiredCapacity`` are left alone: the group keeps its ceiling and its
  dynamic policies still scale out above the floor.
- **Recurring actions carry no start.** A daily recurrence applies from the moment it is put;
  sending the plan's first hour as ``StartTime`` would add nothing (the plan repeats daily) and
  would make every nightly run differ from the last. AWS reports a ``StartTime`` for recurring
  actions anyway (the next run), so a recurring action compares on (recurrence, min size) only.
  A one-off action compares on (start, min size).
- **Past one-offs are dropped, with a note.** AWS refuses a ``StartTime`` in the past, and a
  window that has begun was provisioned by the previous plan; failing the whole schedule for it
  would be worse than skipping it.
- **Stale actions of ours are deleted.** A recurrence outlives the forecast it came from (see
  :func:`decisions.scaling.scheduled_actions`), so the planned set replaces ours entirely.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from decisions.scaling import ScheduledAction

ACTION_PREFIX = "runbooks-load-forecast-"

_DAILY = re.compile(r"^(?P<minute>[0-9]{1,2}) (?P<hour>[0-9]{1,2}) \* \* \*$")
_SHOWN = 3  # offending actions named in a refusal; the rest are counted


def _utc(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got {value.isoformat()}")
    return value.astimezone(UTC)


class AsgAction(BaseModel):
    """What one scheduled action on a group says, as far as this runbook writes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=255, description="ScheduledActionName.")
    recurrence: str | None = Field(description="Cron in UTC (Recurrence); empty: one-off.")
    start: datetime | None = Field(
        description="StartTime (UTC): when a one-off runs; for a recurring action informational."
    )
    min_size: int = Field(ge=0, description="MinSize the action sets: the planned floor.")

    @field_validator("start")
    @classmethod
    def _start_in_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value, "start")

    @model_validator(mode="after")
    def _says_when(self) -> AsgAction:
        if self.recurrence is not None and not self.recurrence.strip():
            raise ValueError(f"action {self.name!r}: recurrence must not be blank")
        if self.recurrence is None and self.start is None:
            raise ValueError(f"action {self.name!r} needs a recurrence or a start")
        return self

    @property
    def recurring(self) -> bool:
        return self.recurrence is not None

    @property
    def ours(self) -> bool:
        return self.name.startswith(ACTION_PREFIX)

    @property
    def when(self) -> str:
        """For people: ``daily at 09:00 UTC`` or ``2026-12-01 09:00 UTC``."""
        if self.recurrence is not None:
            daily = _DAILY.match(self.recurrence)
            if daily:
                return f"daily at {int(daily['hour']):02d}:{int(daily['minute']):02d} UTC"
            return f"cron {self.recurrence} (UTC)"
        assert self.start is not None  # the validator guarantees one of them
        return f"{self.start:%Y-%m-%d %H:%M} UTC"

    def same_as(self, other: AsgAction) -> bool:
        """Whether writing ``other`` over this action would change nothing that matters.

        Recurring actions ignore ``start`` (AWS fills in the next run time).
        """
        if self.recurring != other.recurring or self.min_size != other.min_size:
            return False
        if self.recurring:
            return self.recurrence == other.recurrence
        return self.start == other.start


def action_name(action: ScheduledAction) -> str:
    """The deterministic name of ``action``: ``<prefix>daily-0900`` or ``<prefix>at-...Z``."""
    if action.recurrence is None:
        start = _utc(action.start, "start")
        assert start is not None
        return f"{ACTION_PREFIX}at-{start:%Y%m%dT%H%M}Z"
    daily = _DAILY.match(action.recurrence)
    if daily is None or int(daily["hour"]) > 23 or int(daily["minute"]) > 59:
        raise ValueError(
            f"only daily recurrences ('M H * * *') can be named, got {action.recurrence!r}"
        )
    return f"{ACTION_PREFIX}daily-{int(daily['hour']):02d}{int(daily['minute']):02d}"


def planned_asg_actions(actions: Sequence[ScheduledAction]) -> tuple[AsgAction, ...]:
    """The scheduled actions enacting ``actions``, sorted by name (chronological per kind).

    Recurring actions get no start (see module doc). Two actions mapping to one name (two
    counts for the same daily hour, or the same start) are refused: the plan contradicts itself.
    """
    planned: dict[str, AsgAction] = {}
    for action in actions:
        name = action_name(action)
        asg_action = AsgAction(
            name=name,
            recurrence=action.recurrence,
            start=None if action.recurrence is not None else action.start,
            min_size=action.instances,
        )
        if name in planned:
            raise ValueError(
                f"two planned actions are both named {name!r} ({planned[name].when}): "
                "a schedule holds one count per time"
            )
        planned[name] = asg_action
    return tuple(planned[name] for name in sorted(planned))


class AsgScheduleDiff(BaseModel):
    """What applying a plan changes on one group: put (create, update), then delete.

    ``current`` keeps this runbook's actions as read (for the old sizes in the table);
    ``dropped`` holds planned one-offs whose start had passed, which are not written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str = Field(description="Auto Scaling group name.")
    create: tuple[AsgAction, ...] = Field(description="Planned actions the group lacks.")
    update: tuple[AsgAction, ...] = Field(description="Planned actions that differ (new value).")
    delete: tuple[str, ...] = Field(description="Names of our actions not in the plan.")
    unchanged: tuple[str, ...] = Field(description="Names of our actions already as planned.")
    current: tuple[AsgAction, ...] = Field(
        default=(), description="This runbook's actions on the group as read."
    )
    dropped: tuple[AsgAction, ...] = Field(
        default=(), description="Planned one-off actions not written: their start had passed."
    )

    @property
    def changed(self) -> bool:
        return bool(self.create or self.update or self.delete)

    @property
    def puts(self) -> tuple[AsgAction, ...]:
        """Creates then updates, the order they are written in."""
        return self.create + self.update

    @property
    def notes(self) -> tuple[str, ...]:
        """One sentence per dropped action, for logs and the schedule artifact."""
        return tuple(
            f"{a.name} (MinSize {a.min_size} at {a.when}) was not written: its start is not "
            "in the future, and AWS refuses past start times"
            for a in self.dropped
        )

    def table_rows(self) -> list[dict[str, str]]:
        """Rows for a markdown table: action, change, recurrence/start, min size (old -> new)."""
        old = {a.name: a for a in self.current}
        rows: list[tuple[str, str, AsgAction, str]] = []
        for a in self.create:
            rows.append((a.name, "create", a, str(a.min_size)))
        for a in self.update:
            was = old.get(a.name)
            size = f"{was.min_size} -> {a.min_size}" if was else str(a.min_size)
            rows.append((a.name, "update", a, size))
        for name in self.delete:
            rows.append((name, "delete", old[name], f"{old[name].min_size} -> (none)"))
        for name in self.unchanged:
            rows.append((name, "unchanged", old[name], str(old[name].min_size)))
        for a in self.dropped:
            rows.append((a.name, "dropped (start passed)", a, str(a.min_size)))
        return [
            {
                "action": name,
                "change": change,
                "recurrence / start": action.when,
                "min size": size,
            }
            for name, change, action, size in sorted(rows, key=lambda row: row[0])
        ]


def diff_asg_actions(
    group: str, current: Sequence[AsgAction], planned: Sequence[AsgAction], *, now: datetime
) -> AsgScheduleDiff:
    """The changes that make ``group``'s actions of ours equal ``planned``.

    Actions in ``current`` without :data:`ACTION_PREFIX` are ignored (never touched). Planned
    one-offs starting at or before ``now`` are dropped (see module doc). Refuses planned actions
    without the prefix (the diff would overwrite someone else's) and duplicate names.
    """
    at = _utc(now, "now")
    assert at is not None
    wanted: dict[str, AsgAction] = {}
    dropped: list[AsgAction] = []
    for action in planned:
        if not action.ours:
            raise ValueError(f"planned action {action.name!r} must start with {ACTION_PREFIX!r}")
        if action.name in wanted or any(d.name == action.name for d in dropped):
            raise ValueError(f"planned action {action.name!r} appears more than once")
        if not action.recurring and action.start is not None and action.start <= at:
            dropped.append(action)
        else:
            wanted[action.name] = action
    ours = {a.name: a for a in current if a.ours}
    create, update, unchanged = [], [], []
    for name in sorted(wanted):
        action = wanted[name]
        if name not in ours:
            create.append(action)
        elif ours[name].same_as(action):
            unchanged.append(name)
        else:
            update.append(action)
    return AsgScheduleDiff(
        group=group,
        create=tuple(create),
        update=tuple(update),
        delete=tuple(sorted(set(ours) - set(wanted))),
        unchanged=tuple(unchanged),
        current=tuple(ours[name] for name in sorted(ours)),
        dropped=tuple(sorted(dropped, key=lambda a: a.name)),
    )


def max_size_refusal(group: str, planned: Sequence[AsgAction], max_size: int) -> str | None:
    """The sentence refusing ``planned`` when an action's MinSize exceeds the group's MaxSize.

    AWS accepts such an action and fails it when it runs (MinSize above MaxSize), leaving the
    floor unset at the very hour it was needed; refusing before any change makes the team raise
    MaxSize or lower the service's ``max_instances`` now. ``None`` when every action fits.
    """
    over = [a for a in planned if a.min_size > max_size]
    if not over:
        return None
    shown = ", ".join(f"MinSize {a.min_size} {_at(a)}" for a in over[:_SHOWN])
    more = f" and {len(over) - _SHOWN} more" if len(over) > _SHOWN else ""
    return (
        f"group {group}: the plan sets {shown}{more}, above the group's MaxSize {max_size}, "
        "which AWS would fail when the action runs; raise the group's MaxSize or lower the "
        "service's max_instances (nothing was changed)"
    )


def _at(action: AsgAction) -> str:
    return action.when if action.recurring else f"at {action.when}"
