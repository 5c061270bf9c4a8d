"""The plan as Auto Scaling scheduled actions: deterministic names, and the diff against a group
(create / update / delete / unchanged, others' actions untouched, past one-offs dropped, the
start time of a recurring action ignored), the table for the artifact, the MaxSize refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from decisions.asg_schedule import (
    ACTION_PREFIX,
    AsgAction,
    AsgScheduleDiff,
    action_name,
    diff_asg_actions,
    max_size_refusal,
    planned_asg_actions,
)
from decisions.scaling import ScheduledAction, compress_schedule, scheduled_actions

NOW = datetime(2026, 12, 1, 2, tzinfo=UTC)
GROUP = "shop-web"


def daily(hour: int, size: int, *, start: datetime | None = None) -> AsgAction:
    return AsgAction(
        name=f"{ACTION_PREFIX}daily-{hour:02d}00",
        recurrence=f"0 {hour} * * *",
        start=start,
        min_size=size,
    )


def once(start: datetime, size: int) -> AsgAction:
    return AsgAction(
        name=f"{ACTION_PREFIX}at-{start:%Y%m%dT%H%M}Z", recurrence=None, start=start, min_size=size
    )


def test_names_are_derived_from_the_schedule_alone() -> None:
    recurring = ScheduledAction(start=NOW + timedelta(hours=7), recurrence="0 9 * * *", instances=4)
    one_off = ScheduledAction(
        start=datetime(2026, 12, 1, 10, tzinfo=timezone(timedelta(hours=1))),
        recurrence=None,
        instances=2,
    )
    assert action_name(recurring) == "runbooks-load-forecast-daily-0900"
    assert action_name(one_off) == "runbooks-load-forecast-at-20261201T0900Z"  # in UTC


def test_planned_actions_from_a_daily_plan_carry_no_start() -> None:
    hours = {
        NOW + timedelta(hours=i): (5 if (NOW + timedelta(hours=i)).hour >= 9 else 2)
        for i in range(48)
    }
    planned = planned_asg_actions(scheduled_actions(compress_schedule(hours)))
    assert [(a.name, a.recurrence, a.start, a.min_size) for a in planned] == [
        (f"{ACTION_PREFIX}daily-0000", "0 0 * * *", None, 2),
        (f"{ACTION_PREFIX}daily-0900", "0 9 * * *", None, 5),
    ]
    # the same plan a night later names the same actions
    later = {h + timedelta(days=1): n for h, n in hours.items()}
    assert planned_asg_actions(scheduled_actions(compress_schedule(later))) == planned


def test_planned_one_offs_keep_their_start_in_utc_and_sort_chronologically() -> None:
    actions = [
        ScheduledAction(start=NOW + timedelta(hours=5), recurrence=None, instances=3),
        ScheduledAction(start=NOW + timedelta(hours=1), recurrence=None, instances=1),
    ]
    planned = planned_asg_actions(actions)
    assert [a.start for a in planned] == [NOW + timedelta(hours=1), NOW + timedelta(hours=5)]
    assert all(a.recurrence is None for a in planned)


def test_a_plan_naming_one_time_twice_or_a_non_daily_cron_is_refused() -> None:
    twice = [
        ScheduledAction(start=NOW, recurrence="0 9 * * *", instances=1),
        ScheduledAction(start=NOW + timedelta(days=1), recurrence="0 9 * * *", instances=2),
    ]
    with pytest.raises(ValueError, match="both named 'runbooks-load-forecast-daily-0900'"):
        planned_asg_actions(twice)
    with pytest.raises(ValueError, match="only daily recurrences"):
        planned_asg_actions([ScheduledAction(start=NOW, recurrence="0 9 * * 1-5", instances=1)])


def test_an_action_needs_a_recurrence_or_a_timezone_aware_start() -> None:
    with pytest.raises(ValidationError, match="needs a recurrence or a start"):
        AsgAction(name="x", recurrence=None, start=None, min_size=1)
    with pytest.raises(ValidationError, match="timezone-aware"):
        AsgAction(name="x", recurrence=None, start=datetime(2026, 12, 1), min_size=1)
    with pytest.raises(ValidationError):
        AsgAction(name="x", recurrence="0 9 * * *", start=None, min_size=-1)
    with pytest.raises(ValidationError):
        daily(9, 1).min_size = 2  # type: ignore[misc]  # frozen


def test_diff_sorts_every_action_of_ours_into_one_change() -> None:
    current = [daily(0, 2), daily(9, 5), daily(18, 3)]
    planned = [daily(0, 2), daily(9, 6), daily(12, 4)]
    diff = diff_asg_actions(GROUP, current, planned, now=NOW)
    assert [a.name for a in diff.create] == [f"{ACTION_PREFIX}daily-1200"]
    assert [(a.name, a.min_size) for a in diff.update] == [(f"{ACTION_PREFIX}daily-0900", 6)]
    assert diff.delete == (f"{ACTION_PREFIX}daily-1800",)
    assert diff.unchanged == (f"{ACTION_PREFIX}daily-0000",)
    assert diff.changed
    assert [a.name for a in diff.puts] == [
        f"{ACTION_PREFIX}daily-1200",
        f"{ACTION_PREFIX}daily-0900",
    ]


def test_the_same_plan_again_changes_nothing() -> None:
    planned = [daily(0, 2), daily(9, 5)]
    diff = diff_asg_actions(GROUP, planned, planned, now=NOW)
    assert not diff.changed
    assert diff.unchanged == tuple(a.name for a in planned)


def test_others_actions_are_never_updated_or_deleted() -> None:
    human = AsgAction(
        name="black-friday", recurrence=None, start=NOW + timedelta(days=3), min_size=40
    )
    diff = diff_asg_actions(GROUP, [human, daily(9, 5)], [daily(9, 5)], now=NOW)
    assert not diff.changed
    assert "black-friday" not in diff.delete + diff.unchanged
    assert diff.current == (daily(9, 5),)


def test_a_planned_action_must_be_ours() -> None:
    foreign = AsgAction(name="mine", recurrence="0 9 * * *", start=None, min_size=1)
    with pytest.raises(ValueError, match="must start with 'runbooks-load-forecast-'"):
        diff_asg_actions(GROUP, [], [foreign], now=NOW)
    with pytest.raises(ValueError, match="more than once"):
        diff_asg_actions(GROUP, [], [daily(9, 1), daily(9, 2)], now=NOW)


def test_the_start_time_aws_reports_for_a_recurring_action_is_ignored() -> None:
    reported = daily(9, 5, start=datetime(2026, 12, 1, 9, tzinfo=UTC))
    diff = diff_asg_actions(GROUP, [reported], [daily(9, 5)], now=NOW)
    assert not diff.changed
    # but its size is compared
    assert diff_asg_actions(GROUP, [reported], [daily(9, 6)], now=NOW).update == (daily(9, 6),)


def test_one_offs_compare_on_start_and_size() -> None:
    at = NOW + timedelta(hours=3)
    assert not diff_asg_actions(GROUP, [once(at, 3)], [once(at, 3)], now=NOW).changed
    assert diff_asg_actions(GROUP, [once(at, 3)], [once(at, 4)], now=NOW).update == (once(at, 4),)
    # a one-off of ours that was edited into a recurrence is put back
    edited = AsgAction(name=once(at, 3).name, recurrence="0 5 * * *", start=at, min_size=3)
    assert diff_asg_actions(GROUP, [edited], [once(at, 3)], now=NOW).update == (once(at, 3),)


def test_planned_one_offs_at_or_before_now_are_dropped_with_a_note() -> None:
    past, present, future = NOW - timedelta(hours=1), NOW, NOW + timedelta(hours=1)
    diff = diff_asg_actions(
        GROUP, [once(past, 1)], [once(past, 1), once(present, 2), once(future, 3)], now=NOW
    )
    assert diff.create == (once(future, 3),)
    assert [a.start for a in diff.dropped] == [past, present]
    # the one that already ran is no longer planned: it is deleted (AWS removes run ones anyway)
    assert diff.delete == (once(past, 1).name,)
    assert len(diff.notes) == 2
    assert "AWS refuses past start times" in diff.notes[0]


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        diff_asg_actions(GROUP, [], [], now=datetime(2026, 12, 1))


def test_table_rows_show_each_action_with_old_and_new_sizes() -> None:
    at = NOW + timedelta(hours=30)
    diff = diff_asg_actions(
        GROUP,
        [daily(0, 2), daily(9, 5), daily(18, 3)],
        [daily(0, 2), daily(9, 6), once(at, 7), once(NOW, 1)],
        now=NOW,
    )
    rows = {row["action"]: row for row in diff.table_rows()}
    assert rows[f"{ACTION_PREFIX}daily-0900"] == {
        "action": f"{ACTION_PREFIX}daily-0900",
        "change": "update",
        "recurrence / start": "daily at 09:00 UTC",
        "min size": "5 -> 6",
    }
    assert rows[f"{ACTION_PREFIX}daily-1800"]["change"] == "delete"
    assert rows[f"{ACTION_PREFIX}daily-1800"]["min size"] == "3 -> (none)"
    assert rows[f"{ACTION_PREFIX}daily-0000"]["change"] == "unchanged"
    assert rows[once(at, 7).name]["recurrence / start"] == "2026-12-02 08:00 UTC"
    assert rows[once(at, 7).name]["change"] == "create"
    assert rows[once(NOW, 1).name]["change"] == "dropped (start passed)"
    assert list(rows) == sorted(rows)


def test_diff_is_frozen_and_round_trips_as_json() -> None:
    diff = diff_asg_actions(GROUP, [daily(9, 5)], [daily(9, 6)], now=NOW)
    assert AsgScheduleDiff.model_validate_json(diff.model_dump_json()) == diff
    with pytest.raises(ValidationError):
        diff.group = "other"  # type: ignore[misc]


def test_a_planned_size_above_max_size_is_refused_naming_group_hour_and_max() -> None:
    planned = [daily(0, 2), daily(9, 12), once(datetime(2026, 12, 2, 18, tzinfo=UTC), 11)]
    refusal = max_size_refusal(GROUP, planned, 10)
    assert refusal is not None
    assert refusal.startswith(f"group {GROUP}: the plan sets MinSize 12 daily at 09:00 UTC, ")
    assert "MinSize 11 at 2026-12-02 18:00 UTC" in refusal
    assert "MaxSize 10" in refusal
    assert max_size_refusal(GROUP, planned, 12) is None
    many = [daily(h, 20) for h in range(5)]
    assert "and 2 more" in (max_size_refusal(GROUP, many, 10) or "")
