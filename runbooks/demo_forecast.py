"""The ``load-forecast`` / ``apply-scaling`` step of ``runbooks demo``.

Four weeks of load cannot be waited for, so the demo writes them: synthetic hourly request
rates (:mod:`sandbox.demand`) for the shop's three roles, ending now, where each of the
runbook's sources would find them: ``checkout``'s in CloudWatch on the sandbox's moto server
(``PutMetricData``), ``frontend``'s and ``payments``'s in CSV files, with a ``queue_depth``
history for payments that the recipe's rule (queue depth > 100 -> x2) reads. ``checkout`` and
``payments`` get an HPA (min 2, max 10); ``frontend`` is given an EC2 Auto Scaling group on moto.

Then the two runbooks run the way ``runbooks run`` runs them (blocks loaded by name from the
demo's Prefect server): ``load-forecast`` backtests and forecasts the three, plans 48 h,
stores the Kubernetes schedules and writes the group's scheduled actions; ``apply-scaling``
sets each HPA's ``minReplicas`` to this hour's plan.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbooks import catalogue
from runbooks.catalogue import Launch

Say = Callable[[str], None]

NAMESPACE = "default"
ASG = "shop-frontend"
REGION = "us-east-1"  # the sandbox's aws-target block
CLOUDWATCH = {"namespace": "Shop/Demo", "metric_name": "RequestCount"}
_ROLES = {  # base req/s, peak hour UTC
    "frontend": (120.0, 19),
    "checkout": (60.0, 18),
    "payments": (30.0, 18),
}


def forecast_step(
    target: Any,
    client: Any,
    endpoints: dict[str, str],
    say: Say,
    launch: Launch = catalogue.run_in_process,
) -> dict[str, Any]:
    """Seed histories, run load-forecast then apply-scaling (through ``launch``); their figures.
    The history files live only as long as the step."""
    with tempfile.TemporaryDirectory(prefix="runbooks-demo-history-") as folder:
        return _forecast_step(target, client, endpoints, say, Path(folder), launch)


def _forecast_step(
    target: Any, client: Any, endpoints: dict[str, str], say: Say, folder: Path, launch: Launch
) -> dict[str, Any]:

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    sources = _seed_histories(endpoints["moto"], folder, now)
    for role in ("checkout", "payments"):
        _create_hpa(target, client, role)
    _create_group(endpoints["moto"])
    say("   28 days of load per role: checkout in CloudWatch (moto), frontend and payments in CSV")

    entry = catalogue.runbook("load-forecast")
    params = catalogue.build_params(
        entry,
        overrides={
            "target": "shop",
            "as_of": now.isoformat(),
            "business_rules": [
                {"metric": "queue_depth", "comparison": ">", "threshold": 100, "multiplier": 2}
            ],
            "services": [
                {
                    "name": role,
                    "source": sources[role],
                    "capacity_per_instance_rps": 25,
                    "min_instances": 2,
                    "max_instances": 10,
                    **(
                        {"auto_scaling_group": ASG}
                        if role == "frontend"
                        else {"kubernetes": {"namespace": NAMESPACE, "deployment": role}}
                    ),
                    **(
                        {"business_metrics": {"queue_depth": sources["queue_depth"]}}
                        if role == "payments"
                        else {}
                    ),
                }
                for role in _ROLES
            ],
        },
    )
    blocks = catalogue.load_blocks(entry, {"prometheus": None})
    forecast = launch(entry, params, blocks).unwrap()
    say(f"   load-forecast: {forecast.outcome.value}: {forecast.reason}")

    apply_entry = catalogue.runbook("apply-scaling")
    scaling = launch(
        apply_entry,
        catalogue.build_params(
            apply_entry, overrides={"services": ["checkout", "payments"], "at": now.isoformat()}
        ),
        catalogue.load_blocks(apply_entry, {}),
    ).unwrap()
    say(f"   apply-scaling: {scaling.outcome.value}: {scaling.reason}")
    return _figures(forecast, scaling, sources)


def _figures(forecast: Any, scaling: Any, sources: dict[str, Any]) -> dict[str, Any]:
    changes = {c.service: c for c in scaling.changes}
    rows: dict[str, Any] = {}
    for outcome in forecast.services:
        plan = forecast.plan.service(outcome.service) if forecast.plan else None
        day = [h.granted for h in plan.hours[:24]] if plan else []
        doubled = sum(1 for h in plan.hours if h.multiplier > 1) if plan else 0
        if outcome.auto_scaling is not None:
            diff = outcome.auto_scaling
            applied = f"ASG {diff.group}: {len(diff.create) + len(diff.update)} action(s) written"
        elif outcome.service in changes:
            change = changes[outcome.service]
            applied = f"HPA minReplicas {change.before} -> {change.after}"
        else:
            applied = "-"
        rows[outcome.service] = {
            "source": sources[outcome.service]["kind"],
            "ok": outcome.ok,
            "model": outcome.model,
            "score": round(min(outcome.scores.values()), 3) if outcome.scores else None,
            "metric": outcome.metric,
            "next_24h_instances": f"{min(day)}..{max(day)}" if day else "-",
            "hours_doubled_by_rule": doubled,
            "applied": applied,
            "error": outcome.error,
        }
    return {
        "outcome": forecast.outcome.value,
        "apply_outcome": scaling.outcome.value,
        "services": rows,
    }


def format_forecast(figures: dict[str, Any]) -> str:
    """The forecast step of the demo as a small table."""
    rows = [("load-forecast + apply-scaling", "source", "model (backtest)", "next 24 h", "applied")]
    for service, row in figures["services"].items():
        model = f"{row['model']} ({row['metric']} {row['score']})" if row["ok"] else "FAILED"
        rule = f", x2 for {row['hours_doubled_by_rule']} h" if row["hours_doubled_by_rule"] else ""
        rows.append(
            (f"  {service}", row["source"], model, row["next_24h_instances"] + rule, row["applied"])
        )
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _seed_histories(moto: str, folder: Path, now: datetime) -> dict[str, dict[str, Any]]:
    import boto3

    from sandbox.demand import synthetic_demand, write_history_csv

    histories = {
        role: synthetic_demand(now, days=28, base_rps=base, peak_hour_utc=peak, seed=i)
        for i, (role, (base, peak)) in enumerate(_ROLES.items())
    }
    queue = synthetic_demand(now, days=28, base_rps=70, daily_amplitude=0.8, peak_hour_utc=18)
    cloudwatch = boto3.client("cloudwatch", **_aws(moto))
    data = [
        {
            "MetricName": CLOUDWATCH["metric_name"],
            "Dimensions": [{"Name": "Service", "Value": "checkout"}],
            "Timestamp": when.to_pydatetime(),
            "Value": float(rate) * 3600,  # requests in the hour: the runbook divides by 3600
            "Unit": "Count",
        }
        for when, rate in histories["checkout"].items()
    ]
    for first in range(0, len(data), 500):
        cloudwatch.put_metric_data(
            Namespace=CLOUDWATCH["namespace"], MetricData=data[first : first + 500]
        )
    return {
        "checkout": {
            "kind": "cloudwatch",
            **CLOUDWATCH,
            "dimensions": {"Service": "checkout"},
            "stat": "Sum",
        },
        "frontend": _file(write_history_csv(folder / "frontend.csv", histories["frontend"])),
        "payments": _file(write_history_csv(folder / "payments.csv", histories["payments"])),
        "queue_depth": _file(write_history_csv(folder / "queue_depth.csv", queue)),
    }


def _file(path: Path) -> dict[str, str]:
    return {"kind": "file", "path": str(path)}


def _aws(moto: str) -> dict[str, str]:
    return {
        "region_name": REGION,
        "endpoint_url": moto,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


def _create_hpa(target: Any, client: Any, deployment: str) -> None:
    body = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": deployment},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    target.autoscaling_v2(client).create_namespaced_horizontal_pod_autoscaler(NAMESPACE, body)


def _create_group(moto: str) -> None:
    import boto3

    from sandbox.showcase import create_auto_scaling_group

    ec2 = boto3.client("ec2", **_aws(moto))
    autoscaling = boto3.client("autoscaling", **_aws(moto))
    create_auto_scaling_group(ec2, autoscaling, ASG, region=REGION, min_size=2, max_size=10)
