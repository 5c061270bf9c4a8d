"""Parameters of load-forecast and apply-scaling, and the schedule stored between them: bad input
refused naming the service and field, the schedule round-trips and fits a Prefect variable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from decisions.load_forecast import (
    ApplyScalingParams,
    CloudWatchSource,
    FileSource,
    ForecastService,
    KubernetesScaling,
    LoadForecastParams,
    MetricSource,
    PrometheusSource,
    StoredSchedule,
    schedule_variable_name,
)
from decisions.scaling import ScheduleWindow

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 2, tzinfo=UTC)


def service(name: str = "checkout", **update: object) -> dict[str, object]:
    return {
        "name": name,
        "source": {"kind": "file", "path": "/tmp/x.csv"},
        "capacity_per_instance_rps": 50,
        "max_instances": 10,
        **update,
    }


def test_sources_are_chosen_by_kind() -> None:
    params = LoadForecastParams.model_validate(
        {
            "services": [
                service("a", source={"kind": "prometheus", "query": "sum(rate(x[1h]))"}),
                service("b", source={"kind": "cloudwatch", "namespace": "N", "metric_name": "M"}),
                service("c"),
            ]
        }
    )
    kinds = [type(s.source) for s in params.services]
    assert kinds == [PrometheusSource, CloudWatchSource, FileSource]
    assert params.history_days == 28
    assert params.horizon_hours == 48
    assert params.capacity_quantile.value == "upper_95"


@pytest.mark.parametrize(
    ("update", "words"),
    [
        ({"capacity_per_instance_rps": -5}, ["'checkout'", "capacity_per_instance_rps", "-5"]),
        (
            {"min_instances": 5, "max_instances": 2},
            ["'checkout'", "max_instances", "min_instances"],
        ),
        ({"target_utilisation": 1.5}, ["'checkout'", "target_utilisation"]),
        ({"source": {"kind": "ftp", "path": "x"}}, ["source", "ftp"]),
        ({"name": "Check Out"}, ["name"]),
    ],
)
def test_bad_service_settings_name_the_service_and_field(
    update: dict[str, object], words: list[str]
) -> None:
    with pytest.raises(ValidationError) as caught:
        LoadForecastParams.model_validate({"services": [service(**update)]})
    text = str(caught.value)
    for word in words:
        assert word in text


def test_repeated_service_names_and_unknown_models_are_refused() -> None:
    with pytest.raises(ValidationError, match="repeated: \\['a'\\]"):
        LoadForecastParams.model_validate({"services": [service("a"), service("a")]})
    with pytest.raises(ValidationError, match="unknown model"):
        LoadForecastParams.model_validate({"services": [service()], "models": ["arima"]})
    with pytest.raises(ValidationError, match="half of history_days"):
        LoadForecastParams.model_validate(
            {"services": [service()], "history_days": 7, "holdout_days": 4}
        )
    with pytest.raises(ValidationError, match="global_budget_per_hour"):
        LoadForecastParams.model_validate({"services": [service()], "global_budget_per_hour": -1})


def test_as_of_must_be_an_aware_hour() -> None:
    with pytest.raises(ValidationError, match="on the hour"):
        LoadForecastParams.model_validate({"services": [service()], "as_of": "2026-12-01T02:30Z"})
    with pytest.raises(ValidationError):
        LoadForecastParams.model_validate({"services": [service()], "as_of": "2026-12-01T02:00"})
    params = LoadForecastParams.model_validate(
        {"services": [service()], "as_of": "2026-12-01T03:00+01:00"}
    )
    assert params.as_of == T0


def test_apply_scaling_params_refuse_bad_names() -> None:
    assert ApplyScalingParams().services == ()
    with pytest.raises(ValidationError, match="not a service name"):
        ApplyScalingParams(services=("Bad_Name",))


def stored(instances: tuple[int, ...] = (2, 2, 5, 5, 3)) -> StoredSchedule:
    return StoredSchedule(
        service="checkout",
        start=T0,
        instances=instances,
        kubernetes=KubernetesScaling(deployment="checkout"),
        planned_at=T0 - timedelta(minutes=1),
        flow_run_id="abc",
    )


def test_stored_schedule_round_trips_through_json_and_windows() -> None:
    schedule = stored()
    again = StoredSchedule.model_validate(json.loads(json.dumps(schedule.model_dump(mode="json"))))
    assert again == schedule
    hour = timedelta(hours=1)
    assert schedule.windows() == (
        ScheduleWindow(start=T0, end=T0 + 2 * hour, instances=2),
        ScheduleWindow(start=T0 + 2 * hour, end=T0 + 4 * hour, instances=5),
        ScheduleWindow(start=T0 + 4 * hour, end=T0 + 5 * hour, instances=3),
    )
    rebuilt = StoredSchedule.from_windows(
        "checkout",
        schedule.windows(),
        kubernetes=schedule.kubernetes,
        planned_at=schedule.planned_at,
        flow_run_id="abc",
    )
    assert rebuilt == schedule
    assert schedule.end == T0 + 5 * hour


def test_longest_schedule_fits_a_prefect_variable() -> None:
    schedule = stored(tuple(range(1000, 1336)))  # 336 h of four-digit counts
    assert len(json.dumps(schedule.model_dump(mode="json"))) < 5000
    assert schedule_variable_name("checkout") == "load-forecast-schedule-checkout"


def test_stored_schedule_refuses_gaps_and_bad_hours() -> None:
    hour = timedelta(hours=1)
    with pytest.raises(ValueError, match="gap"):
        StoredSchedule.from_windows(
            "checkout",
            (
                ScheduleWindow(start=T0, end=T0 + hour, instances=2),
                ScheduleWindow(start=T0 + 2 * hour, end=T0 + 3 * hour, instances=2),
            ),
            planned_at=T0,
        )
    with pytest.raises(ValueError, match="empty"):
        StoredSchedule.from_windows("checkout", (), planned_at=T0)
    with pytest.raises(ValidationError, match="on the hour"):
        StoredSchedule(service="x", start=T0 + timedelta(minutes=5), instances=(1,), planned_at=T0)
    with pytest.raises(ValidationError, match=">= 0"):
        StoredSchedule(service="x", start=T0, instances=(1, -1), planned_at=T0)
    other_zone = T0.astimezone(timezone(timedelta(hours=5)))
    assert StoredSchedule(service="x", start=other_zone, instances=(1,), planned_at=T0).start == T0


def test_service_scaling_view_carries_every_number() -> None:
    s = ForecastService.model_validate(
        service(priority=3, instance_cost_per_hour=0.5, budget_per_hour=4, min_instances=2)
    )
    scaling = s.scaling()
    assert (scaling.priority, scaling.instance_cost_per_hour, scaling.budget_per_hour) == (
        3,
        0.5,
        4,
    )
    assert (scaling.min_instances, scaling.max_instances) == (2, 10)


def test_sources_are_typed_parameters() -> None:
    adapter = TypeAdapter(MetricSource)
    assert isinstance(adapter.validate_python({"kind": "file", "path": "a.parquet"}), FileSource)
    prom = adapter.validate_python({"kind": "prometheus", "query": "sum(up)"})
    assert prom.value_at == "hour_end"
    cw = adapter.validate_python({"kind": "cloudwatch", "namespace": "N", "metric_name": "M"})
    assert (cw.stat, cw.per_second, cw.dimensions) == ("Sum", True, {})
    refused = [
        ({"kind": "file", "path": "history.xlsx"}, "path must end in .csv or .parquet"),
        ({"kind": "file", "path": "a.csv", "value_column": "timestamp"}, "must differ"),
        ({"kind": "prometheus", "query": "  "}, "query must be a PromQL expression"),
        ({"kind": "prometheus", "query": "up", "value_at": "middle"}, "value_at"),
        ({"kind": "prometheus", "query": "up", "step": 60}, "step"),
        (
            {"kind": "cloudwatch", "namespace": "N", "metric_name": "M", "dimensions": {"a": ""}},
            "dimensions need a name and a value",
        ),
        ({"kind": "graphite", "query": "x"}, "kind"),
    ]
    for data, words in refused:
        with pytest.raises(ValidationError, match=words):
            adapter.validate_python(data)
    for model in (PrometheusSource, CloudWatchSource, FileSource):
        assert model.model_config.get("frozen") is True
        assert all(field.description for field in model.model_fields.values())
