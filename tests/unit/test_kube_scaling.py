"""The Kubernetes side of apply-scaling, pure: the hour's planned minimum, the HPA minReplicas
decision (raise, lower, clamp, floor, no plan, first run, a person's edit), KEDA cron triggers
(pinned windows, midnight, daily recurrences, floor and ceiling) and the merge that keeps
everyone else's triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from decisions.kube_scaling import (
    CRON_TRIGGER_PREFIX,
    FLOOR_ANNOTATION,
    SET_ANNOTATION,
    floor_from_annotations,
    hpa_change,
    keda_change,
    keda_cron_triggers,
    merge_cron_triggers,
    planned_minimum,
)
from decisions.scaling import ScheduleWindow, compress_schedule

T0 = datetime(2026, 3, 14, 9, tzinfo=UTC)
H = timedelta(hours=1)


def window(start: datetime, hours: int, instances: int) -> ScheduleWindow:
    return ScheduleWindow(start=start, end=start + hours * H, instances=instances)


SCHEDULE = (window(T0, 1, 6), window(T0 + H, 2, 4))


# -- planned_minimum --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0 - timedelta(seconds=1), None),  # before the plan
        (T0, 6),
        (T0 + timedelta(minutes=59, seconds=59), 6),
        (T0 + H, 4),  # the first window's end is exclusive
        (T0 + 2 * H + timedelta(minutes=30), 4),
        (T0 + 3 * H, None),  # the plan ran out
        (datetime(2026, 3, 14, 10, 15, tzinfo=timezone(timedelta(hours=1))), 6),  # 09:15 UTC
    ],
)
def test_planned_minimum(now: datetime, expected: int | None) -> None:
    assert planned_minimum(SCHEDULE, now) == expected


def test_planned_minimum_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        planned_minimum(SCHEDULE, datetime(2026, 3, 14, 9))


def test_planned_minimum_of_a_gap_is_none() -> None:
    gappy = compress_schedule({T0: 3, T0 + 2 * H: 3})
    assert planned_minimum(gappy, T0 + H) is None
    assert planned_minimum((), T0) is None


# -- hpa_change -------------------------------------------------------------------------------


def change(current: int, *, floor: int | None = 2, planned: int | None, max_replicas: int = 10):
    return hpa_change(
        "shop",
        "checkout",
        current_min=current,
        max_replicas=max_replicas,
        floor=floor,
        planned=planned,
        hour=T0 + timedelta(minutes=12),
    )


def test_raise_for_the_plan() -> None:
    c = change(2, planned=6)
    assert (c.before, c.after, c.floor, c.changed) == (2, 6, 2, True)
    assert c.note == "raised 2 -> 6 for the 09:00 UTC plan"
    assert c.annotations == {FLOOR_ANNOTATION: "2", SET_ANNOTATION: "6"}


def test_lower_for_the_plan() -> None:
    c = change(6, planned=4)
    assert (c.after, c.changed) == (4, True)
    assert c.note == "lowered 6 -> 4 for the 09:00 UTC plan"


def test_clamped_to_max_replicas() -> None:
    c = change(2, planned=14)
    assert c.after == 10
    assert c.note == "raised 2 -> 10 for the 09:00 UTC plan of 14 (clamped to maxReplicas 10)"


def test_never_below_the_floor() -> None:
    c = change(6, floor=3, planned=1)
    assert (c.after, c.floor) == (3, 3)
    assert c.note == "lowered 6 -> 3 for the 09:00 UTC plan of 1, held at the floor 3"
    assert change(3, floor=3, planned=0).changed is False


def test_no_plan_goes_back_to_the_floor() -> None:
    c = change(6, planned=None)
    assert (c.after, c.planned) == (2, None)
    assert c.note == "no plan for this hour (09:00 UTC): back to the floor 2"
    again = change(2, planned=None)
    assert not again.changed
    assert again.note == "unchanged at the floor 2: no plan for this hour (09:00 UTC)"


def test_first_run_takes_the_live_minimum_as_the_floor() -> None:
    c = change(3, floor=None, planned=6)
    assert (c.floor, c.after) == (3, 6)
    assert c.annotations[FLOOR_ANNOTATION] == "3"  # recorded with the first change
    assert change(3, floor=None, planned=1).after == 3


def test_unchanged() -> None:
    c = change(6, planned=6)
    assert not c.changed
    assert c.note == "unchanged at 6: the 09:00 UTC plan"


def test_a_floor_above_a_lowered_max_is_capped() -> None:
    c = change(4, floor=4, planned=None, max_replicas=3)
    assert c.after == 3
    assert c.note.endswith("(clamped to maxReplicas 3)")


def test_hpa_change_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        hpa_change(
            "a", "b", current_min=1, max_replicas=2, floor=1, planned=1, hour=datetime(2026, 1, 1)
        )
    with pytest.raises(ValueError, match="planned instances must be >= 0"):
        change(2, planned=-1)


# -- floor_from_annotations ------------------------------------------------------------------


def test_floor_from_annotations() -> None:
    assert floor_from_annotations(None, 2) is None
    assert floor_from_annotations({}, 2) is None
    ours = {FLOOR_ANNOTATION: "2", SET_ANNOTATION: "6"}
    assert floor_from_annotations(ours, 6) == 2  # live is what we set: the recorded floor
    assert floor_from_annotations(ours, 3) == 3  # a person changed it: theirs is the floor
    assert floor_from_annotations({FLOOR_ANNOTATION: "2"}, 5) == 2
    with pytest.raises(ValueError, match=f"annotation {FLOOR_ANNOTATION} is 'two'"):
        floor_from_annotations({FLOOR_ANNOTATION: "two"}, 2)
    with pytest.raises(ValueError, match=SET_ANNOTATION):
        floor_from_annotations({FLOOR_ANNOTATION: "2", SET_ANNOTATION: "0"}, 2)


# -- keda_cron_triggers -----------------------------------------------------------------------


def meta(trigger: dict) -> tuple[str, str, str]:
    m = trigger["metadata"]
    return m["start"], m["end"], m["desiredReplicas"]


def test_one_pinned_trigger_per_window_above_the_floor() -> None:
    triggers = keda_cron_triggers(
        (window(T0 - H, 1, 1), window(T0, 1, 6), window(T0 + H, 2, 4)), floor=1
    )
    assert [t["name"] for t in triggers] == [f"{CRON_TRIGGER_PREFIX}0", f"{CRON_TRIGGER_PREFIX}1"]
    assert triggers[0] == {
        "type": "cron",
        "name": "runbooks-schedule-0",
        "metadata": {
            "timezone": "Etc/UTC",
            "start": "0 9 14 3 *",
            "end": "0 10 14 3 *",
            "desiredReplicas": "6",
        },
    }
    assert meta(triggers[1]) == ("0 10 14 3 *", "0 12 14 3 *", "4")


def test_windows_crossing_midnight_and_longer_than_a_day_are_one_trigger() -> None:
    night = datetime(2026, 12, 31, 22, tzinfo=UTC)
    triggers = keda_cron_triggers((window(night, 5, 3), window(night + 5 * H, 30, 8)), floor=2)
    # KEDA's cron scaler is active while the next end comes before the next start
    assert [meta(t) for t in triggers] == [
        ("0 22 31 12 *", "0 3 1 1 *", "3"),
        ("0 3 1 1 *", "0 9 2 1 *", "8"),
    ]


def test_none_above_the_floor_gives_no_trigger() -> None:
    assert keda_cron_triggers(SCHEDULE, floor=6) == ()
    assert keda_cron_triggers((), floor=0) == ()


def test_desired_replicas_are_capped_at_max_replicas() -> None:
    triggers = keda_cron_triggers(SCHEDULE, floor=1, max_replicas=5)
    assert [meta(t)[2] for t in triggers] == ["5", "4"]
    assert keda_cron_triggers(SCHEDULE, floor=5, max_replicas=5) == ()


def test_a_plan_that_repeats_daily_becomes_daily_recurrences() -> None:
    midnight = datetime(2026, 3, 14, tzinfo=UTC)
    day = {h: 2 for h in range(24)} | {h: 6 for h in range(9, 12)} | {22: 4, 23: 4, 0: 4, 1: 4}
    hours = {midnight + i * H: day[i % 24] for i in range(48)}
    triggers = keda_cron_triggers(compress_schedule(hours), floor=2)
    assert [meta(t) for t in triggers] == [
        ("0 9 * * *", "0 12 * * *", "6"),
        ("0 22 * * *", "0 2 * * *", "4"),  # crosses midnight: no split needed
    ]


def test_a_constant_daily_plan_is_two_half_days() -> None:
    start = datetime(2026, 3, 14, 5, tzinfo=UTC)
    triggers = keda_cron_triggers((window(start, 48, 3),), floor=1)
    assert [meta(t) for t in triggers] == [
        ("0 5 * * *", "0 17 * * *", "3"),
        ("0 17 * * *", "0 5 * * *", "3"),
    ]


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        keda_cron_triggers((ScheduleWindow(start=T0, end=T0, instances=3),), floor=0)
    with pytest.raises(ValueError, match="on the hour"):
        keda_cron_triggers((window(T0 + timedelta(minutes=5), 1, 3),), floor=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        keda_cron_triggers((window(datetime(2026, 1, 1), 1, 3),), floor=0)


# -- merge ------------------------------------------------------------------------------------

CPU = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}
QUEUE = {"type": "rabbitmq", "name": "queue", "metadata": {"queueName": "orders"}}


def test_merge_keeps_foreign_triggers_in_order_and_replaces_ours() -> None:
    old = keda_cron_triggers(SCHEDULE, floor=1)
    new = keda_cron_triggers((window(T0, 3, 9),), floor=1)
    merged = merge_cron_triggers([CPU, old[0], QUEUE, old[1]], new)
    assert merged == [CPU, QUEUE, *new]
    assert merge_cron_triggers(merged, new) == merged  # idempotent
    assert merge_cron_triggers([CPU, *old], []) == [CPU]


def test_keda_change_reports_what_changed() -> None:
    ours = keda_cron_triggers(SCHEDULE, floor=1)
    first = keda_change("shop", "checkout", existing=[CPU], ours=ours, floor=1)
    assert first.changed
    assert (first.before, first.after, first.others) == ((), ours, (CPU,))
    assert first.triggers == [CPU, *ours]
    assert first.note == "wrote 2 schedule trigger(s) (there were 0), 1 other trigger(s) kept"
    again = keda_change("shop", "checkout", existing=first.triggers, ours=ours, floor=1)
    assert not again.changed
    assert again.note == "unchanged: 2 schedule trigger(s), 1 other trigger(s) kept"
    gone = keda_change("shop", "checkout", existing=first.triggers, ours=(), floor=1)
    assert gone.changed
    assert gone.triggers == [CPU]
    assert gone.note.startswith("removed 2 schedule trigger(s): no window above the floor 1")
