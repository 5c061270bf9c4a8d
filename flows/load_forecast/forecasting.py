"""One service's forecast (fetch, clean, backtest, choose, forecast) and all of them in parallel.

Each service is one Prefect task, so the UI shows which service failed and why, and one service's
failure (its metric source down after the block's bounded retries, a NaN-only or too-short
history, a history that stopped hours ago) is that service's alone: the task fails, the others
complete, and the flow plans the rest.

Parallelism is a task runner, chosen per run: threads on this machine by default (Prophet's fit
runs in a cmdstan subprocess and pandas releases the GIL for its numeric work, so threads keep
two cores busy), or, given ``dask_address``, the workers of that Dask cluster through
prefect-dask: the way past one machine. The runner is entered here rather than set on the flow,
because a flow's runner is fixed when it starts and this one depends on a parameter; the tasks
still belong to the ``load-forecast`` run. Everything a task takes and returns is a pydantic
model or a block, so it pickles to a Dask worker and back.

Cost: what Prefect does per task is small but not free (creating the task run, its states, and
walking every argument and result for futures), so a task takes one service and the few settings
it needs (:class:`~decisions.load_forecast.ForecastSettings`), never the whole parameters.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from blocks.aws import AwsTarget
from blocks.http import HttpService
from decisions.forecasting import (
    HOURS_PER_DAY,
    SeasonalNaive,
    choose_model,
    clean_history,
    score_models,
)
from decisions.load_forecast import (
    CapacityQuantile,
    CloudWatchSource,
    FileSource,
    ForecastService,
    ForecastSettings,
    LoadForecastParams,
    MetricSource,
    PrometheusSource,
)
from decisions.scaling import HourForecast
from runbooks.errors import InvalidRequestError, PermanentError
from tasks.forecast_models import models_named
from tasks.metric_sources import (
    read_cloudwatch_history,
    read_file_history,
    read_prometheus_history,
)

CHART_DAYS = 7
"""History drawn before the forecast in the chart: a week shows both seasons."""


class ForecastFailed(PermanentError):
    """One service could not be forecast; ``stage`` says where (fetch, clean, backtest...)."""

    def __init__(self, service: str, stage: str, message: str) -> None:
        super().__init__(f"service {service!r}: {stage}: {message}", target=service)
        self.service = service
        self.stage = stage
        self.detail = message

    def __reduce__(self) -> tuple[type[ForecastFailed], tuple[str, str, str]]:
        # Rebuilt from its own arguments when it comes back from a Dask worker (the default
        # rebuilds from ``args``, the formatted message, which this __init__ does not take).
        return (ForecastFailed, (self.service, self.stage, self.detail))


class ServiceForecast(BaseModel):
    """What one service's task returns: the model chosen, its scores, and the hours ahead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    model: str = Field(description="The model chosen by backtest.")
    metric: str = Field(description="MASE, or MAE where MASE is undefined (a repeating series).")
    scores: dict[str, float] = Field(description="Each candidate's backtest score.")
    history_hours: int = Field(description="Hours of cleaned history the model learnt from.")
    history: tuple[tuple[datetime, float], ...] = Field(description="Its last week, for charts.")
    hours: tuple[HourForecast, ...] = Field(description="Planned-on values, hour by hour.")
    yhat: tuple[float, ...] = Field(description="Point forecast per hour.")
    upper: tuple[float, ...] = Field(description="Upper end of the 95 % interval per hour.")
    notes: tuple[str, ...] = ()


class ServiceFailure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    stage: str
    error: str


def read_history(
    source: MetricSource,
    *,
    start: datetime,
    end: datetime,
    prometheus: HttpService | None,
    aws: AwsTarget | None,
) -> pd.Series:
    """The raw hourly history of ``source`` in [start, end) from the block it needs."""
    if isinstance(source, PrometheusSource):
        if prometheus is None:
            raise InvalidRequestError("a Prometheus source needs the prometheus block")
        return read_prometheus_history(prometheus, source, start=start, end=end)
    if isinstance(source, CloudWatchSource):
        if aws is None:
            raise InvalidRequestError("a CloudWatch source needs the aws block")
        return read_cloudwatch_history(aws, source, start=start, end=end)
    if isinstance(source, FileSource):
        return read_file_history(source, start=start, end=end)
    raise TypeError(f"unknown metric source {type(source).__name__}")


def forecast_one(
    service: ForecastService,
    settings: ForecastSettings,
    *,
    as_of: datetime,
    prometheus: HttpService | None,
    aws: AwsTarget | None,
) -> ServiceForecast:
    """Forecast ``service`` for the ``settings.horizon_hours`` from ``as_of`` (an hour, UTC)."""
    name = service.name
    start = as_of - timedelta(days=settings.history_days)
    stage = "fetch"
    try:
        raw = read_history(service.source, start=start, end=as_of, prometheus=prometheus, aws=aws)
        stage = "clean"
        history = _clean(raw, name, settings)
        stale, horizon = _horizon(history, as_of, settings)
        stage = "backtest"
        models = models_named(settings.models)
        scored = score_models(history, models, holdout_days=settings.holdout_days)
        chosen = choose_model(scored.scores, models)
        stage = "forecast"
        frame = chosen.fit(history).forecast(horizon).iloc[stale:]
        stage = "business metrics"
        metrics = {
            metric: _metric_forecast(f"{name}.{metric}", source, settings, as_of, prometheus, aws)
            for metric, source in service.business_metrics.items()
        }
    except ForecastFailed:
        raise
    except Exception as exc:
        raise ForecastFailed(name, stage, str(exc)) from exc
    column = "yhat_upper" if settings.capacity_quantile is CapacityQuantile.UPPER_95 else "yhat"
    hours = tuple(
        HourForecast(
            hour=when.to_pydatetime(),
            value=float(frame.at[when, column]),
            metrics={m: float(v[when]) for m, v in metrics.items() if when in v.index},
        )
        for when in frame.index
    )
    tail = history.iloc[-CHART_DAYS * HOURS_PER_DAY :]
    notes = []
    if scored.metric != "MASE":
        notes.append("MASE undefined (the history repeats exactly every day): ranked by MAE")
    if stale:
        notes.append(f"history ends {stale} hour(s) before the plan starts: forecast across")
    return ServiceForecast(
        service=name,
        model=chosen.name,
        metric=scored.metric,
        scores=scored.scores,
        history_hours=len(history),
        history=tuple((t.to_pydatetime(), float(v)) for t, v in tail.items()),
        hours=hours,
        yhat=tuple(float(v) for v in frame["yhat"]),
        upper=tuple(float(v) for v in frame["yhat_upper"]),
        notes=tuple(notes),
    )


def _clean(raw: pd.Series, name: str, settings: ForecastSettings) -> pd.Series:
    # The models need the holdout plus a week before it (the weekly naive's two seasons would
    # need more; backtest leaves out a model the history cannot serve).
    return clean_history(raw, service=name, min_days=max(7, 2 * settings.holdout_days))


def _horizon(history: pd.Series, as_of: datetime, settings: ForecastSettings) -> tuple[int, int]:
    """Hours between the history's end and ``as_of`` (forecast across them), and the horizon."""
    last = history.index[-1]
    stale = int((pd.Timestamp(as_of) - last) / pd.Timedelta(hours=1)) - 1
    if stale > settings.max_stale_hours:
        raise ValueError(
            f"history ends at {last:%Y-%m-%d %H:00} UTC, {stale} hour(s) before the plan starts "
            f"(max_stale_hours is {settings.max_stale_hours}): is the metric still reported?"
        )
    return stale, settings.horizon_hours + stale


def _metric_forecast(
    name: str,
    source: MetricSource,
    settings: ForecastSettings,
    as_of: datetime,
    prometheus: HttpService | None,
    aws: AwsTarget | None,
) -> pd.Series:
    """A business metric's point forecast per hour: seasonal naive, the better by backtest.

    Point, not upper bound: a rule's threshold (queue depth > 100) is crossed or not; planning
    on the bound would fire rules on hours that are only possibly busy. Seasonal naive only:
    a rule needs the shape of the day, and Prophet per metric would double the night's fits.
    """
    start = as_of - timedelta(days=settings.history_days)
    raw = read_history(source, start=start, end=as_of, prometheus=prometheus, aws=aws)
    history = _clean(raw, name, settings)
    stale, horizon = _horizon(history, as_of, settings)
    models = (SeasonalNaive(HOURS_PER_DAY), SeasonalNaive())
    scored = score_models(history, models, holdout_days=settings.holdout_days)
    chosen = choose_model(scored.scores, models)
    return chosen.fit(history).forecast(horizon)["yhat"].iloc[stale:]


@task(
    name="forecast-service",
    task_run_name="forecast-{service.name}",
    cache_policy=NO_CACHE,
)
def forecast_service(
    service: ForecastService,
    settings: ForecastSettings,
    as_of: datetime,
    prometheus: HttpService | None = None,
    aws: AwsTarget | None = None,
) -> ServiceForecast:
    return forecast_one(service, settings, as_of=as_of, prometheus=prometheus, aws=aws)


def run_forecasts(
    params: LoadForecastParams,
    as_of: datetime,
    prometheus: HttpService | None,
    aws: AwsTarget | None,
) -> list[ServiceForecast | ServiceFailure]:
    """Every service's forecast, one task each, on threads here or on the Dask cluster at
    ``dask_address``; a failed task is returned as its service's :class:`ServiceFailure`."""
    settings = params.settings()
    runner: Any
    if params.dask_address:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=params.dask_address)
    else:
        runner = ThreadPoolTaskRunner(max_workers=params.max_workers)
    out: list[ServiceForecast | ServiceFailure] = []
    with runner:
        futures = [
            runner.submit(
                forecast_service,
                {
                    "service": s,
                    "settings": settings,
                    "as_of": as_of,
                    "prometheus": prometheus,
                    "aws": aws,
                },
            )
            for s in params.services
        ]
        wait(futures)
        for service, future in zip(params.services, futures, strict=True):
            result: Any = future.result(raise_on_failure=False)
            if isinstance(result, ServiceForecast):
                out.append(result)
            elif isinstance(result, ForecastFailed):
                out.append(
                    ServiceFailure(service=service.name, stage=result.stage, error=str(result))
                )
            else:
                out.append(ServiceFailure(service=service.name, stage="task", error=str(result)))
    return out
