"""Capacity plan of load-forecast: the arithmetic (ceil, utilisation, clamps, float noise), rule
selection, budgets (global by priority, per service, never below the minimum, never silent),
schedule windows and AWS recurrences, and bad input refused naming the service and field."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from decisions.scaling import (
    BusinessRule,
    CapacityPlan,
    HourForecast,
    PlanInputError,
    ScheduledAction,
    ScheduleWindow,
    ServiceScaling,
    ShortfallReason,
    compress_schedule,
    daily_recurrence,
    demand_instances,
    instances_needed,
    plan_capacity,
    scheduled_actions,
    select_multiplier,
)

T0 = datetime(2026, 12, 1, 3, tzinfo=UTC)


def svc(name: str = "checkout", **update: object) -> ServiceScaling:
    base: dict[str, object] = {
        "name": name,
        "capacity_per_instance_rps": 100.0,
        "target_utilisation": 0.5,
        "min_instances": 1,
        "max_instances": 20,
    }
    return ServiceScaling.model_validate({**base, **update})


def hours(*values: float, start: datetime = T0, **metrics: list[float]) -> list[HourForecast]:
    return [
        HourForecast(
            hour=start + timedelta(hours=i),
            value=v,
            metrics={k: series[i] for k, series in metrics.items()},
        )
        for i, v in enumerate(values)
    ]


QUEUE = BusinessRule(metric="queue_depth", comparison=">", threshold=100, multiplier=2)
PAYMENT = BusinessRule(metric="payment_ms", comparison=">", threshold=5000, multiplier=1.5)
REVENUE = BusinessRule(metric="revenue_per_min", comparison=">", threshold=10000, multiplier=1.2)


# -- arithmetic --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rps", "multiplier", "expected"),
    [
        (0.0, 1.0, 1),  # clamped up to min_instances
        (50.0, 1.0, 1),  # exactly one instance at 50 % of 100 req/s
        (50.1, 1.0, 2),  # a hair over: the next instance
        (250.0, 1.0, 5),
        (250.0, 2.0, 10),
        (250.0, 1.5, 8),  # ceil(5 x 1.5) = ceil(7.5)
        (5000.0, 1.0, 20),  # clamped down to max_instances
        (2500.0, 1.1, 20),  # 50 x 1.1 = 55 -> clamped to 20
    ],
)
def test_instances_needed(rps: float, multiplier: float, expected: int) -> None:
    assert instances_needed(rps, svc(), multiplier) == expected


def test_multiplier_is_applied_to_the_instance_count_then_ceiled() -> None:
    # ceil(ceil(120 / 50) x 1.2) = ceil(3 x 1.2) = 4, not ceil(120 / 50 x 1.2) = ceil(2.88) = 3
    assert demand_instances(120.0, svc(), 1.2) == 4


def test_float_noise_does_not_buy_an_instance() -> None:
    assert 50 * 1.1 > 55  # the noise this guards against
    assert demand_instances(2500.0, svc(), 1.1) == 55


def test_utilisation_is_headroom() -> None:
    full = svc(target_utilisation=1.0)
    assert instances_needed(300.0, full) == 3
    assert instances_needed(300.0, svc(target_utilisation=0.75)) == 4
    assert instances_needed(300.0, svc(min_instances=0), 1.0) == 6


def test_min_zero_allows_scale_to_zero() -> None:
    assert instances_needed(0.0, svc(min_instances=0)) == 0


@pytest.mark.parametrize("rps", [math.nan, -1.0, math.inf])
def test_bad_forecast_refused_naming_the_service(rps: float) -> None:
    with pytest.raises(PlanInputError, match="service 'checkout': forecast") as caught:
        instances_needed(rps, svc())
    assert caught.value.service == "checkout"


@pytest.mark.parametrize("multiplier", [0.0, -2.0, math.nan])
def test_bad_multiplier_refused(multiplier: float) -> None:
    with pytest.raises(PlanInputError, match="multiplier"):
        instances_needed(10.0, svc(), multiplier)


# -- service settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"capacity_per_instance_rps": -5.0}, "capacity_per_instance_rps"),
        ({"capacity_per_instance_rps": 0.0}, "capacity_per_instance_rps"),
        ({"capacity_per_instance_rps": math.nan}, "capacity_per_instance_rps"),
        ({"target_utilisation": 0.0}, "target_utilisation"),
        ({"target_utilisation": 1.5}, "target_utilisation"),
        ({"min_instances": -1}, "min_instances"),
        ({"min_instances": 5, "max_instances": 3}, r"max_instances \(3\) must be >= min_instances"),
        ({"instance_cost_per_hour": -0.1}, "instance_cost_per_hour"),
        ({"budget_per_hour": -1.0}, "budget_per_hour"),
    ],
)
def test_bad_settings_name_service_and_field(update: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=rf"service 'payments': {field}"):
        svc("payments", **update)


def test_every_field_has_a_description() -> None:
    for model in (ServiceScaling, BusinessRule, HourForecast, CapacityPlan, ScheduledAction):
        schema = model.model_json_schema()
        assert all("description" in f for f in schema["properties"].values()), model


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        svc().min_instances = 3  # type: ignore[misc]


def test_hour_is_utc_and_on_the_hour() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert HourForecast(hour=datetime(2026, 12, 1, 5, tzinfo=plus_two), value=1).hour == T0
    with pytest.raises(ValidationError, match="timezone-aware"):
        HourForecast(hour=datetime(2026, 12, 1, 3), value=1)
    with pytest.raises(ValidationError, match="on the hour"):
        HourForecast(hour=T0 + timedelta(minutes=30), value=1)


@pytest.mark.parametrize(
    "update",
    [{"multiplier": 0}, {"comparison": "=="}, {"threshold": math.nan}, {"metric": ""}],
)
def test_bad_rules_refused(update: dict[str, object]) -> None:
    rule = {"metric": "queue_depth", "comparison": ">", "threshold": 100, "multiplier": 2}
    with pytest.raises(ValidationError):
        BusinessRule.model_validate({**rule, **update})


# -- business rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comparison", "value", "holds"),
    [(">", 100, False), (">", 101, True), (">=", 100, True), ("<", 100, False), ("<=", 100, True)],
)
def test_comparisons(comparison: str, value: float, holds: bool) -> None:
    rule = BusinessRule(metric="m", comparison=comparison, threshold=100, multiplier=2)
    assert rule.holds({"m": value}) is holds


def test_largest_multiplier_wins_not_the_product() -> None:
    rules = [QUEUE, PAYMENT, REVENUE]
    busy = {"queue_depth": 500, "payment_ms": 6000, "revenue_per_min": 20000}
    assert select_multiplier(rules, busy) == (2.0, QUEUE)
    assert select_multiplier(rules, {"payment_ms": 6000, "revenue_per_min": 20000}) == (
        1.5,
        PAYMENT,
    )
    assert select_multiplier(rules, {"queue_depth": 50}) == (1.0, None)


def test_missing_metric_does_not_hold() -> None:
    assert select_multiplier([QUEUE], {}) == (1.0, None)


def test_rules_in_the_plan() -> None:
    plan = plan_capacity(
        [svc()], {"checkout": hours(100, 100, queue_depth=[50, 150])}, rules=[QUEUE, REVENUE]
    )
    quiet, busy = plan.service("checkout").hours
    assert (quiet.multiplier, quiet.rule, quiet.granted) == (1.0, None, 2)
    assert (busy.multiplier, busy.rule, busy.granted) == (2.0, "queue_depth > 100 -> x2", 4)
    assert not plan.shortfalls
    assert not plan.over_budget


# -- budgets -----------------------------------------------------------------------------------


def test_no_budget_costs_are_reported() -> None:
    plan = plan_capacity([svc(instance_cost_per_hour=0.5)], {"checkout": hours(250, 500)})
    assert [h.cost_per_hour for h in plan.service("checkout").hours] == [2.5, 5.0]
    assert [t.cost_per_hour for t in plan.totals] == [2.5, 5.0]
    assert [t.budget_per_hour for t in plan.totals] == [None, None]


def test_global_budget_allocated_by_priority_with_shortfall() -> None:
    front = svc("frontend", priority=1, min_instances=2, instance_cost_per_hour=1.0)
    batch = svc("batch", priority=9, min_instances=1, instance_cost_per_hour=1.0)
    # frontend wants 6, batch wants 5: 11 per hour against a budget of 8
    plan = plan_capacity(
        [batch, front],
        {"frontend": hours(300, 100), "batch": hours(250, 100)},
        global_budget_per_hour=8.0,
    )
    first = T0
    assert plan.service("frontend").at(first).granted == 6  # the important one in full
    assert plan.service("batch").at(first).granted == 2  # its minimum and what is left
    (short,) = plan.shortfalls
    assert (short.service, short.hour, short.wanted, short.granted, short.missing) == (
        "batch",
        first,
        5,
        2,
        3,
    )
    assert short.reason is ShortfallReason.GLOBAL_BUDGET
    assert short.sentence.startswith("batch at 2026-12-01 03:00 UTC: 2 of 5 instance(s)")
    assert "3 short" in short.sentence
    assert plan.over_budget
    total = plan.totals[0]
    assert (total.cost_per_hour, total.budget_per_hour, total.over_budget) == (8.0, 8.0, False)
    # the second hour fits: nothing cut
    assert plan.totals[1].cost_per_hour == 4.0
    assert plan.service("batch").hours[1].granted == 2


def test_minimums_are_kept_even_above_the_global_budget() -> None:
    front = svc("frontend", priority=1, min_instances=3, instance_cost_per_hour=1.0)
    batch = svc("batch", priority=2, min_instances=3, instance_cost_per_hour=1.0)
    plan = plan_capacity(
        [front, batch],
        {"frontend": hours(1000), "batch": hours(1000)},
        global_budget_per_hour=4.0,
    )
    assert [s.hours[0].granted for s in plan.services] == [3, 3]
    assert {(s.service, s.granted) for s in plan.shortfalls} == {("frontend", 3), ("batch", 3)}
    assert plan.totals[0].over_budget
    assert plan.over_budget


def test_left_over_money_goes_down_the_priorities() -> None:
    big = svc("big", priority=1, min_instances=0, instance_cost_per_hour=3.0)
    small = svc("small", priority=2, min_instances=0, instance_cost_per_hour=1.0)
    plan = plan_capacity(
        [big, small], {"big": hours(500), "small": hours(500)}, global_budget_per_hour=7.0
    )
    # big: 2 x 3 = 6, the 1 left buys one of small's instances
    assert plan.service("big").hours[0].granted == 2
    assert plan.service("small").hours[0].granted == 1
    assert plan.totals[0].cost_per_hour == 7.0


def test_free_instances_are_never_cut() -> None:
    free = svc("free", priority=9, instance_cost_per_hour=0.0)
    paid = svc("paid", priority=1, instance_cost_per_hour=1.0)
    plan = plan_capacity(
        [free, paid], {"free": hours(500), "paid": hours(500)}, global_budget_per_hour=4.0
    )
    assert plan.service("free").hours[0].granted == 10
    assert plan.service("paid").hours[0].granted == 4


def test_service_budget_caps_that_service() -> None:
    capped = svc("search", instance_cost_per_hour=0.5, budget_per_hour=2.0)
    other = svc("cart", instance_cost_per_hour=0.5)
    plan = plan_capacity([capped, other], {"search": hours(500), "cart": hours(500)})
    assert plan.service("search").hours[0].granted == 4
    assert plan.service("cart").hours[0].granted == 10
    (short,) = plan.shortfalls
    assert (short.service, short.wanted, short.granted) == ("search", 10, 4)
    assert short.reason is ShortfallReason.SERVICE_BUDGET
    assert "budget_per_hour 2" in short.sentence


def test_service_budget_below_its_minimum_keeps_the_minimum_and_says_so() -> None:
    plan = plan_capacity(
        [svc(min_instances=3, instance_cost_per_hour=1.0, budget_per_hour=2.0)],
        {"checkout": hours(0)},
    )
    hour = plan.service("checkout").hours[0]
    assert (hour.granted, hour.over_budget) == (3, True)
    assert plan.over_budget


def test_service_and_global_budget_both_reported() -> None:
    a = svc("a", priority=1, instance_cost_per_hour=1.0, budget_per_hour=6.0)
    b = svc("b", priority=2, instance_cost_per_hour=1.0)
    plan = plan_capacity([a, b], {"a": hours(500), "b": hours(500)}, global_budget_per_hour=8.0)
    reasons = [(s.service, s.reason, s.wanted, s.granted) for s in plan.shortfalls]
    assert reasons == [
        ("a", ShortfallReason.SERVICE_BUDGET, 10, 6),
        ("b", ShortfallReason.GLOBAL_BUDGET, 10, 2),
    ]


def test_demand_above_max_is_reported() -> None:
    plan = plan_capacity([svc(max_instances=4)], {"checkout": hours(1000)})
    hour = plan.service("checkout").hours[0]
    assert (hour.demand, hour.wanted, hour.granted) == (20, 4, 4)
    (short,) = plan.shortfalls
    assert short.reason is ShortfallReason.MAX_INSTANCES
    assert not plan.over_budget  # a configuration limit, not a budget cut


# -- plan input --------------------------------------------------------------------------------


def test_nan_only_forecast_refused_naming_the_service() -> None:
    with pytest.raises(PlanInputError, match="service 'checkout': forecast is NaN at") as caught:
        plan_capacity([svc(), svc("cart")], {"checkout": hours(math.nan, math.nan), "cart": []})
    assert caught.value.service == "checkout"


@pytest.mark.parametrize(
    ("forecasts", "message"),
    [
        ({}, "service 'checkout': has no forecast"),
        ({"checkout": []}, "service 'checkout': forecast has no hours"),
        ({"checkout": hours(1), "ghost": hours(1)}, "service 'ghost': has a forecast but"),
        ({"checkout": hours(1) + hours(2)}, "service 'checkout': forecast has hour .* twice"),
        ({"checkout": hours(-3)}, "service 'checkout': forecast must be a finite rate"),
        (
            {"checkout": hours(1, queue_depth=[math.nan])},
            "service 'checkout': business metric 'queue_depth' is nan",
        ),
    ],
)
def test_bad_plan_input_refused(forecasts: dict[str, list[HourForecast]], message: str) -> None:
    with pytest.raises(PlanInputError, match=message):
        plan_capacity([svc()], forecasts)


def test_duplicate_services_and_bad_budget_refused() -> None:
    with pytest.raises(PlanInputError, match="more than once"):
        plan_capacity([svc(), svc()], {"checkout": hours(1)})
    with pytest.raises(ValueError, match="global_budget_per_hour"):
        plan_capacity([svc()], {"checkout": hours(1)}, global_budget_per_hour=-1.0)


def test_plan_is_frozen_and_serialisable() -> None:
    plan = plan_capacity([svc()], {"checkout": hours(100)})
    with pytest.raises(ValidationError):
        plan.shortfalls = ()  # type: ignore[misc]
    assert type(plan).model_validate_json(plan.model_dump_json()) == plan


# -- schedules ---------------------------------------------------------------------------------


def at(hour: int) -> datetime:
    return T0 + timedelta(hours=hour)


def test_compress_schedule_merges_runs() -> None:
    counts = {at(i): n for i, n in enumerate([2, 2, 5, 5, 5, 2])}
    assert compress_schedule(counts) == (
        ScheduleWindow(start=at(0), end=at(2), instances=2),
        ScheduleWindow(start=at(2), end=at(5), instances=5),
        ScheduleWindow(start=at(5), end=at(6), instances=2),
    )


def test_compress_schedule_sorts_and_does_not_bridge_gaps() -> None:
    counts = {at(3): 2, at(0): 2, at(1): 2}
    assert compress_schedule(counts) == (
        ScheduleWindow(start=at(0), end=at(2), instances=2),
        ScheduleWindow(start=at(3), end=at(4), instances=2),
    )
    assert compress_schedule({}) == ()


def test_compress_schedule_refuses_bad_hours() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compress_schedule({datetime(2026, 12, 1): 1})
    with pytest.raises(ValueError, match=">= 0"):
        compress_schedule({at(0): -1})


def test_service_plan_schedule() -> None:
    plan = plan_capacity([svc()], {"checkout": hours(100, 100, 300)})
    assert [(w.start, w.end, w.instances) for w in plan.service("checkout").schedule()] == [
        (at(0), at(2), 2),
        (at(2), at(3), 6),
    ]


def test_daily_recurrence() -> None:
    assert daily_recurrence(9) == "0 9 * * *"
    with pytest.raises(ValueError, match=r"0\.\.23"):
        daily_recurrence(24)


def day_shape(hour_utc: int) -> int:
    return 8 if 9 <= hour_utc < 18 else 2


def test_scheduled_actions_recur_daily_when_the_plan_repeats() -> None:
    counts = {at(i): day_shape(at(i).hour) for i in range(48)}  # starts at 03:00 UTC
    actions = scheduled_actions(compress_schedule(counts))
    assert [(a.recurrence, a.instances) for a in actions] == [
        ("0 9 * * *", 8),
        ("0 18 * * *", 2),
    ]
    assert actions[0].start == at(6)  # 09:00 on the first day


def test_scheduled_actions_constant_day_is_one_action() -> None:
    (action,) = scheduled_actions(compress_schedule({at(i): 3 for i in range(48)}))
    assert (action.recurrence, action.instances, action.start) == ("0 3 * * *", 3, at(0))


def test_scheduled_actions_one_off_when_days_differ_or_too_short() -> None:
    counts = {at(i): day_shape(at(i).hour) for i in range(48)}
    counts[at(40)] = 9  # second day differs
    windows = compress_schedule(counts)
    actions = scheduled_actions(windows)
    assert all(a.recurrence is None for a in actions)
    assert [(a.start, a.instances) for a in actions] == [(w.start, w.instances) for w in windows]
    short = compress_schedule({at(i): day_shape(at(i).hour) for i in range(24)})
    assert all(a.recurrence is None for a in scheduled_actions(short))
    assert scheduled_actions(()) == ()
