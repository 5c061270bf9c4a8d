"""The ``load-forecast`` flow on a Prefect test server: histories from files (and a Prometheus
that is down), per-service failure isolation, budgets, artifacts, events, the stored schedules,
the Dask path on a real local Dask cluster, and a dry run that stores nothing.

Seasonal naive models keep most runs fast and exactly reproducible; one test runs the default
candidates, Prophet included, to show the choice by backtest.
"""

from __future__ import annotations

import base64
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prefect_reads import artifact_data, event_names

from blocks.http import HttpService
from decisions.load_forecast import LoadForecastParams, StoredSchedule
from flows.load_forecast import load_forecast
from runbooks.kit import Outcome
from sandbox.demand import synthetic_demand, write_history_csv
from tasks.schedules import delete_schedule, read_schedules

AS_OF = datetime(2026, 11, 30, 2, tzinfo=UTC)  # a nightly run at 02:00 UTC
NAIVE = ("seasonal_naive_daily", "seasonal_naive_weekly")


@pytest.fixture
def target() -> str:
    return f"lf-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("histories")
    busy = synthetic_demand(AS_OF, days=28, base_rps=400, seed=1)
    quiet = synthetic_demand(AS_OF, days=28, base_rps=40, seed=2, peak_hour_utc=9)
    short = synthetic_demand(AS_OF, days=3, base_rps=40, seed=3)
    nan_only = busy.copy()
    nan_only[:] = np.nan
    return {
        "busy": write_history_csv(folder / "busy.csv", busy),
        "quiet": write_history_csv(folder / "quiet.csv", quiet),
        "short": write_history_csv(folder / "short.csv", short),
        "nan": write_history_csv(folder / "nan.csv", nan_only),
    }


def svc(name: str, path: Path, **update: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"kind": "file", "path": str(path)},
        "capacity_per_instance_rps": 50,
        "target_utilisation": 0.7,
        "min_instances": 2,
        "max_instances": 40,
        **update,
    }


def params(target: str, services: list[dict[str, Any]], **update: Any) -> LoadForecastParams:
    return LoadForecastParams.model_validate(
        {"target": target, "services": services, "as_of": AS_OF, "models": NAIVE, **update}
    )


def expected_instances(path: Path, hours: int = 48) -> list[int]:
    """What the plan must be: the weekly naive repeats last week's hours (its upper bound adds
    the 95th percentile of absolute week-on-week changes); ceil(rps / (50 x 0.7)) in [2, 40]."""
    frame = pd.read_csv(path)
    values = frame["value"].to_numpy()
    week = values[-168:]
    residuals = np.abs(values[168:] - values[:-168])
    upper = week[:hours] + float(np.quantile(residuals, 0.95))
    return [min(40, max(2, int(np.ceil(v / 35 - 1e-9)))) for v in upper]


def test_plans_the_good_services_and_names_the_bad_ones(
    prefect_server: str, histories: dict[str, Path], target: str
) -> None:
    result = load_forecast(
        params=params(
            target,
            [
                svc("busy", histories["busy"], kubernetes={"deployment": "busy"}),
                svc("quiet", histories["quiet"]),
                svc("short", histories["short"]),
                svc("nan", histories["nan"]),
            ],
        )
    )
    assert result.outcome is Outcome.FAILED
    assert result.failed == ("short", "nan")
    by_name = {o.service: o for o in result.services}
    assert by_name["short"].stage == "clean"
    assert "service 'short'" in (by_name["short"].error or "")
    assert "3.0 days" in (by_name["short"].error or "")
    assert by_name["nan"].stage == "clean"
    assert "no usable values" in (by_name["nan"].error or "")
    assert result.reason == "2 of 4 service(s) failed (short, nan); the others were planned"

    busy = by_name["busy"]
    assert busy.ok
    assert busy.model in NAIVE
    assert set(busy.scores) == set(NAIVE)
    assert result.plan is not None
    assert [s.service.name for s in result.plan.services] == ["busy", "quiet"]
    granted = [h.granted for h in result.plan.service("busy").hours]
    assert len(granted) == 48
    assert result.plan.service("busy").hours[0].hour == AS_OF
    if busy.model == "seasonal_naive_weekly":
        assert granted == expected_instances(histories["busy"])

    # the schedule is stored for apply-scaling (busy has a Deployment; quiet has none)
    schedules, errors = read_schedules(("busy",))
    assert not errors
    stored = schedules["busy"]
    assert isinstance(stored, StoredSchedule)
    assert stored.start == AS_OF
    assert list(stored.instances) == granted
    assert stored.kubernetes is not None
    assert stored.kubernetes.deployment == "busy"
    assert busy.schedule_stored
    assert not by_name["quiet"].schedule_stored

    # what an operator sees
    assert "runbooks.load-forecast.planned" in event_names("load-forecast", target)
    backtest = artifact_data("load-forecast", "backtest", target)
    assert "FAILED" in backtest
    assert "no usable values" in backtest
    schedule = artifact_data("load-forecast", "schedule", target)
    assert '"service": "busy"' in schedule
    chart = artifact_data("load-forecast", "chart", target)
    assert chart.startswith("data:image/png;base64,")
    assert base64.b64decode(chart.split(",", 1)[1]).startswith(b"\x89PNG")
    delete_schedule("busy")


def test_over_budget_reports_the_shortfall_and_still_plans(
    prefect_server: str, histories: dict[str, Path], target: str
) -> None:
    result = load_forecast(
        params=params(
            target,
            [
                svc("busy", histories["busy"], priority=1, instance_cost_per_hour=1.0),
                svc("quiet", histories["quiet"], priority=2, instance_cost_per_hour=1.0),
            ],
            global_budget_per_hour=12.0,
        )
    )
    assert result.outcome is Outcome.SUCCEEDED
    assert result.over_budget
    plan = result.plan
    assert plan is not None
    assert plan.budget_shortfalls
    for total in plan.totals:
        assert total.cost_per_hour <= 12.0 + 1e-9
    # the important service is served first: quiet keeps only its minimum when money is short
    squeezed = [s for s in plan.budget_shortfalls if s.service == "quiet"]
    assert squeezed
    assert all(plan.service("quiet").at(s.hour).granted == 2 for s in squeezed)
    names = event_names("load-forecast", target)
    assert "runbooks.load-forecast.over-budget" in names
    assert "short" in artifact_data("load-forecast", "shortfalls", target)


def test_a_metric_source_that_is_down_fails_only_its_service(
    prefect_server: str, histories: dict[str, Path], target: str
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    prometheus = HttpService(base_url=f"http://127.0.0.1:{closed}", timeout_seconds=1)
    result = load_forecast(
        params=params(
            target,
            [
                svc("busy", histories["busy"]),
                svc(
                    "metrics-down",
                    histories["busy"],
                    source={"kind": "prometheus", "query": "sum(rate(x[1h]))"},
                ),
            ],
        ),
        prometheus=prometheus,
    )
    assert result.failed == ("metrics-down",)
    down = next(o for o in result.services if o.service == "metrics-down")
    assert down.stage == "fetch"
    assert "127.0.0.1" in (down.error or "")
    assert result.plan is not None
    assert [s.service.name for s in result.plan.services] == ["busy"]


def test_dry_run_publishes_but_stores_nothing(
    prefect_server: str, histories: dict[str, Path], target: str
) -> None:
    name = f"dry-{uuid.uuid4().hex[:6]}"
    result = load_forecast(
        params=params(
            target,
            [svc(name, histories["busy"], kubernetes={"deployment": name})],
            dry_run=True,
        )
    )
    assert result.outcome is Outcome.DRY_RUN
    assert result.plan is not None
    _, errors = read_schedules((name,))
    assert name in errors
    assert artifact_data("load-forecast", "schedule", target)


def test_prophet_competes_and_the_backtest_chooses(
    prefect_server: str, histories: dict[str, Path], target: str
) -> None:
    trend = synthetic_demand(AS_OF, days=28, base_rps=100, trend_per_week=0.25, seed=4)
    path = write_history_csv(histories["busy"].parent / "trend.csv", trend)
    result = load_forecast(
        params=LoadForecastParams.model_validate(
            {"target": target, "services": [svc("trend", path)], "as_of": AS_OF}
        )
    )
    assert result.outcome is Outcome.SUCCEEDED
    only = result.services[0]
    assert set(only.scores) == {"seasonal_naive_daily", "seasonal_naive_weekly", "prophet"}
    assert only.model == min(only.scores, key=lambda m: only.scores[m])
    assert only.metric == "MASE"


def test_the_dask_path_plans_the_same_as_threads(
    prefect_server: str, histories: dict[str, Path], target: str
) -> None:
    from distributed import LocalCluster

    services = [svc("busy", histories["busy"]), svc("quiet", histories["quiet"])]
    here = load_forecast(params=params(target, services))
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        there = load_forecast(
            params=params(target, services, dask_address=cluster.scheduler_address)
        )
    assert there.outcome is Outcome.SUCCEEDED
    assert here.plan is not None
    assert there.plan is not None
    assert here.plan.services == there.plan.services


def test_a_stale_history_is_refused_naming_the_service(
    prefect_server: str, histories: dict[str, Path], target: str
) -> None:
    later = AS_OF + timedelta(hours=12)
    result = load_forecast(
        params=LoadForecastParams.model_validate(
            {
                "target": target,
                "services": [svc("busy", histories["busy"])],
                "as_of": later,
                "models": NAIVE,
            }
        )
    )
    assert result.failed == ("busy",)
    assert "max_stale_hours" in (result.services[0].error or "")


def test_business_rules_multiply_the_hours_their_metric_is_forecast_over_threshold(
    prefect_server: str, histories: dict[str, Path], target: str
) -> None:
    """The recipe's queue depth > 100 -> x2: the queue depth is read and forecast like the
    load, and only the hours it is forecast above 100 are doubled."""
    queue = synthetic_demand(AS_OF, days=28, base_rps=80, daily_amplitude=0.9, noise=0.0, seed=5)
    path = write_history_csv(histories["busy"].parent / "queue.csv", queue)
    result = load_forecast(
        params=params(
            target,
            [
                svc(
                    "payments",
                    histories["quiet"],
                    business_metrics={"queue_depth": {"kind": "file", "path": str(path)}},
                )
            ],
            business_rules=[
                {"metric": "queue_depth", "comparison": ">", "threshold": 100, "multiplier": 2}
            ],
        )
    )
    assert result.ok, result.reason
    assert result.plan is not None
    hours = result.plan.service("payments").hours
    doubled = [h for h in hours if h.multiplier == 2]
    plain = [h for h in hours if h.multiplier == 1]
    assert doubled
    assert plain
    assert all(h.rule == "queue_depth > 100 -> x2" for h in doubled)
    for h in doubled:
        base = int(np.ceil(h.forecast_rps / 35 - 1e-9))
        assert h.demand == base * 2
    # the doubled hours are the queue's busy hours: its forecast repeats last week's shape
    busy_hours = {h.hour.hour for h in doubled}
    assert busy_hours <= {t.hour for t, v in queue.items() if v > 100}
