"""The capacity plan of ``load-forecast``. Pure: hourly forecasts in, frozen plan out.

Arithmetic, per service and hour (the issue's recipe):

    demand   = ceil(ceil(forecast_rps / (capacity_per_instance_rps x target_utilisation))
                    x multiplier)
    wanted   = demand clamped to [min_instances, max_instances]
    granted  = wanted, cut by the service's own budget, then by the global budget

Choices, and why:

- **Several business rules holding in one hour: the largest multiplier wins.** The recipe's
  examples (queue depth > 100 -> x2, payment time > 5000 ms -> x1.5, revenue per minute > 10000
  -> x1.2) are alternative signals of the same thing (a busy hour), not independent load sources;
  compounding them would buy x3.6 for one event seen three ways. The largest is the safest single
  answer. A rule whose metric has no value for an hour does not hold (no data buys nothing).
  A multiplier below 1 (a scale-in rule) therefore applies only when no larger one holds.
- **Float noise never buys an instance.** ``50 x 1.1`` is ``55.00000000000001`` in binary floating
  point; every ``ceil`` here first subtracts a relative epsilon (1e-9) so it gives 55, not 56.
- **Budgets never cut silently, and never below ``min_instances``.** A cut is a
  :class:`Shortfall` (wanted vs granted and the reason); the minimums are the floor an SRE set
  for availability, so they are granted even when they alone exceed a budget, and the hour is
  then marked over budget (``over_budget`` of the hour or of the service-hour) instead of the
  plan being refused.
- **Global budget by priority.** Every service first gets its minimum; the money
  left is handed out in priority order (lower number first, then name, so ties are
  deterministic), each service taking as many extra instances as it wants and the money affords.
  Money too little for one more instance of an important service still goes to a less important
  one with cheaper instances: idle budget protects nobody. Instances that cost nothing are never
  cut.
- **Demand above ``max_instances`` is reported too** (reason ``max_instances``): the service is
  configured not to follow the forecast, which is an under-provisioned hour the team should see.
- **Bad input is refused, naming the service and field**: NaN or negative forecasts, NaN business
  metrics, missing or unknown services, duplicate hours. The flow excludes a refused service
  (:attr:`PlanInputError.service`) and plans the others, so one bad series does not stop the rest.

Schedules: :func:`compress_schedule` merges consecutive hours with the same count into windows;
:func:`scheduled_actions` turns windows into AWS ``PutScheduledUpdateGroupAction`` calls: one
daily cron recurrence (UTC) per change point when the plan covers at least 48 contiguous hours and
every hour equals the same hour a day later, else one-off actions at each window start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_EPSILON = 1e-9
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


def _ceil(value: float) -> int:
    """``ceil`` that ignores float noise: 55.00000000000001 (50 x 1.1) is 55."""
    return math.ceil(value - _EPSILON * max(1.0, abs(value)))


def _floor(value: float) -> int:
    """``floor`` that ignores float noise: 62.99999999999999 (45 x 1.4) is 63."""
    return math.floor(value + _EPSILON * max(1.0, abs(value)))


def _utc_hour(value: datetime, what: str) -> datetime:
    """``value`` in UTC, refused unless timezone-aware and on the hour (hourly plans only)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got {value.isoformat()}")
    value = value.astimezone(UTC)
    if (value.minute, value.second, value.microsecond) != (0, 0, 0):
        raise ValueError(f"{what} must be on the hour, got {value.isoformat()}")
    return value


class PlanInputError(ValueError):
    """Input the planner refuses; ``service`` names the service so the flow can skip it."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"service {service!r}: {message}")
        self.service = service


class ServiceScaling(BaseModel):
    """How one service turns request rate into instances, and what they cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=253, description="Service name (unique).")
    capacity_per_instance_rps: float = Field(
        description="Requests per second one instance serves within its SLO (> 0)."
    )
    target_utilisation: float = Field(
        0.7, description="Share of that capacity to plan for, in (0, 1]: the headroom."
    )
    min_instances: int = Field(1, description="Floor, always granted (>= 0).")
    max_instances: int = Field(description="Ceiling (>= min_instances).")
    priority: int = Field(
        100, description="Lower is more important: served first when the budget is short."
    )
    instance_cost_per_hour: float = Field(0.0, description="Cost of one instance-hour (>= 0).")
    budget_per_hour: float | None = Field(
        None, description="This service's own budget per hour (>= 0); empty: no own budget."
    )

    @model_validator(mode="after")
    def _check(self) -> ServiceScaling:
        # One validator after the types so every message can name the service as well as the
        # field: "capacity_per_instance_rps must be > 0" alone does not say which of 200.
        def refuse(message: str) -> ValueError:
            return ValueError(f"service {self.name!r}: {message}")

        cap = self.capacity_per_instance_rps
        if not math.isfinite(cap) or cap <= 0:
            raise refuse(f"capacity_per_instance_rps must be a number > 0, got {cap}")
        util = self.target_utilisation
        if not math.isfinite(util) or not 0 < util <= 1:
            raise refuse(f"target_utilisation must be in (0, 1], got {util}")
        if self.min_instances < 0:
            raise refuse(f"min_instances must be >= 0, got {self.min_instances}")
        if self.max_instances < self.min_instances:
            raise refuse(
                f"max_instances ({self.max_instances}) must be >= min_instances "
                f"({self.min_instances})"
            )
        cost = self.instance_cost_per_hour
        if not math.isfinite(cost) or cost < 0:
            raise refuse(f"instance_cost_per_hour must be a number >= 0, got {cost}")
        budget = self.budget_per_hour
        if budget is not None and (not math.isfinite(budget) or budget < 0):
            raise refuse(f"budget_per_hour must be a number >= 0, got {budget}")
        return self


class Comparison(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="

    def holds(self, value: float, threshold: float) -> bool:
        if self is Comparison.GT:
            return value > threshold
        if self is Comparison.GE:
            return value >= threshold
        if self is Comparison.LT:
            return value < threshold
        return value <= threshold


class BusinessRule(BaseModel):
    """When a business metric crosses a threshold, multiply instances (queue depth > 100: x2)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    metric: str = Field(min_length=1, description="Business metric name, as in the forecasts.")
    comparison: Comparison = Field(description="One of >, >=, <, <=.")
    threshold: float = Field(description="The value the metric is compared with.")
    multiplier: float = Field(gt=0, description="Instances are multiplied by this (> 0).")

    def holds(self, metrics: Mapping[str, float]) -> bool:
        """True when the metric has a value this hour and it crosses the threshold."""
        value = metrics.get(self.metric)
        return value is not None and self.comparison.holds(value, self.threshold)

    @property
    def text(self) -> str:
        return f"{self.metric} {self.comparison.value} {self.threshold:g} -> x{self.multiplier:g}"


class HourForecast(BaseModel):
    """One service's forecast for one hour.

    Values are not refused here (a forecaster may emit NaN); the planner refuses them, naming
    the service, which this model does not know.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    hour: datetime = Field(description="Start of the hour, timezone-aware; stored in UTC.")
    value: float = Field(description="Requests per second at the chosen quantile.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Business metric values forecast for this hour."
    )

    @field_validator("hour")
    @classmethod
    def _hour_shape(cls, value: datetime) -> datetime:
        return _utc_hour(value, "hour")


def _check_rps(forecast_rps: float, service: str, where: str = "") -> None:
    if math.isnan(forecast_rps):
        raise PlanInputError(service, f"forecast is NaN{where}: no capacity can be derived")
    if forecast_rps < 0 or math.isinf(forecast_rps):
        raise PlanInputError(
            service, f"forecast must be a finite rate >= 0 req/s{where}, got {forecast_rps}"
        )


def demand_instances(forecast_rps: float, service: ServiceScaling, multiplier: float = 1.0) -> int:
    """Instances the forecast asks for before the [min, max] clamp (what max_instances hides)."""
    _check_rps(forecast_rps, service.name)
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise PlanInputError(service.name, f"multiplier must be a number > 0, got {multiplier}")
    per_instance = service.capacity_per_instance_rps * service.target_utilisation
    return _ceil(_ceil(forecast_rps / per_instance) * multiplier)


def clamp(instances: int, service: ServiceScaling) -> int:
    return max(service.min_instances, min(service.max_instances, instances))


def instances_needed(forecast_rps: float, service: ServiceScaling, multiplier: float = 1.0) -> int:
    """ceil(rps / (capacity x utilisation)), times ``multiplier`` (ceil), clamped to [min, max]."""
    return clamp(demand_instances(forecast_rps, service, multiplier), service)


def select_multiplier(
    rules: Iterable[BusinessRule], metrics: Mapping[str, float]
) -> tuple[float, BusinessRule | None]:
    """The largest multiplier among the rules that hold, and its rule; ``(1.0, None)`` if none."""
    best: BusinessRule | None = None
    for rule in rules:
        if rule.holds(metrics) and (best is None or rule.multiplier > best.multiplier):
            best = rule
    return (best.multiplier, best) if best is not None else (1.0, None)


class ShortfallReason(StrEnum):
    SERVICE_BUDGET = "service_budget"
    GLOBAL_BUDGET = "global_budget"
    MAX_INSTANCES = "max_instances"


class Shortfall(BaseModel):
    """Instances wanted but not planned, for one service, hour and reason: never silent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(description="The service cut.")
    hour: datetime = Field(description="The hour cut (UTC).")
    wanted: int = Field(description="Instances before this cut.")
    granted: int = Field(description="Instances after this cut.")
    reason: ShortfallReason = Field(description="service_budget, global_budget or max_instances.")
    sentence: str = Field(description="One sentence for people: who, when, how many, why.")

    @property
    def missing(self) -> int:
        return self.wanted - self.granted


class HourAllocation(BaseModel):
    """One service in one hour: from forecast to the instances planned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hour: datetime = Field(description="Start of the hour (UTC).")
    forecast_rps: float = Field(description="Forecast at the chosen quantile, req/s.")
    multiplier: float = Field(description="The business multiplier applied (1.0: none held).")
    rule: str | None = Field(description="The rule that set the multiplier, as text.")
    demand: int = Field(description="Instances the forecast asks for, before [min, max].")
    wanted: int = Field(description="Demand clamped to [min_instances, max_instances].")
    granted: int = Field(description="Instances planned after the budgets.")
    cost_per_hour: float = Field(description="granted x instance_cost_per_hour.")
    over_budget: bool = Field(
        description="Cost above the service's own budget: its minimum alone exceeds it."
    )


class ServicePlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    service: ServiceScaling = Field(description="The service's settings.")
    hours: tuple[HourAllocation, ...] = Field(description="One allocation per hour, in order.")

    def schedule(self) -> tuple[ScheduleWindow, ...]:
        """The granted instances as schedule windows."""
        return compress_schedule({h.hour: h.granted for h in self.hours})

    def at(self, hour: datetime) -> HourAllocation:
        hour = _utc_hour(hour, "hour")
        for h in self.hours:
            if h.hour == hour:
                return h
        raise KeyError(hour)


class HourTotal(BaseModel):
    """All services in one hour against the global budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hour: datetime = Field(description="Start of the hour (UTC).")
    cost_per_hour: float = Field(description="Cost of all granted instances this hour.")
    budget_per_hour: float | None = Field(description="The global budget; empty: none.")
    over_budget: bool = Field(
        description="Cost above budget even after cuts: the minimums alone exceed it."
    )


class CapacityPlan(BaseModel):
    """The frozen capacity plan: per service per hour, totals, and every shortfall."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    services: tuple[ServicePlan, ...] = Field(description="Per service, in input order.")
    rules: tuple[BusinessRule, ...] = Field(description="The business rules applied.")
    global_budget_per_hour: float | None = Field(description="Global budget; empty: none.")
    totals: tuple[HourTotal, ...] = Field(description="Per hour, all services.")
    shortfalls: tuple[Shortfall, ...] = Field(
        description="Every cut, by hour then service: never silent."
    )

    def service(self, name: str) -> ServicePlan:
        for s in self.services:
            if s.service.name == name:
                return s
        raise KeyError(name)

    @property
    def budget_shortfalls(self) -> tuple[Shortfall, ...]:
        return tuple(s for s in self.shortfalls if s.reason is not ShortfallReason.MAX_INSTANCES)

    @property
    def over_budget(self) -> bool:
        """A budget cut something, or could not (minimums above budget): the event to emit."""
        return (
            bool(self.budget_shortfalls)
            or any(t.over_budget for t in self.totals)
            or any(h.over_budget for s in self.services for h in s.hours)
        )


def _forecast_hours(service: str, forecast: Sequence[HourForecast]) -> dict[datetime, HourForecast]:
    if not forecast:
        raise PlanInputError(service, "forecast has no hours")
    by_hour: dict[datetime, HourForecast] = {}
    for point in forecast:
        when = f" at {point.hour.isoformat()}"
        if point.hour in by_hour:
            raise PlanInputError(service, f"forecast has hour {point.hour.isoformat()} twice")
        _check_rps(point.value, service, when)
        for metric, value in point.metrics.items():
            if not math.isfinite(value):
                raise PlanInputError(service, f"business metric {metric!r} is {value}{when}")
        by_hour[point.hour] = point
    return by_hour


def _cap_by_budget(wanted: int, service: ServiceScaling, budget: float) -> int:
    """Instances ``budget`` affords, never below the minimum nor above ``wanted``."""
    if service.instance_cost_per_hour == 0:
        return wanted
    affordable = _floor(budget / service.instance_cost_per_hour)
    return max(min(wanted, service.min_instances), min(wanted, affordable))


def plan_capacity(
    services: Sequence[ServiceScaling],
    forecasts: Mapping[str, Sequence[HourForecast]],
    rules: Sequence[BusinessRule] = (),
    global_budget_per_hour: float | None = None,
) -> CapacityPlan:
    """The capacity plan for ``services`` given their hourly ``forecasts`` (see module doc)."""
    if global_budget_per_hour is not None and not (
        math.isfinite(global_budget_per_hour) and global_budget_per_hour >= 0
    ):
        raise ValueError(
            f"global_budget_per_hour must be a number >= 0, got {global_budget_per_hour}"
        )
    names = [s.name for s in services]
    for name in names:
        if names.count(name) > 1:
            raise PlanInputError(name, "name appears more than once in services")
        if name not in forecasts:
            raise PlanInputError(name, "has no forecast")
    for name in forecasts:
        if name not in names:
            raise PlanInputError(name, "has a forecast but is not in services")

    shortfalls: list[Shortfall] = []
    rows: dict[str, dict[datetime, dict[str, Any]]] = {}
    for svc in services:
        rows[svc.name] = {}
        for hour, point in sorted(_forecast_hours(svc.name, forecasts[svc.name]).items()):
            multiplier, rule = select_multiplier(rules, point.metrics)
            demand = demand_instances(point.value, svc, multiplier)
            wanted = clamp(demand, svc)
            if demand > wanted:
                shortfalls.append(
                    _shortfall(svc, hour, demand, wanted, ShortfallReason.MAX_INSTANCES)
                )
            granted = wanted
            if svc.budget_per_hour is not None:
                granted = _cap_by_budget(wanted, svc, svc.budget_per_hour)
                if granted < wanted:
                    shortfalls.append(
                        _shortfall(svc, hour, wanted, granted, ShortfallReason.SERVICE_BUDGET)
                    )
            rows[svc.name][hour] = {
                "hour": hour,
                "forecast_rps": point.value,
                "multiplier": multiplier,
                "rule": rule.text if rule else None,
                "demand": demand,
                "wanted": wanted,
                "granted": granted,
            }

    totals: list[HourTotal] = []
    by_priority = sorted(services, key=lambda s: (s.priority, s.name))
    for hour in sorted({h for per_service in rows.values() for h in per_service}):
        present = [s for s in by_priority if hour in rows[s.name]]
        row = {s.name: rows[s.name][hour] for s in present}
        cost = sum(row[s.name]["granted"] * s.instance_cost_per_hour for s in present)
        budget = global_budget_per_hour
        if budget is not None and cost > budget * (1 + _EPSILON):
            _allocate_by_priority(present, row, budget, hour, shortfalls)
            cost = sum(row[s.name]["granted"] * s.instance_cost_per_hour for s in present)
        totals.append(
            HourTotal(
                hour=hour,
                cost_per_hour=cost,
                budget_per_hour=budget,
                over_budget=budget is not None and cost > budget * (1 + _EPSILON),
            )
        )

    plans = tuple(
        ServicePlan(
            service=svc,
            hours=tuple(_allocation(svc, r) for r in rows[svc.name].values()),
        )
        for svc in services
    )
    return CapacityPlan(
        services=plans,
        rules=tuple(rules),
        global_budget_per_hour=global_budget_per_hour,
        totals=tuple(totals),
        shortfalls=tuple(sorted(shortfalls, key=lambda s: (s.hour, s.service))),
    )


def _allocate_by_priority(
    present: Sequence[ServiceScaling],
    row: Mapping[str, dict[str, Any]],
    budget: float,
    hour: datetime,
    shortfalls: list[Shortfall],
) -> None:
    """Cut ``row``'s granted counts to ``budget``: minimums first, then extras by priority.

    ``present`` is in priority order. Money left after the minimums (negative when they alone
    exceed the budget: then no extras) buys each service's extras in turn.
    """
    floors = {s.name: min(s.min_instances, row[s.name]["granted"]) for s in present}
    left = budget - sum(floors[s.name] * s.instance_cost_per_hour for s in present)
    for svc in present:
        want, floor, price = row[svc.name]["granted"], floors[svc.name], svc.instance_cost_per_hour
        extra = want - floor if price == 0 else min(want - floor, max(0, _floor(left / price)))
        left -= extra * price
        if floor + extra < want:
            shortfalls.append(
                _shortfall(svc, hour, want, floor + extra, ShortfallReason.GLOBAL_BUDGET)
            )
            row[svc.name]["granted"] = floor + extra


def _allocation(svc: ServiceScaling, row: Mapping[str, Any]) -> HourAllocation:
    cost = row["granted"] * svc.instance_cost_per_hour
    budget = svc.budget_per_hour
    return HourAllocation(
        **row,
        cost_per_hour=cost,
        over_budget=budget is not None and cost > budget * (1 + _EPSILON),
    )


def _shortfall(
    svc: ServiceScaling, hour: datetime, wanted: int, granted: int, reason: ShortfallReason
) -> Shortfall:
    if reason is ShortfallReason.MAX_INSTANCES:
        why = f"the forecast needs {wanted} but max_instances is {svc.max_instances}"
    elif reason is ShortfallReason.SERVICE_BUDGET:
        why = (
            f"its budget_per_hour {svc.budget_per_hour or 0:g} affords {granted} at "
            f"{svc.instance_cost_per_hour:g} each"
        )
    else:
        why = (
            "the global budget per hour is spent on every service's minimum and on services "
            f"of higher priority (its priority: {svc.priority})"
        )
    return Shortfall(
        service=svc.name,
        hour=hour,
        wanted=wanted,
        granted=granted,
        reason=reason,
        sentence=f"{svc.name} at {hour:%Y-%m-%d %H:00} UTC: {granted} of {wanted} instance(s) "
        f"planned, {wanted - granted} short: {why}.",
    )


class ScheduleWindow(BaseModel):
    """Consecutive hours with the same instance count: [start, end) in UTC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: datetime = Field(description="First hour of the window (UTC).")
    end: datetime = Field(description="End of the window, exclusive (UTC).")
    instances: int = Field(ge=0, description="Instances planned throughout the window.")


def compress_schedule(hours: Mapping[datetime, int]) -> tuple[ScheduleWindow, ...]:
    """Merge consecutive hours with the same count into windows; a missing hour ends a window.

    A gap is not bridged: an hour without a plan has no count to claim.
    """
    by_hour: dict[datetime, int] = {}
    for when, count in hours.items():
        hour = _utc_hour(when, "schedule hour")
        if count < 0:
            raise ValueError(f"instances must be >= 0, got {count} at {hour.isoformat()}")
        by_hour[hour] = count
    windows: list[ScheduleWindow] = []
    for hour, count in sorted(by_hour.items()):
        last = windows[-1] if windows else None
        if last is not None and last.end == hour and last.instances == count:
            windows[-1] = last.model_copy(update={"end": hour + _HOUR})
        else:
            windows.append(ScheduleWindow(start=hour, end=hour + _HOUR, instances=count))
    return tuple(windows)


class ScheduledAction(BaseModel):
    """One AWS ``PutScheduledUpdateGroupAction``: a daily ``recurrence`` or a one-off start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: datetime = Field(description="When it first applies (UTC): StartTime.")
    recurrence: str | None = Field(description="Cron in UTC (Recurrence); empty: one-off.")
    instances: int = Field(ge=0, description="Planned instances from then on.")


def daily_recurrence(hour_of_day: int) -> str:
    """The cron expression (UTC) of every day at ``hour_of_day``:00: ``0 9 * * *``."""
    if not 0 <= hour_of_day <= 23:
        raise ValueError(f"hour_of_day must be in 0..23, got {hour_of_day}")
    return f"0 {hour_of_day} * * *"


def scheduled_actions(windows: Sequence[ScheduleWindow]) -> tuple[ScheduledAction, ...]:
    """Actions that enact ``windows``: daily cron when the plan repeats daily, else one-off.

    Repeats daily: the windows cover at least 48 contiguous hours and each hour's count equals
    the count 24 h later. Then one recurring action per change point within the first day, taken
    cyclically (the count at the first hour is set only if it differs from the hour before it a
    day later, except that a constant day still gets one action). Otherwise one one-off action
    per window start. A recurrence outlives the forecast it came from, so the flow must replace
    the whole set on each nightly run; if a run fails, yesterday's daily shape keeps applying.
    """
    counts: dict[datetime, int] = {}
    for w in sorted(windows, key=lambda w: w.start):
        hour = w.start
        while hour < w.end:
            counts[hour] = w.instances
            hour += _HOUR
    if not counts:
        return ()
    first, last = min(counts), max(counts)
    contiguous = len(counts) == int((last - first) / _HOUR) + 1
    repeats = (
        contiguous
        and len(counts) >= 48
        and all(counts[h + _DAY] == n for h, n in counts.items() if h + _DAY in counts)
    )
    if not repeats:
        return tuple(
            ScheduledAction(start=w.start, recurrence=None, instances=w.instances)
            for w in sorted(windows, key=lambda w: w.start)
        )
    day = [first + i * _HOUR for i in range(24)]
    changes = [h for h in day if counts[h] != counts[h - _HOUR if h > first else h + 23 * _HOUR]]
    changes = changes or [first]
    return tuple(
        ScheduledAction(start=h, recurrence=daily_recurrence(h.hour), instances=counts[h])
        for h in sorted(changes, key=lambda h: h.hour)
    )
