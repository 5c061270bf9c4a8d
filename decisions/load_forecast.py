"""Parameters of ``load-forecast`` and ``apply-scaling``, and the schedule one hands the other.

Pure: validated input and the stored schedule's shape, no I/O. Kept apart from the flows so a
chat bot (or ``runbooks run``) validates a command without importing Prefect, and apart from
:mod:`decisions.scaling` (the planner), whose :class:`~decisions.scaling.ServiceScaling` each
service's settings become.

Why the metric sources name no block: one run reads one Prometheus and one AWS account (the
flow's ``prometheus`` and ``aws`` block parameters, defaulting to the sandbox's). Another
environment is another deployment with other blocks, which keeps credentials out of parameters
a chat command can set.

Why the stored schedule is hourly counts, not windows: a Prefect variable holds at most 5,000
characters of JSON; 48 (or 336) small integers fit whatever the plan's shape, windows of
timestamps do not. :meth:`StoredSchedule.windows` compresses them back when needed.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from decisions.scaling import BusinessRule, ScheduleWindow, ServiceScaling, compress_schedule

_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_HOUR = timedelta(hours=1)
CLOUDWATCH_DIMENSIONS = 30  # the most dimensions a CloudWatch metric may have
FILE_SUFFIXES = (".csv", ".parquet")
SCHEDULE_VARIABLE_PREFIX = "load-forecast-schedule-"
"""Prefect variable ``load-forecast-schedule-<service>``: where ``apply-scaling`` reads."""


# --------------------------------------------------------------------------- metric sources


class PrometheusSource(BaseModel):
    """History from a PromQL query giving ONE series of request rate in req/s."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["prometheus"] = Field("prometheus", description="Discriminator: prometheus.")
    query: str = Field(
        min_length=1,
        description="PromQL giving one series of request rate in req/s, e.g. "
        'sum(rate(http_requests_total{service="checkout"}[1h])).',
    )
    value_at: Literal["hour_end", "hour_start"] = Field(
        "hour_end",
        description="hour_end: the value at t belongs to the hour before t (right for "
        "rate(x[1h]) and increase(x[1h])); hour_start: it belongs to the hour starting at t.",
    )

    @field_validator("query")
    @classmethod
    def _query_is_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must be a PromQL expression, got only whitespace")
        return value


class CloudWatchSource(BaseModel):
    """History from a CloudWatch metric, read hourly with ``GetMetricData``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["cloudwatch"] = Field("cloudwatch", description="Discriminator: cloudwatch.")
    namespace: str = Field(
        min_length=1, max_length=255, description="Namespace, e.g. AWS/ApplicationELB."
    )
    metric_name: str = Field(
        min_length=1, max_length=255, description="Metric name, e.g. RequestCount."
    )
    dimensions: dict[str, str] = Field(
        default_factory=dict,
        description="Dimensions naming the one metric, e.g. {LoadBalancer: app/shop/123}.",
    )
    stat: str = Field(
        "Sum", min_length=1, description="CloudWatch statistic: Sum, Average, Maximum, p95..."
    )
    per_second: bool = Field(
        True,
        description="Divide each hourly value by 3600: an hourly Sum of requests becomes req/s. "
        "Turn off when the metric already is a rate.",
    )

    @field_validator("dimensions")
    @classmethod
    def _dimensions_are_complete(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > CLOUDWATCH_DIMENSIONS:
            raise ValueError(
                f"dimensions may hold at most {CLOUDWATCH_DIMENSIONS} entries, got {len(value)}"
            )
        for name, dimension_value in value.items():
            if not name or not dimension_value:
                raise ValueError(f"dimensions need a name and a value, got {name!r}: {value!r}")
        return value


class FileSource(BaseModel):
    """History from a CSV or Parquet file: a timestamp column and a req/s column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["file"] = Field("file", description="Discriminator: file.")
    path: str = Field(
        min_length=1, description="Path of a .csv or .parquet file (the suffix picks the format)."
    )
    timestamp_column: str = Field(
        "timestamp",
        min_length=1,
        description="Column of timestamps with a timezone, e.g. 2026-11-01T00:00:00Z.",
    )
    value_column: str = Field(
        "value", min_length=1, description="Column of request rates in req/s."
    )

    @field_validator("path")
    @classmethod
    def _path_is_csv_or_parquet(cls, value: str) -> str:
        if Path(value).suffix.lower() not in FILE_SUFFIXES:
            raise ValueError(f"path must end in .csv or .parquet, got {value!r}")
        return value

    @model_validator(mode="after")
    def _columns_differ(self) -> FileSource:
        if self.timestamp_column == self.value_column:
            raise ValueError(
                f"timestamp_column and value_column must differ, both are {self.value_column!r}"
            )
        return self


MetricSource = Annotated[
    PrometheusSource | CloudWatchSource | FileSource, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- parameters


class KubernetesScaling(BaseModel):
    """The Deployment whose HPA (or KEDA ScaledObject) ``apply-scaling`` drives."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field("default", pattern=_NAME, max_length=63, description="Namespace.")
    deployment: str = Field(pattern=_NAME, max_length=253, description="Deployment name.")


class ForecastService(BaseModel):
    """One service: where its load history is, what an instance serves, what it may cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME, max_length=200, description="Service name (unique).")
    source: MetricSource = Field(description="Where its request-rate history is.")
    capacity_per_instance_rps: float = Field(
        description="Requests per second one instance serves within its SLO (> 0)."
    )
    target_utilisation: float = Field(0.7, description="Share of capacity to plan for, (0, 1].")
    min_instances: int = Field(1, description="Floor, always granted (>= 0).")
    max_instances: int = Field(description="Ceiling (>= min_instances).")
    priority: int = Field(100, description="Lower is served first when the budget is short.")
    instance_cost_per_hour: float = Field(0.0, description="Cost of one instance-hour (>= 0).")
    budget_per_hour: float | None = Field(None, description="This service's own budget per hour.")
    business_metrics: dict[str, MetricSource] = Field(
        default_factory=dict,
        description="Business metrics the rules read (e.g. queue_depth), each forecast hourly.",
    )
    kubernetes: KubernetesScaling | None = Field(
        None, description="Its Deployment: the schedule is stored for apply-scaling."
    )
    auto_scaling_group: str | None = Field(
        None, min_length=1, description="Its EC2 Auto Scaling group: scheduled actions written."
    )

    def scaling(self) -> ServiceScaling:
        """The planner's view; its validator refuses bad numbers naming service and field."""
        return ServiceScaling(
            name=self.name,
            capacity_per_instance_rps=self.capacity_per_instance_rps,
            target_utilisation=self.target_utilisation,
            min_instances=self.min_instances,
            max_instances=self.max_instances,
            priority=self.priority,
            instance_cost_per_hour=self.instance_cost_per_hour,
            budget_per_hour=self.budget_per_hour,
        )

    @model_validator(mode="after")
    def _numbers(self) -> ForecastService:
        self.scaling()  # one place checks the numbers, with messages naming the service
        return self


class CapacityQuantile(StrEnum):
    UPPER_95 = "upper_95"  # yhat_upper: the upper end of the central 95 % interval
    POINT = "point"  # yhat: the point forecast (what AWS predictive scaling plans on)


MODEL_NAMES = ("seasonal_naive_daily", "seasonal_naive_weekly", "prophet")


class ForecastSettings(BaseModel):
    """The part of :class:`LoadForecastParams` one service's forecast needs.

    Each service's task takes this, not the whole parameters: Prefect walks every task argument
    (looking for futures), and 200 tasks each carrying all 200 services spent more time there
    than forecasting (100 ms a task on 2 cores).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    history_days: int
    horizon_hours: int
    holdout_days: int
    models: tuple[str, ...]
    capacity_quantile: CapacityQuantile
    max_stale_hours: int


class LoadForecastParams(BaseModel):
    """Parameters of ``load-forecast`` (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str = Field(
        "default", pattern=_NAME, max_length=63, description="Names the artifacts and events."
    )
    services: tuple[ForecastService, ...] = Field(min_length=1, description="Services to plan.")
    history_days: int = Field(28, ge=7, le=365, description="History read, in days.")
    horizon_hours: int = Field(48, ge=1, le=336, description="Hours planned ahead.")
    holdout_days: int = Field(
        7,
        ge=1,
        le=28,
        description="Most recent days held out to backtest: a week, so the choice sees weekends.",
    )
    models: tuple[str, ...] = Field(
        MODEL_NAMES, min_length=1, description=f"Candidate models, of {', '.join(MODEL_NAMES)}."
    )
    capacity_quantile: CapacityQuantile = Field(
        CapacityQuantile.UPPER_95,
        description="upper_95: plan on the 95 % interval's upper bound; point: on the forecast.",
    )
    business_rules: tuple[BusinessRule, ...] = Field(
        (), description="metric comparison threshold -> multiplier, e.g. queue_depth > 100 x2."
    )
    global_budget_per_hour: float | None = Field(
        None, description="Budget per hour for all services; empty: none."
    )
    max_stale_hours: int = Field(
        6, ge=0, le=48, description="A history ending more hours than this before now is refused."
    )
    dask_address: str | None = Field(
        None, description="Dask scheduler (tcp://host:8786): forecast on that cluster."
    )
    max_workers: int = Field(4, ge=1, le=64, description="Threads forecasting in parallel here.")
    as_of: AwareDatetime | None = Field(
        None, description="Plan as if it were this hour (replays, tests); empty: now."
    )
    dry_run: bool = Field(False, description="Plan and publish; store and write nothing.")

    def settings(self) -> ForecastSettings:
        return ForecastSettings(
            history_days=self.history_days,
            horizon_hours=self.horizon_hours,
            holdout_days=self.holdout_days,
            models=self.models,
            capacity_quantile=self.capacity_quantile,
            max_stale_hours=self.max_stale_hours,
        )

    @field_validator("as_of")
    @classmethod
    def _as_of_hour(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        if (value.minute, value.second, value.microsecond) != (0, 0, 0):
            raise ValueError(f"must be on the hour, got {value.isoformat()}")
        return value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(MODEL_NAMES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"models must not repeat, got {list(value)}")
        return value

    @field_validator("global_budget_per_hour")
    @classmethod
    def _budget(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"must be a number >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _unique(self) -> LoadForecastParams:
        names = [s.name for s in self.services]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"services: names must be unique, repeated: {twice}")
        if self.holdout_days * 24 * 2 > self.history_days * 24:
            raise ValueError(
                f"holdout_days ({self.holdout_days}) must be at most half of history_days "
                f"({self.history_days}): the models need the rest to learn from"
            )
        return self


class ApplyScalingParams(BaseModel):
    """Parameters of ``apply-scaling`` (hourly): which stored schedules to apply."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    services: tuple[str, ...] = Field(
        (), description="Services whose schedule to apply; empty: every stored schedule."
    )
    at: AwareDatetime | None = Field(
        None, description="Apply the plan of this hour (replays, tests); empty: now."
    )
    dry_run: bool = Field(False, description="Show what would change; change nothing.")

    @field_validator("services")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"{name!r} is not a service name (lowercase, digits, dashes)")
        return value


# --------------------------------------------------------------------------- the stored schedule


def schedule_variable_name(service: str) -> str:
    """The Prefect variable holding ``service``'s schedule (names allow dashes)."""
    return f"{SCHEDULE_VARIABLE_PREFIX}{service}"


class StoredSchedule(BaseModel):
    """What ``load-forecast`` leaves for ``apply-scaling``: instances per hour from ``start``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(pattern=_NAME, description="The service.")
    start: AwareDatetime = Field(description="The first planned hour (UTC).")
    instances: tuple[int, ...] = Field(min_length=1, description="Planned instances per hour.")
    kubernetes: KubernetesScaling | None = Field(None, description="Where to apply it.")
    planned_at: AwareDatetime = Field(description="When load-forecast planned it.")
    flow_run_id: str | None = Field(None, description="The load-forecast run that planned it.")

    @field_validator("start", "planned_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("start")
    @classmethod
    def _on_the_hour(cls, value: datetime) -> datetime:
        if (value.minute, value.second, value.microsecond) != (0, 0, 0):
            raise ValueError(f"start must be on the hour, got {value.isoformat()}")
        return value

    @field_validator("instances")
    @classmethod
    def _counts(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 0 for n in value):
            raise ValueError("instances must be >= 0")
        return value

    @property
    def end(self) -> datetime:
        return self.start + len(self.instances) * _HOUR

    def windows(self) -> tuple[ScheduleWindow, ...]:
        return compress_schedule({self.start + i * _HOUR: n for i, n in enumerate(self.instances)})

    @classmethod
    def from_windows(
        cls,
        service: str,
        windows: tuple[ScheduleWindow, ...],
        **fields: object,
    ) -> StoredSchedule:
        """Hourly counts of contiguous ``windows`` (a plan's schedule); a gap is refused."""
        if not windows:
            raise ValueError(f"service {service!r}: an empty schedule cannot be stored")
        ordered = sorted(windows, key=lambda w: w.start)
        counts: list[int] = []
        for before, window in zip([None, *ordered], ordered, strict=False):
            if before is not None and before.end != window.start:
                raise ValueError(
                    f"service {service!r}: schedule has a gap from {before.end.isoformat()}"
                )
            counts.extend([window.instances] * int((window.end - window.start) / _HOUR))
        return cls(service=service, start=ordered[0].start, instances=tuple(counts), **fields)
