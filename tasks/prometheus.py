"""Prometheus queries over its HTTP API (``/api/v1/query``, ``/api/v1/query_range``).

Why "no data" is ``None`` and never ``0``: an analysis that reads an empty result (no requests
yet, a label typo, a scrape not done) as ``0`` errors or ``0`` ms of latency passes a version
nobody measured, the most reported analysis bug of Argo Rollouts and Flagger. So an empty vector
and ``NaN`` (e.g. ``rate()`` over no requests divided by itself) are ``None``; the caller counts
it as inconclusive.

Errors: Prometheus answers a bad query with 400 (``bad_data``) or 422 (``execution``) and a JSON
``error``: that is ``InvalidRequestError`` carrying Prometheus' own sentence (it names the
position of the mistake). Timeouts, refused connections and 5xx are ``UnavailableError``. The
GET goes through the ``HttpService`` block's resilient client, which retries it on 502/503/504
and transport errors (one retry layer).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from blocks.http import HttpService
from runbooks.errors import InvalidRequestError, UnavailableError, from_httpx, from_status
from runbooks.kit._run import logger as run_logger
from tasks._http import json_object


class RangeSeries(BaseModel):
    """One series of a range query: its labels and its (unix seconds, value) points, NaN
    points left out (a gap is no data, not zero)."""

    model_config = ConfigDict(frozen=True)

    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]


@task(name="query-prometheus", cache_policy=NO_CACHE)
def query_prometheus(
    prometheus: HttpService, promql: str, *, at: datetime | None = None
) -> float | None:
    """The value of an instant PromQL query (at ``at``, else now); ``None`` when there is no data.

    The query must give one number: a scalar or a vector of at most one series (aggregate with
    ``sum``/``max``... otherwise); several series are refused with ``InvalidRequestError``
    naming them, since picking one would be a guess. ``NaN`` is ``None``; ``+Inf`` is returned
    as is (a histogram quantile past its last bucket is data, and bad).
    """
    params = {"query": promql}
    if at is not None:
        params["time"] = _unix(at, "at")
    data = _get(prometheus, "/api/v1/query", params, promql)
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result)
    if kind != "vector" or not isinstance(result, list):
        raise InvalidRequestError(
            f"the PromQL query {promql!r} gave a {kind} result; use one that gives a number "
            "(an instant vector or a scalar)",
            target=prometheus.target,
        )
    if not result:
        return None
    if len(result) > 1:
        shown = ", ".join(_series_name(item.get("metric")) for item in result[:3])
        raise InvalidRequestError(
            f"the PromQL query {promql!r} gave {len(result)} series ({shown}"
            f"{', ...' if len(result) > 3 else ''}); aggregate it to one, e.g. sum(...)",
            target=prometheus.target,
        )
    return _number(result[0].get("value"))


class Sample(BaseModel):
    """One series of an instant query: its labels and its value."""

    model_config = ConfigDict(frozen=True)

    labels: dict[str, str]
    value: float


@task(name="query-prometheus-vector", cache_policy=NO_CACHE)
def query_vector(prometheus: HttpService, promql: str) -> tuple[Sample, ...]:
    """Every series of an instant PromQL query, now; NaN samples left out (no data, not zero).

    For queries grouped by labels (per caller and dependency); :func:`query_prometheus` is for
    one number.
    """
    data = _get(prometheus, "/api/v1/query", {"query": promql}, promql)
    if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise InvalidRequestError(
            f"the PromQL query {promql!r} gave a {data.get('resultType')} result, expected a "
            "vector",
            target=prometheus.target,
        )
    samples = []
    for item in data["result"]:
        value = _number(item.get("value"))
        if value is not None:
            samples.append(Sample(labels=dict(item.get("metric") or {}), value=value))
    return tuple(samples)


@task(name="query-prometheus-range", cache_policy=NO_CACHE)
def query_range(
    prometheus: HttpService,
    promql: str,
    *,
    start: datetime,
    end: datetime,
    step_seconds: float,
) -> tuple[RangeSeries, ...]:
    """Every series of a range query between ``start`` and ``end``, one point per step.

    An empty tuple means no data. For charts and backtests; an analysis step reads one number
    with :func:`query_prometheus`.
    """
    if step_seconds <= 0:
        raise InvalidRequestError(f"step_seconds must be > 0, got {step_seconds}")
    params = {
        "query": promql,
        "start": _unix(start, "start"),
        "end": _unix(end, "end"),
        "step": f"{step_seconds:g}",
    }
    data = _get(prometheus, "/api/v1/query_range", params, promql)
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise InvalidRequestError(
            f"the PromQL range query {promql!r} gave a {data.get('resultType')} result, "
            "expected a matrix",
            target=prometheus.target,
        )
    series = []
    for item in data["result"]:
        points = []
        for timestamp, value in item.get("values") or []:
            number = _number([timestamp, value])
            if number is not None:
                points.append((float(timestamp), number))
        series.append(RangeSeries(labels=dict(item.get("metric") or {}), points=tuple(points)))
    return tuple(series)


def _get(prometheus: HttpService, path: str, params: dict[str, str], promql: str) -> dict:
    action = f"query Prometheus at {prometheus.base_url} for {promql!r}"
    try:
        with prometheus.get_client() as client:
            response = client.get(path, params=params)
            response.read()
    except httpx.HTTPError as exc:
        raise from_httpx(exc, action, target=prometheus.target) from exc
    document = json_object(response)
    if response.is_success and document.get("status") == "success":
        for warning in document.get("warnings") or []:
            run_logger(__name__).warning("Prometheus warned about %r: %s", promql, warning)
        data = document.get("data")
        if isinstance(data, dict):
            return data
    said = document.get("error")
    if isinstance(said, str) and said:
        detail = f"{document.get('errorType', 'error')}: {said}"
    else:
        detail = response.reason_phrase
    if response.is_success:  # 200 without a success document: not a Prometheus we understand
        raise UnavailableError(
            f"{action} got an answer that is not a Prometheus API response ({detail})",
            status=response.status_code,
            target=prometheus.target,
        )
    raise from_status(response.status_code, action, detail=detail, target=prometheus.target)


def _number(sample: Any) -> float | None:
    """``[timestamp, "value"]`` -> the value; NaN -> ``None``."""
    if not isinstance(sample, list) or len(sample) != 2:
        return None
    value = float(sample[1])
    return None if math.isnan(value) else value


def _unix(when: datetime, field: str) -> str:
    if when.tzinfo is None:
        raise InvalidRequestError(
            f"{field} must be timezone-aware (e.g. datetime.now(UTC)), got {when.isoformat()}"
        )
    return f"{when.timestamp():.3f}"


def _series_name(metric: Any) -> str:
    labels = dict(metric or {})
    name = labels.pop("__name__", "")
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"
