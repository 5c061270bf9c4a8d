"""What ``load-forecast`` shows people: the chart, the backtest and schedule tables, shortfalls.

The chart is a PNG drawn with matplotlib's Agg canvas (no display, no pyplot state, so it is
safe in a worker thread) and published as an image artifact whose URL is a ``data:`` URL: the
image travels inside the artifact, so the UI shows it with no file server and no bucket, and
it stays as long as the run's other artifacts. Panels are capped (:data:`CHART_PANELS`): a night
of 200 services is read through the tables; the chart shows the services that need a look
first (cut by a budget or by ``max_instances``), then the busiest.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from decisions.load_forecast import LoadForecastParams
from decisions.scaling import CapacityPlan
from flows.load_forecast.forecasting import ServiceFailure, ServiceForecast
from runbooks.kit import (
    artifact_key,
    escape_markdown,
    publish_image,
    publish_markdown,
    publish_table,
)
from runbooks.kit._run import in_run

RUNBOOK = "load-forecast"
CHART_PANELS = 6


def chart_png(
    forecasts: Sequence[ServiceForecast], plan: CapacityPlan | None, *, as_of: datetime
) -> bytes:
    """History, forecast, 95 % band and planned capacity of the services worth a look."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chosen = _chart_services(forecasts, plan)
    figure = Figure(figsize=(10, 2.4 * max(1, len(chosen))), dpi=80, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(1, len(chosen)), 1, squeeze=False)[:, 0]
    for ax, forecast in zip(axes, chosen, strict=False):
        past = [t for t, _ in forecast.history]
        ax.plot(past, [v for _, v in forecast.history], color="#555555", lw=1, label="history")
        hours = [h.hour for h in forecast.hours]
        ax.plot(hours, forecast.yhat, color="#1f77b4", lw=1.2, label=f"forecast ({forecast.model})")
        ax.fill_between(hours, forecast.yhat, forecast.upper, color="#1f77b4", alpha=0.2, lw=0)
        if plan is not None and forecast.service in {s.service.name for s in plan.services}:
            service_plan = plan.service(forecast.service)
            svc = service_plan.service
            per_instance = svc.capacity_per_instance_rps * svc.target_utilisation
            ax.step(
                [h.hour for h in service_plan.hours],
                [h.granted * per_instance for h in service_plan.hours],
                where="post",
                color="#d62728",
                lw=1.2,
                label="planned capacity at target utilisation",
            )
        ax.axvline(as_of, color="#999999", lw=0.8, ls="--")
        ax.set_title(f"{forecast.service}: req/s", loc="left", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="upper left")
    if not chosen:
        axes[0].text(0.5, 0.5, "no service was forecast", ha="center", va="center")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _chart_services(
    forecasts: Sequence[ServiceForecast], plan: CapacityPlan | None
) -> list[ServiceForecast]:
    short = {s.service for s in plan.shortfalls} if plan is not None else set()
    ranked = sorted(
        forecasts,
        key=lambda f: (f.service not in short, -max(f.upper, default=0.0), f.service),
    )
    return ranked[:CHART_PANELS]


def publish_chart(
    params: LoadForecastParams,
    forecasts: Sequence[ServiceForecast],
    plan: CapacityPlan | None,
    *,
    as_of: datetime,
) -> None:
    if not in_run():
        return  # drawing is the expensive part: skip it when nothing would be published
    shown = ", ".join(f.service for f in _chart_services(forecasts, plan))
    publish_image(
        artifact_key(RUNBOOK, "chart", params.target),
        chart_png(forecasts, plan, as_of=as_of),
        description=f"Forecast vs history and planned capacity: {shown or 'none'}",
    )


def backtest_rows(
    forecasts: Sequence[ServiceForecast], failures: Sequence[ServiceFailure]
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for f in forecasts:
        row: dict[str, object] = {"service": f.service, "chosen": f.model, "metric": f.metric}
        row.update({name: round(score, 3) for name, score in sorted(f.scores.items())})
        row["history_hours"] = f.history_hours
        row["notes"] = "; ".join(f.notes)
        rows.append(row)
    rows.extend(
        {"service": x.service, "chosen": "FAILED", "metric": x.stage, "notes": x.error}
        for x in failures
    )
    return rows


def schedule_rows(plan: CapacityPlan) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for service_plan in plan.services:
        svc = service_plan.service
        for window in service_plan.schedule():
            rows.append(
                {
                    "service": svc.name,
                    "from": f"{window.start:%Y-%m-%d %H:00}",
                    "until": f"{window.end:%Y-%m-%d %H:00}",
                    "instances": window.instances,
                    "cost_per_hour": round(window.instances * svc.instance_cost_per_hour, 4),
                }
            )
    return rows


def shortfall_markdown(plan: CapacityPlan) -> str:
    if not plan.shortfalls:
        return "# Load forecast: no shortfall\n\nEvery service gets what its forecast asks for."
    lines = [
        f"# Load forecast: {len(plan.shortfalls)} shortfall(s)",
        "",
        "Instances the forecast asks for that are **not** planned (never cut silently):",
        "",
    ]
    lines.extend(f"- {escape_markdown(s.sentence)}" for s in plan.shortfalls[:200])
    if len(plan.shortfalls) > 200:
        lines.append(f"- ... and {len(plan.shortfalls) - 200} more (see the run's result)")
    return "\n".join(lines)


def publish_all(
    params: LoadForecastParams,
    forecasts: Sequence[ServiceForecast],
    failures: Sequence[ServiceFailure],
    plan: CapacityPlan | None,
    *,
    as_of: datetime,
) -> None:
    target = params.target
    publish_table(
        artifact_key(RUNBOOK, "backtest", target),
        backtest_rows(forecasts, failures),
        description="Backtest per service: each model's score on the held-out days, the choice",
    )
    if plan is not None:
        publish_table(
            artifact_key(RUNBOOK, "schedule", target),
            schedule_rows(plan),
            description="Planned instances per service, as schedule windows (UTC)",
        )
        publish_markdown(
            artifact_key(RUNBOOK, "shortfalls", target),
            shortfall_markdown(plan),
            description="What the budgets and max_instances cut",
        )
    publish_chart(params, forecasts, plan, as_of=as_of)
