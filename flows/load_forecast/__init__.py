"""Runbook ``load-forecast``: nightly forecasts into cost-aware scaling schedules.

Reads like the "Auto-Scaling Based on Business Metrics" recipe, with its flaws fixed (a 60-minute
Prophet forecast is no nightly schedule; one model does not fit every series). In :mod:`.flow`:

1. **Forecast every service in parallel** (:mod:`.forecasting`: one task per service on a
   thread pool, or on a Dask cluster through prefect-dask given ``dask_address``): read its
   history (Prometheus ``query_range``, CloudWatch ``GetMetricData`` or a CSV/Parquet file;
   :mod:`tasks.metric_sources`), clean it (UTC, hourly, gaps, outliers:
   :func:`decisions.forecasting.clean_history`), backtest the candidate models on the most
   recent days by MASE, keep the best, forecast ``horizon_hours`` with its 95 % upper bound.
   A service that fails (source down after bounded retries, NaN-only or too-short history,
   stale history) is reported with its stage and error; the others go on.
2. **Plan** (:func:`decisions.scaling.plan_capacity`): instances per hour from the chosen
   quantile, capacity and target utilisation, times the business multiplier, clamped to
   [min, max]; budgets (per service and global, by priority) cut loudly: every cut is a
   shortfall in the plan, an artifact and the ``runbooks.load-forecast.over-budget`` event.
3. **Publish** (:mod:`.publish`): the forecast-vs-history chart (an image artifact), the
   backtest table, the schedule table, the shortfalls; the event
   ``runbooks.load-forecast.planned``. A dry run stops after this and the AWS diffs.
4. **Store and apply** under the target's lock: each Kubernetes service's schedule goes to the
   Prefect variable ``load-forecast-schedule-<service>`` (:mod:`tasks.schedules`) for the hourly
   ``apply-scaling``; each EC2 Auto Scaling group gets its scheduled actions
   (:func:`tasks.autoscaling.apply_asg_schedule`: a diff, then only the changes; a second run
   with the same plan changes nothing).

The run's outcome is ``failed`` when any service failed (the others are still planned, stored
and applied: the result and the ``planned`` event name the failed ones), ``dry_run`` for a dry
run, else ``succeeded``.
"""

from flows.load_forecast.flow import LoadForecastResult, ServiceOutcome, load_forecast

__all__ = ["LoadForecastResult", "ServiceOutcome", "load_forecast"]
