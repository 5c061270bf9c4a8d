"""The Kubernetes side of ``apply-scaling``: what an HPA's ``minReplicas`` or a KEDA
``ScaledObject``'s cron triggers should be for a schedule. Pure: plain values in, frozen
decisions out; the tasks in ``tasks/kube_scaling.py`` read and write.

HPA (``minReplicas`` follows the current hour's plan). Choices, and why:

- **The floor is the human-set minimum.** The first time we touch an HPA its ``minReplicas`` is
  what a person configured for availability; it is recorded in :data:`FLOOR_ANNOTATION` in the
  same patch as our first change, because after that patch the live value is ours and the
  person's choice would otherwise be lost. We never go below it, and an hour with no plan goes
  back to it (the plan ran out: the configured minimum is the only safe claim).
- **A person's later edit wins.** We also record the value we set in :data:`SET_ANNOTATION`.
  When the live ``minReplicas`` differs from it, someone changed it by hand after us; that value
  becomes the new floor (it is recorded at our next write). Alternatives were worse: keeping the
  old floor silently undoes an incident responder's raise at the next hour; refusing to act
  stops scaling until someone edits annotations. A hand edit equal to our last value cannot be
  told apart from ours, and needs no different treatment.
- **Never above ``maxReplicas``**, even when the floor is above it (someone lowered
  ``maxReplicas``): the API server refuses ``minReplicas > maxReplicas``, and the person who
  set the ceiling said the most recently what the service may use.

KEDA (``ScaledObject`` scales the Deployment; KEDA owns the HPA it creates, so its
``minReplicas`` must not be patched): each window above the ScaledObject's ``minReplicaCount`` is
one ``cron`` trigger (``timezone``, ``start``, ``end``, ``desiredReplicas`` as a string: the
scaler's metadata is a string map). KEDA's cron scaler is active while the next ``end`` comes
before the next ``start``, and the HPA takes the largest of all triggers' replica counts, so:

- **Daily recurrences when the plan repeats daily** (exactly the test
  :func:`decisions.scaling.scheduled_actions` applies for the AWS side: at least 48 contiguous
  hours, each equal to the same hour a day later). ``0 22 * * *`` -> ``0 2 * * *`` is active
  from 22:00 to 02:00: crossing midnight needs no split. Why recurrences: if the nightly
  forecast fails, yesterday's daily shape keeps applying, as it does on AWS, instead of the
  service dropping to its minimum at tomorrow's peak. A constant day is two half-day triggers
  (a trigger's start and end must differ).
- **Otherwise date-pinned triggers**: ``0 9 14 3 *`` -> ``0 2 16 3 *`` is active exactly over
  [14 March 09:00, 16 March 02:00): windows crossing midnight or longer than a day are one
  trigger each, no split. A pinned pair would fire again a year later; ``apply-scaling``
  rewrites the whole set every hour, so it never lives that long.
- Windows at or below the floor get no trigger (the floor already holds them); the replicas
  are capped at ``maxReplicaCount`` when given (KEDA's HPA would cap them anyway; the report
  should say what will happen). Our triggers are named :data:`CRON_TRIGGER_PREFIX` + n, so
  :func:`merge_cron_triggers` replaces them and keeps everyone else's (a ``cpu`` trigger) in
  their order.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from decisions.scaling import ScheduleWindow, scheduled_actions

FLOOR_ANNOTATION = "runbooks.dev/min-replicas-floor"
"""The human-set ``minReplicas`` of an HPA, recorded with our first change of it."""
SET_ANNOTATION = "runbooks.dev/min-replicas-set"
"""The ``minReplicas`` we last set; a live value that differs from it was set by hand."""
CRON_TRIGGER_PREFIX = "runbooks-schedule-"
"""Name prefix of the KEDA triggers we own; every other trigger is left as it is."""
KEDA_TIMEZONE = "Etc/UTC"

_YEAR = timedelta(days=365)


def _aware_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got {value.isoformat()}")
    return value.astimezone(UTC)


def _hour_of(value: datetime, what: str) -> datetime:
    return _aware_utc(value, what).replace(minute=0, second=0, microsecond=0)


def planned_minimum(windows: Sequence[ScheduleWindow], now: datetime) -> int | None:
    """Instances planned for ``now``'s hour: the window with ``start <= hour < end``.

    ``None`` when no window contains it (a gap, or the plan ran out). A naive ``now`` is refused:
    an hourly plan in UTC read with a local clock would be off by the UTC offset. Overlapping
    windows (never produced by ``compress_schedule``) give the largest count: capacity errs high.
    """
    hour = _hour_of(now, "now")
    counts = [
        w.instances
        for w in windows
        if _aware_utc(w.start, "window start") <= hour < _aware_utc(w.end, "window end")
    ]
    return max(counts) if counts else None


def _positive_int(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"annotation {what} is {text!r}, not an integer >= 1; fix it or remove it "
            "(without it the live minReplicas is taken as the floor)"
        )
    return value


def floor_from_annotations(annotations: Mapping[str, str] | None, current_min: int) -> int | None:
    """The floor recorded on the HPA, or ``None`` when none is (the live value is the floor).

    When :data:`SET_ANNOTATION` differs from the live ``minReplicas``, a person changed it after
    our last write: the live value is the new floor (see the module doc). A malformed annotation
    is refused (``ValueError``): guessing could pin the floor at one of our raised values.
    """
    annotations = annotations or {}
    floor = _positive_int(annotations.get(FLOOR_ANNOTATION), FLOOR_ANNOTATION)
    if floor is None:
        return None
    last_set = _positive_int(annotations.get(SET_ANNOTATION), SET_ANNOTATION)
    if last_set is not None and last_set != current_min:
        return current_min
    return floor


class HpaChange(BaseModel):
    """What one run does to one HPA's ``minReplicas``, and why, in one sentence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(description="Namespace of the HPA.")
    name: str = Field(description="Name of the HPA.")
    floor: int = Field(description="The human-set minimum: never gone below.")
    max_replicas: int = Field(description="The HPA's maxReplicas: never gone above.")
    planned: int | None = Field(description="Instances planned for this hour; empty: no plan.")
    before: int = Field(description="minReplicas before this run.")
    after: int = Field(description="minReplicas after this run.")
    note: str = Field(description="One sentence: what changed and why.")

    @property
    def changed(self) -> bool:
        return self.after != self.before

    @property
    def annotations(self) -> dict[str, str]:
        """The annotations written with the change: the floor and the value we set."""
        return {FLOOR_ANNOTATION: str(self.floor), SET_ANNOTATION: str(self.after)}


def hpa_change(
    namespace: str,
    name: str,
    *,
    current_min: int,
    max_replicas: int,
    floor: int | None,
    planned: int | None,
    hour: datetime,
) -> HpaChange:
    """The ``minReplicas`` for ``planned`` at ``hour``: ``max(planned, floor)`` capped at
    ``max_replicas``; the floor itself when there is no plan. ``floor=None`` (never recorded):
    ``current_min`` is the floor."""
    if current_min < 0 or max_replicas < 1:
        raise ValueError(
            f"HPA {namespace}/{name} has minReplicas {current_min} and maxReplicas "
            f"{max_replicas}; expected minReplicas >= 0 and maxReplicas >= 1"
        )
    if planned is not None and planned < 0:
        raise ValueError(f"planned instances must be >= 0, got {planned}")
    at = f"{_hour_of(hour, 'hour'):%H:00} UTC"
    floor = current_min if floor is None else floor
    if planned is None:
        wanted = floor
        reason = f"no plan for this hour ({at})"
    else:
        wanted = max(planned, floor)
        reason = f"the {at} plan"
        if planned != wanted or planned > max_replicas:
            reason += f" of {planned}"
        if planned < floor:
            reason += f", held at the floor {floor}"
    after = min(wanted, max_replicas)
    capped = f" (clamped to maxReplicas {max_replicas})" if after < wanted else ""
    if after == current_min:
        where = "at the floor" if planned is None and after == floor else "at"
        note = f"unchanged {where} {after}: {reason}{capped}"
    elif planned is None:
        note = f"{reason}: back to the floor {floor}{capped}"
    else:
        verb = "raised" if after > current_min else "lowered"
        note = f"{verb} {current_min} -> {after} for {reason}{capped}"
    return HpaChange(
        namespace=namespace,
        name=name,
        floor=floor,
        max_replicas=max_replicas,
        planned=planned,
        before=current_min,
        after=after,
        note=note,
    )


# -- KEDA ------------------------------------------------------------------------------------


def _trigger(n: int, start: str, end: str, replicas: int) -> dict[str, Any]:
    return {
        "type": "cron",
        "name": f"{CRON_TRIGGER_PREFIX}{n}",
        "metadata": {
            "timezone": KEDA_TIMEZONE,
            "start": start,
            "end": end,
            "desiredReplicas": str(replicas),
        },
    }


def _pinned(when: datetime) -> str:
    """Cron for one date and hour (UTC): ``0 9 14 3 *`` is 14 March 09:00."""
    return f"0 {when.hour} {when.day} {when.month} *"


def _daily_runs(windows: Sequence[ScheduleWindow]) -> list[tuple[int, int, int]] | None:
    """(start hour, end hour, instances) runs of one day when the plan repeats daily, else None.

    The runs are cyclic (22 -> 2 crosses midnight); a constant day is one run ``(h, h, n)``.
    """
    actions = scheduled_actions(windows)
    if not actions or actions[0].recurrence is None:
        return None
    points = sorted((a.start.hour, a.instances) for a in actions)
    return [
        (hour, points[(i + 1) % len(points)][0], count) for i, (hour, count) in enumerate(points)
    ]


def keda_cron_triggers(
    windows: Sequence[ScheduleWindow], *, floor: int, max_replicas: int | None = None
) -> tuple[dict[str, Any], ...]:
    """KEDA ``cron`` triggers enacting ``windows`` above ``floor`` (see the module doc).

    Daily recurrences when the plan repeats daily, else one date-pinned trigger per window.
    ``desiredReplicas`` is capped at ``max_replicas`` when given; a window whose count (capped)
    is not above ``floor`` gets no trigger.
    """
    checked = []
    for w in windows:
        start, end = _aware_utc(w.start, "window start"), _aware_utc(w.end, "window end")
        if start != _hour_of(start, "window start") or end != _hour_of(end, "window end"):
            raise ValueError(
                f"windows must start and end on the hour, got {start.isoformat()} - "
                f"{end.isoformat()}"
            )
        if not start < end < start + _YEAR:
            raise ValueError(
                f"a window must end after it starts and last less than a year, "
                f"got {start.isoformat()} - {end.isoformat()}"
            )
        checked.append(ScheduleWindow(start=start, end=end, instances=w.instances))

    def replicas(count: int) -> int:
        return count if max_replicas is None else min(count, max_replicas)

    spans: list[tuple[str, str, int]] = []
    runs = _daily_runs(checked)
    if runs is not None:
        for start_hour, end_hour, count in runs:
            if start_hour == end_hour:  # a constant day: start and end may not be equal
                half = (start_hour + 12) % 24
                spans.append((f"0 {start_hour} * * *", f"0 {half} * * *", count))
                spans.append((f"0 {half} * * *", f"0 {end_hour} * * *", count))
            else:
                spans.append((f"0 {start_hour} * * *", f"0 {end_hour} * * *", count))
    else:
        for w in sorted(checked, key=lambda w: w.start):
            spans.append((_pinned(w.start), _pinned(w.end), w.instances))
    kept = [(start, end, replicas(count)) for start, end, count in spans]
    kept = [span for span in kept if span[2] > floor]
    return tuple(_trigger(n, start, end, count) for n, (start, end, count) in enumerate(kept))


def is_ours(trigger: Mapping[str, Any]) -> bool:
    """True for a trigger this runbook wrote (named with :data:`CRON_TRIGGER_PREFIX`)."""
    return str(trigger.get("name") or "").startswith(CRON_TRIGGER_PREFIX)


def merge_cron_triggers(
    existing: Sequence[Mapping[str, Any]], ours: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Everyone else's triggers, in their order, then ``ours``: our previous ones are replaced."""
    return [copy.deepcopy(dict(t)) for t in existing if not is_ours(t)] + [
        copy.deepcopy(dict(t)) for t in ours
    ]


class KedaChange(BaseModel):
    """What one run does to one ScaledObject's schedule triggers, and a sentence saying so.

    ``before`` and ``after`` are our cron triggers only; ``others`` are everyone else's, kept
    as they are. The ScaledObject's ``spec.triggers`` after the run is :attr:`triggers`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(description="Namespace of the ScaledObject.")
    name: str = Field(description="Name of the ScaledObject.")
    floor: int = Field(description="Its minReplicaCount: windows at or below get no trigger.")
    before: tuple[dict[str, Any], ...] = Field(description="Our cron triggers before this run.")
    after: tuple[dict[str, Any], ...] = Field(description="Our cron triggers after this run.")
    others: tuple[dict[str, Any], ...] = Field(
        default=(), description="The ScaledObject's other triggers, kept in their order."
    )
    note: str = Field(description="One sentence: what changed.")

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def triggers(self) -> list[dict[str, Any]]:
        """``spec.triggers`` after this run: the others, then ours."""
        return merge_cron_triggers(self.others, self.after)


def keda_change(
    namespace: str,
    name: str,
    *,
    existing: Sequence[Mapping[str, Any]],
    ours: Sequence[Mapping[str, Any]],
    floor: int,
) -> KedaChange:
    """The change from the ScaledObject's ``existing`` triggers to ``ours``, with the sentence
    for the report. Only our triggers are compared: the others are never touched."""
    before = tuple(copy.deepcopy(dict(t)) for t in existing if is_ours(t))
    after = tuple(copy.deepcopy(dict(t)) for t in ours)
    others = tuple(copy.deepcopy(dict(t)) for t in existing if not is_ours(t))
    kept = f"{len(others)} other trigger(s) kept"
    if before == after:
        note = f"unchanged: {len(after)} schedule trigger(s), {kept}"
    elif not after:
        note = (
            f"removed {len(before)} schedule trigger(s): no window above the floor {floor}; {kept}"
        )
    else:
        note = f"wrote {len(after)} schedule trigger(s) (there were {len(before)}), {kept}"
    return KedaChange(
        namespace=namespace,
        name=name,
        floor=floor,
        before=before,
        after=after,
        others=others,
        note=note,
    )
