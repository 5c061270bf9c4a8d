"""The Auto Scaling tasks on the sandbox's moto server (EC2 Auto Scaling over its wire protocol).

Each test makes its own launch template and group and removes them after. The tasks' block
points at a small loopback proxy in front of moto (:class:`RecordingProxy`) that records every
request's ``Action`` (so "a second run writes nothing" is checked on the wire) and, when told,
answers one request of a kind with an AWS error instead of forwarding it.

Tasks are called with ``.fn()`` (no Prefect engine); ``test_apply_runs_as_a_prefect_task`` runs
the task inside a flow against the session's ``prefect_server``.

moto keys scheduled actions by name per region, not per group (AWS scopes them per group), so
the tests use a region of their own and delete their group's actions after each test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

import pytest
from loopback_proxy import LoopbackProxy

from blocks.aws import AwsTarget
from decisions.asg_schedule import ACTION_PREFIX
from decisions.scaling import ScheduledAction, compress_schedule, scheduled_actions
from runbooks.errors import InvalidRequestError, UnavailableError
from sandbox.showcase import create_auto_scaling_group
from tasks.autoscaling import (
    AsgGroup,
    apply_asg_schedule,
    describe_group,
    list_scheduled_actions,
)

REGION = "eu-north-1"
WRITES = frozenset(
    {
        "PutScheduledUpdateGroupAction",
        "BatchPutScheduledUpdateGroupAction",
        "DeleteScheduledAction",
        "BatchDeleteScheduledAction",
    }
)
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Fault:
    """For one request of ``action`` (after ``skip`` of them): answer ``status`` with an AWS
    error ``code``, or, when ``status`` is None, call ``before`` and then forward it."""

    action: str  # the AWS Action, e.g. PutScheduledUpdateGroupAction
    status: int | None = None
    code: str = ""
    skip: int = 0
    before: Callable[[], None] | None = None


class RecordingProxy(LoopbackProxy):
    """Records each request's (Action, ScheduledActionName); answers or hooks per ``faults``."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Fault] = []

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] in WRITES]

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        form = parse_qs(body.decode())
        action = form.get("Action", [""])[0]
        self.requests.append((action, form.get("ScheduledActionName", [""])[0]))
        fault = next((f for f in self.faults if f.action == action), None)
        if fault is not None and fault.skip > 0:
            fault.skip -= 1
        elif fault is not None and fault.status is None:
            self.faults.remove(fault)
            assert fault.before is not None
            fault.before()
        elif fault is not None:
            self.faults.remove(fault)
            error = (
                '<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
                f"<Error><Type>Sender</Type><Code>{fault.code}</Code>"
                f"<Message>injected by the test</Message></Error>"
                "<RequestId>proxy</RequestId></ErrorResponse>"
            )
            return self.reply(request, fault.status, error.encode())
        return self.reply(request, *self.forward(request, body))


@dataclass
class Group:
    name: str
    client: Any  # boto3 autoscaling client straight to moto, for setup and checks
    aws: AwsTarget  # through the proxy
    proxy: RecordingProxy

    def actions(self) -> dict[str, dict[str, Any]]:
        """Every scheduled action on the group, by name, without the group name."""
        found = self.client.describe_scheduled_actions(AutoScalingGroupName=self.name)
        return {
            a["ScheduledActionName"]: {
                k: v
                for k, v in a.items()
                if k not in ("AutoScalingGroupName", "ScheduledActionName")
            }
            for a in found["ScheduledUpdateGroupActions"]
        }

    def apply(self, actions: tuple[ScheduledAction, ...], *, dry_run: bool = False) -> Any:
        return apply_asg_schedule.fn(self.aws, self.name, actions, now=NOW, dry_run=dry_run)


def _target(endpoint: str) -> AwsTarget:
    return AwsTarget(
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=endpoint,
        max_attempts=1,  # an injected fault answers once; botocore retries would sleep
    )


@pytest.fixture
def group(sandbox: Any) -> Iterator[Group]:
    import boto3

    moto = sandbox.endpoints["moto"]
    options: dict[str, Any] = {
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "endpoint_url": moto,
    }
    ec2, client = boto3.client("ec2", **options), boto3.client("autoscaling", **options)
    group_name = f"asg-{uuid.uuid4().hex[:8]}"
    create_auto_scaling_group(ec2, client, group_name, region=REGION, min_size=0, max_size=10)
    proxy = RecordingProxy(moto)
    try:
        yield Group(group_name, client, _target(proxy.url), proxy)
    finally:
        proxy.close()
        for action in client.describe_scheduled_actions(AutoScalingGroupName=group_name)[
            "ScheduledUpdateGroupActions"
        ]:
            client.delete_scheduled_action(
                AutoScalingGroupName=group_name, ScheduledActionName=action["ScheduledActionName"]
            )
        client.delete_auto_scaling_group(AutoScalingGroupName=group_name, ForceDelete=True)
        ec2.delete_launch_template(LaunchTemplateName=group_name)


def daily_plan(sizes: dict[int, int], default: int = 2) -> tuple[ScheduledAction, ...]:
    """Actions of a 48 h plan repeating daily: ``sizes[hour of day]`` or ``default``."""
    hours = [NOW + timedelta(hours=i + 1) for i in range(48)]
    actions = scheduled_actions(compress_schedule({h: sizes.get(h.hour, default) for h in hours}))
    assert all(a.recurrence is not None for a in actions)
    return actions


def one_off_plan(*sizes: int) -> tuple[ScheduledAction, ...]:
    """Actions of a plan that does not repeat: one window per size, 3 hours each, from NOW."""
    counts = {NOW + timedelta(hours=i): sizes[i // 3] for i in range(3 * len(sizes))}
    actions = scheduled_actions(compress_schedule(counts))
    assert all(a.recurrence is None for a in actions)
    return actions


def name(suffix: str) -> str:
    return f"{ACTION_PREFIX}{suffix}"


def test_describe_group_reads_the_sizes(group: Group) -> None:
    assert describe_group.fn(group.aws, group.name) == AsgGroup(
        name=group.name, min_size=0, max_size=10, desired=0
    )


def test_an_unknown_group_is_a_clear_error(group: Group) -> None:
    with pytest.raises(InvalidRequestError, match=f"'no-such-group' does not exist in {REGION}"):
        describe_group.fn(group.aws, "no-such-group")
    with pytest.raises(InvalidRequestError, match="'no-such-group' does not exist"):
        apply_asg_schedule.fn(group.aws, "no-such-group", daily_plan({}), now=NOW, dry_run=False)
    assert group.proxy.writes == []


def test_a_self_contradicting_plan_or_naive_now_is_refused_before_any_call(group: Group) -> None:
    twice = (
        ScheduledAction(start=NOW, recurrence="0 9 * * *", instances=1),
        ScheduledAction(start=NOW, recurrence="0 9 * * *", instances=2),
    )
    with pytest.raises(InvalidRequestError, match=f"group {group.name}: two planned actions"):
        group.apply(twice)
    with pytest.raises(InvalidRequestError, match="now must be timezone-aware"):
        apply_asg_schedule.fn(
            group.aws, group.name, daily_plan({}), now=NOW.replace(tzinfo=None), dry_run=True
        )
    assert group.proxy.requests == []


def test_a_daily_plan_is_written_as_planned_then_a_rerun_writes_nothing(group: Group) -> None:
    plan = daily_plan({9: 5, 10: 5, 11: 5, 18: 7})
    diff = group.apply(plan)

    expected = {
        name("daily-0900"): {"Recurrence": "0 9 * * *", "MinSize": 5},
        name("daily-1200"): {"Recurrence": "0 12 * * *", "MinSize": 2},
        name("daily-1800"): {"Recurrence": "0 18 * * *", "MinSize": 7},
        name("daily-1900"): {"Recurrence": "0 19 * * *", "MinSize": 2},
    }
    assert group.actions() == expected  # MinSize only: no MaxSize, DesiredCapacity, StartTime
    assert [a.name for a in diff.create] == sorted(expected)
    assert (diff.update, diff.delete, diff.unchanged) == ((), (), ())
    assert group.proxy.writes == [("PutScheduledUpdateGroupAction", n) for n in sorted(expected)]
    assert [a.name for a in list_scheduled_actions.fn(group.aws, group.name)] == sorted(expected)

    group.proxy.requests.clear()
    again = group.apply(plan)
    assert not again.changed
    assert again.unchanged == tuple(sorted(expected))
    assert group.proxy.writes == []
    assert group.actions() == expected


def test_a_changed_plan_updates_and_deletes_puts_first(group: Group) -> None:
    group.apply(daily_plan({9: 5, 18: 7}))
    group.proxy.requests.clear()

    diff = group.apply(daily_plan({9: 6, 20: 4}))

    assert [(a.name, a.min_size) for a in diff.create] == [
        (name("daily-2000"), 4),
        (name("daily-2100"), 2),
    ]
    assert [(a.name, a.min_size) for a in diff.update] == [(name("daily-0900"), 6)]
    assert diff.delete == (name("daily-1800"), name("daily-1900"))
    assert diff.unchanged == (name("daily-1000"),)
    assert group.actions() == {
        name("daily-0900"): {"Recurrence": "0 9 * * *", "MinSize": 6},
        name("daily-1000"): {"Recurrence": "0 10 * * *", "MinSize": 2},
        name("daily-2000"): {"Recurrence": "0 20 * * *", "MinSize": 4},
        name("daily-2100"): {"Recurrence": "0 21 * * *", "MinSize": 2},
    }
    kinds = [action for action, _ in group.proxy.writes]
    assert kinds == ["PutScheduledUpdateGroupAction"] * 3 + ["DeleteScheduledAction"] * 2
    rows = {row["action"]: row for row in diff.table_rows()}
    assert rows[name("daily-0900")]["min size"] == "5 -> 6"
    assert rows[name("daily-1800")]["change"] == "delete"


def test_one_off_actions_start_in_the_future_and_past_ones_are_dropped(group: Group) -> None:
    plan = one_off_plan(3, 6, 4)  # windows start at NOW (past: dropped), NOW+3h, NOW+6h
    diff = group.apply(plan)

    later, latest = NOW + timedelta(hours=3), NOW + timedelta(hours=6)
    assert [a.start for a in diff.dropped] == [NOW]
    assert "AWS refuses past start times" in diff.notes[0]
    actions = group.actions()
    assert {n: (a["StartTime"].astimezone(UTC), a["MinSize"]) for n, a in actions.items()} == {
        name(f"at-{later:%Y%m%dT%H%M}Z"): (later, 6),
        name(f"at-{latest:%Y%m%dT%H%M}Z"): (latest, 4),
    }
    assert all("Recurrence" not in a for a in actions.values())
    group.proxy.requests.clear()
    assert not group.apply(plan).changed
    assert group.proxy.writes == []


def test_a_dry_run_writes_nothing(group: Group) -> None:
    diff = group.apply(daily_plan({9: 5}), dry_run=True)
    assert diff.changed
    assert [a.name for a in diff.create] == [name("daily-0900"), name("daily-1000")]
    assert group.actions() == {}
    assert group.proxy.writes == []
    assert {action for action, _ in group.proxy.requests} == {
        "DescribeAutoScalingGroups",
        "DescribeScheduledActions",
    }


def test_a_humans_action_is_kept(group: Group) -> None:
    sale = {"StartTime": NOW + timedelta(days=5), "MinSize": 8, "MaxSize": 10}
    group.client.put_scheduled_update_group_action(
        AutoScalingGroupName=group.name, ScheduledActionName="black-friday", **sale
    )
    group.apply(daily_plan({9: 5}))
    diff = group.apply(daily_plan({}, default=3))  # a constant day: one action at the first hour

    assert "black-friday" not in diff.delete + diff.unchanged
    first = (NOW + timedelta(hours=1)).hour
    assert group.actions() == {
        "black-friday": sale,
        name(f"daily-{first:02d}00"): {"Recurrence": f"0 {first} * * *", "MinSize": 3},
    }
    assert all(n.startswith(ACTION_PREFIX) for _, n in group.proxy.writes)


def test_a_size_above_the_groups_max_size_is_refused_before_any_change(group: Group) -> None:
    group.apply(daily_plan({9: 5}))
    before = group.actions()
    group.proxy.requests.clear()

    for dry_run in (True, False):
        with pytest.raises(InvalidRequestError) as refused:
            group.apply(daily_plan({9: 5, 18: 12}), dry_run=dry_run)
        message = str(refused.value)
        assert message.startswith(f"group {group.name}: the plan sets MinSize 12 daily at 18:00")
        assert "MaxSize 10" in message
        assert "nothing was changed" in message

    assert group.proxy.writes == []
    assert group.actions() == before


def test_a_failure_half_way_says_what_was_applied_and_what_was_not(group: Group) -> None:
    group.apply(daily_plan({9: 5, 18: 7}))
    group.proxy.faults.append(
        Fault("PutScheduledUpdateGroupAction", 400, "ValidationError", skip=1)
    )

    with pytest.raises(InvalidRequestError) as failed:
        group.apply(daily_plan({9: 6, 20: 4}))

    message = str(failed.value)
    assert "injected by the test" in message
    assert f"on group {group.name} this run applied put {name('daily-2000')} and did not " in (
        message
    )
    assert (
        f"did not apply put {name('daily-2100')}, put {name('daily-0900')}, "
        f"delete {name('daily-1800')}, delete {name('daily-1900')}; re-run" in message
    )
    # the old floor still holds where the new one was not written
    assert group.actions()[name("daily-1800")]["MinSize"] == 7

    converged = group.apply(daily_plan({9: 6, 20: 4}))
    assert [a.name for a in converged.create] == [name("daily-2100")]
    assert set(group.actions()) == {name(f"daily-{h:02d}00") for h in (9, 10, 20, 21)}


def test_a_failure_before_any_write_is_the_plain_error(group: Group) -> None:
    group.proxy.faults.append(Fault("PutScheduledUpdateGroupAction", 503, "ServiceUnavailable"))
    with pytest.raises(UnavailableError) as failed:
        group.apply(daily_plan({9: 5}))
    assert "applied" not in str(failed.value)
    assert str(failed.value).startswith(f"put scheduled action {name('daily-0900')}")


def test_a_stale_action_gone_meanwhile_counts_as_deleted(group: Group) -> None:
    group.apply(daily_plan({9: 5}))

    def runs_meanwhile() -> None:  # AWS removes a one-off after it runs; here, between list
        group.client.delete_scheduled_action(  # and delete, the same for one of ours
            AutoScalingGroupName=group.name, ScheduledActionName=name("daily-0900")
        )

    group.proxy.faults.append(Fault("DeleteScheduledAction", before=runs_meanwhile))
    diff = group.apply(daily_plan({20: 4}))  # 09:00 and 10:00 are stale; 09:00 goes first

    assert diff.delete == (name("daily-0900"), name("daily-1000"))
    assert not group.proxy.faults  # the vanishing did happen before our delete
    assert name("daily-0900") not in group.actions()


def test_apply_runs_as_a_prefect_task(group: Group, prefect_server: str) -> None:
    from prefect import flow

    @flow
    def schedule() -> Any:
        return apply_asg_schedule(group.aws, group.name, daily_plan({9: 5}), now=NOW, dry_run=False)

    diff = schedule()
    assert [a.name for a in diff.create] == [name("daily-0900"), name("daily-1000")]
    assert set(group.actions()) == {name("daily-0900"), name("daily-1000")}


def test_load_forecast_writes_the_groups_actions_and_a_rerun_changes_nothing(
    group: Group, prefect_server: str, tmp_path: Any
) -> None:
    """The acceptance of issue 6: scheduled actions exist on moto as planned; a second run of
    the flow with the same plan changes nothing (no write on the wire)."""
    from decisions.load_forecast import LoadForecastParams
    from flows.load_forecast import load_forecast
    from sandbox.demand import synthetic_demand, write_history_csv

    history = write_history_csv(
        tmp_path / "web.csv", synthetic_demand(NOW, days=21, base_rps=60, seed=11)
    )
    params = LoadForecastParams.model_validate(
        {
            "target": group.name,
            "as_of": NOW,
            "horizon_hours": 24,
            "models": ["seasonal_naive_weekly"],
            "services": [
                {
                    "name": "web",
                    "source": {"kind": "file", "path": str(history)},
                    "capacity_per_instance_rps": 20,
                    "min_instances": 1,
                    "max_instances": 10,
                    "auto_scaling_group": group.name,
                }
            ],
        }
    )
    first = load_forecast(params=params, aws=group.aws)
    assert first.ok, first.reason
    assert first.plan is not None
    outcome = first.services[0]
    assert outcome.auto_scaling is not None
    assert outcome.auto_scaling.changed
    windows = first.plan.service("web").schedule()
    # every window but the current hour's (AWS refuses a start in the past) is an action
    expected = {name(f"at-{w.start:%Y%m%dT%H%M}Z"): w.instances for w in windows if w.start > NOW}
    live = group.actions()
    assert {n: a["MinSize"] for n, a in live.items()} == expected

    writes_before = len(group.proxy.writes)
    second = load_forecast(params=params, aws=group.aws)
    assert second.services[0].auto_scaling is not None
    assert not second.services[0].auto_scaling.changed
    assert len(group.proxy.writes) == writes_before
    assert group.actions() == live
