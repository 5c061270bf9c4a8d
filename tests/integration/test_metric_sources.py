"""History readers of ``load-forecast`` against real servers: the same 28 days everywhere.

One realistic series (a working-day peak at 14:00 UTC, quiet nights, quieter weekends, noise)
is stored three ways:

- in a **real Prometheus**: a counter scraped every 5 minutes, written as OpenMetrics, turned
  into TSDB blocks by Debian's ``promtool tsdb create-blocks-from openmetrics`` and served by a
  ``prometheus`` process of this module (long retention, so the backfilled blocks stay);
- in **CloudWatch on the sandbox's moto server**: one ``PutMetricData`` datum per hour (the
  hour's request count) with its historical timestamp;
- in **CSV and Parquet files** of req/s.

The acceptance test of issue 6: the readers give identical series, and
``clean_history -> SeasonalNaive -> plan_capacity`` gives equal plans. Equality is exact by
construction: a counter sampled on the hour boundaries makes Prometheus' ``rate(x[1h])`` the
hour's count / 3600 (no extrapolation), which is what the CloudWatch reader computes from the
hour's ``Sum`` and what the files hold.

What moto cannot do (pages, per-result ``StatusCode``, a 500) comes from a loopback stand-in
speaking CloudWatch's JSON protocol (:class:`FakeCloudWatch`). botocore's retry delays are
zeroed by the suite's ``_no_backoff_sleep``, as ours are.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from blocks.aws import AwsTarget
from blocks.http import HttpService
from decisions.forecasting import SeasonalNaive, clean_history
from decisions.load_forecast import CloudWatchSource, FileSource, PrometheusSource
from decisions.scaling import CapacityPlan, HourForecast, ServiceScaling, plan_capacity
from runbooks import resilience
from runbooks.errors import AuthError, InvalidRequestError, NotFoundError, UnavailableError
from sandbox.stack import start_prometheus, stop_process
from tasks.metric_sources import (
    HistoryFileError,
    evaluation_chunks,
    read_cloudwatch_history,
    read_file_history,
    read_prometheus_history,
)

START = datetime(2026, 10, 26, tzinfo=UTC)  # a Monday
DAYS = 28
HOURS = DAYS * 24
END = START + timedelta(days=DAYS)
SCRAPE_SECONDS = 300
CHECKOUT_QUERY = 'sum(rate(http_requests_total{service="checkout"}[1h]))'
SERVICE = ServiceScaling(
    name="checkout",
    capacity_per_instance_rps=10,
    target_utilisation=0.7,
    min_instances=2,
    max_instances=30,
    instance_cost_per_hour=0.12,
    budget_per_hour=1.2,  # 10 instances: the weekday peaks are cut
)


def _requests_per_hour(scale: float) -> np.ndarray:
    """Requests served in each hour of the 28 days (integers, as a counter counts them)."""
    rng = np.random.default_rng(6)
    hours = np.arange(HOURS)
    hour_of_day = hours % 24
    weekend = (hours // 24 + START.weekday()) % 7 >= 5
    daily = 0.25 + 0.75 * np.exp(-(((hour_of_day - 14) / 4.5) ** 2))
    weekly = np.where(weekend, 0.6, 1.0)
    rate = 80 * scale * daily * weekly * (1 + 0.05 * rng.standard_normal(HOURS))
    # whole multiples of the 12 scrapes of an hour: every 5-minute increment is equal, so even
    # a Prometheus that extrapolates from 55 minutes of samples (3.x's left-open window)
    # finds the hour's count, up to float rounding
    return (np.rint(rate * 3600 / 12) * 12).astype(np.int64)


CHECKOUT = _requests_per_hour(1.0)
PAYMENTS = _requests_per_hour(0.4)


def expected(first: datetime = START, last: datetime = END) -> pd.Series:
    """The checkout history in req/s, hours ``[first, last)``: what every reader must return."""
    full = pd.Series(CHECKOUT / 3600, index=pd.date_range(START, periods=HOURS, freq="h"))
    full.name = "value"
    return full[(full.index >= first) & (full.index < last)]


def assert_equal(actual: pd.Series, reference: pd.Series, name: str = "history") -> None:
    """Same hours, same values to the last bit."""
    pd.testing.assert_series_equal(actual, reference, check_exact=True, check_freq=False, obj=name)


def assert_close(actual: pd.Series, reference: pd.Series, name: str = "history") -> None:
    """Same hours, values equal but for the last bit: Prometheus computes a rate as
    ``count * (1 / 3600)``, which is not always the double ``count / 3600``."""
    pd.testing.assert_series_equal(
        actual, reference, rtol=1e-12, atol=0, check_exact=False, check_freq=False, obj=name
    )


def _decided(plan: CapacityPlan) -> tuple[Any, ...]:
    """What a plan decides (instances, costs, cuts, windows), without the forecasts behind it."""
    hours = [
        (h.hour, h.demand, h.wanted, h.granted, h.multiplier, h.cost_per_hour, h.over_budget)
        for service in plan.services
        for h in service.hours
    ]
    windows = [service.schedule() for service in plan.services]
    return hours, plan.totals, plan.shortfalls, windows


def _plan(history: pd.Series) -> CapacityPlan:
    clean = clean_history(history, service=SERVICE.name)
    upper = SeasonalNaive().fit(clean).forecast(48)["yhat_upper"]
    hours = [HourForecast(hour=hour.to_pydatetime(), value=float(v)) for hour, v in upper.items()]
    return plan_capacity([SERVICE], {SERVICE.name: hours})


# --------------------------------------------------------------------------- Prometheus


def _openmetrics(series: dict[str, np.ndarray]) -> str:
    """A counter per service, sampled every 5 minutes from START to END, boundaries included."""
    lines = ["# HELP http_requests Requests served.", "# TYPE http_requests counter"]
    steps = 3600 // SCRAPE_SECONDS
    begin = int(START.timestamp())
    for service, counts in series.items():
        total = 0
        lines.append(f'http_requests_total{{service="{service}"}} 0 {begin}')
        for hour, count in enumerate(counts):
            base, extra = divmod(int(count), steps)
            for step in range(steps):
                total += base + (step < extra)
                at = begin + hour * 3600 + (step + 1) * SCRAPE_SECONDS
                lines.append(f'http_requests_total{{service="{service}"}} {total} {at}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpService]:
    """A Prometheus of its own on a TSDB backfilled with promtool; stopped after the module."""
    promtool, binary = shutil.which("promtool"), shutil.which("prometheus")
    if promtool is None or binary is None:
        pytest.skip("prometheus and promtool are not installed (apt-get install prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    source = folder / "history.om"
    source.write_text(_openmetrics({"checkout": CHECKOUT, "payments": PAYMENTS}))
    tsdb = folder / "tsdb"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(tsdb)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    config = folder / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    process, url = start_prometheus(
        binary,
        config,
        tsdb,
        folder / "prometheus.log",
        "--storage.tsdb.retention.time=3650d",  # keep the backfilled weeks
    )
    try:
        yield HttpService(base_url=url, read_timeout_seconds=30)
    finally:
        stop_process(process)


def test_prometheus_reads_the_backfilled_hours(prometheus) -> None:
    history = read_prometheus_history(
        prometheus, PrometheusSource(query=CHECKOUT_QUERY), start=START, end=END
    )
    assert_close(history, expected())
    assert str(history.index.tz) == "UTC"


def test_prometheus_hour_start_files_the_value_under_its_evaluation_hour(prometheus) -> None:
    """rate(x[1h]) at t is the hour before t; read as hour_start, each hour gets the previous
    hour's rate and the first hour (no hour before it in the data) is absent."""
    source = PrometheusSource(query=CHECKOUT_QUERY, value_at="hour_start")
    history = read_prometheus_history(prometheus, source, start=START, end=END)
    shifted = expected(START, END - timedelta(hours=1)).shift(1, freq="h")
    assert_close(history, shifted)


def test_prometheus_window_inside_and_beyond_the_data(prometheus) -> None:
    source = PrometheusSource(query=CHECKOUT_QUERY)
    first, last = START + timedelta(days=3, hours=5), START + timedelta(days=4, hours=2)
    inside = read_prometheus_history(prometheus, source, start=first, end=last)
    assert_close(inside, expected(first, last))
    wide = read_prometheus_history(
        prometheus, source, start=START - timedelta(days=2), end=END + timedelta(days=2)
    )
    assert_close(wide, expected())


def test_prometheus_no_series_is_an_empty_history(prometheus) -> None:
    source = PrometheusSource(query='sum(rate(http_requests_total{service="nope"}[1h]))')
    history = read_prometheus_history(prometheus, source, start=START, end=END)
    assert history.empty
    assert history.name == "value"
    assert history.dtype == float
    assert str(history.index.tz) == "UTC"
    with pytest.raises(ValueError, match="'nope': history has no usable values"):
        clean_history(history, service="nope")


def test_prometheus_several_series_are_refused(prometheus) -> None:
    source = PrometheusSource(query="rate(http_requests_total[1h])")
    with pytest.raises(InvalidRequestError, match="gave 2 series") as caught:
        read_prometheus_history(prometheus, source, start=START, end=END)
    message = str(caught.value)
    assert 'service="checkout"' in message
    assert 'service="payments"' in message
    assert "sum(...) with no 'by' clause" in message


def test_prometheus_bad_promql_carries_prometheus_sentence(prometheus) -> None:
    source = PrometheusSource(query="sum(rate(")
    with pytest.raises(InvalidRequestError, match=r"bad_data: .*parse error") as caught:
        read_prometheus_history(prometheus, source, start=START, end=END)
    assert caught.value.status == 400


def test_prometheus_down_is_unavailable_after_bounded_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = HttpService(base_url=f"http://127.0.0.1:{port}")
    with resilience.testing() as waits, pytest.raises(UnavailableError) as caught:
        read_prometheus_history(down, PrometheusSource(query=CHECKOUT_QUERY), start=START, end=END)
    assert f"Prometheus at http://127.0.0.1:{port}" in str(caught.value)
    assert CHECKOUT_QUERY in str(caught.value)
    assert "ConnectError" in str(caught.value)
    attempts = resilience.ResiliencePolicy().backoff.max_attempts
    assert len(waits) == attempts - 1  # retried, bounded, and never slept


def test_queries_are_split_under_prometheus_point_limit() -> None:
    assert list(evaluation_chunks(0, 5, 2)) == [(0, 1), (2, 3), (4, 4)]
    assert list(evaluation_chunks(10, 14, 10)) == [(10, 13)]
    assert list(evaluation_chunks(0, 20_000, 10_000)) == [(0, 9_999), (10_000, 19_999)]


# --------------------------------------------------------------------------- CloudWatch


def _aws(endpoint: str, **settings: Any) -> AwsTarget:
    return AwsTarget(
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=endpoint,
        **settings,
    )


@pytest.fixture(scope="module")
def cloudwatch(sandbox) -> tuple[AwsTarget, CloudWatchSource]:
    """The checkout counts on the sandbox's moto server, one datum per hour, in the past."""
    aws = _aws(sandbox.endpoints["moto"])
    suffix = uuid.uuid4().hex[:8]  # moto keeps every metric of the session in one place
    source = CloudWatchSource(
        namespace=f"Shop/{suffix}",
        metric_name="RequestCount",
        dimensions={"Service": f"checkout-{suffix}", "Region": "eu-central-1"},
    )
    dimensions = [{"Name": k, "Value": v} for k, v in source.dimensions.items()]
    data = [
        {
            "MetricName": source.metric_name,
            "Dimensions": dimensions,
            "Timestamp": START + timedelta(hours=hour),
            "Value": float(count),
            "Unit": "Count",
        }
        for hour, count in enumerate(CHECKOUT)
    ]
    client = aws.get_client("cloudwatch")
    for first in range(0, len(data), 500):  # PutMetricData takes at most 1000 data
        client.put_metric_data(Namespace=source.namespace, MetricData=data[first : first + 500])
    return aws, source


def test_cloudwatch_reads_the_hours_back(cloudwatch) -> None:
    aws, source = cloudwatch
    history = read_cloudwatch_history(aws, source, start=START, end=END)
    assert_equal(history, expected())
    counts = read_cloudwatch_history(
        aws, source.model_copy(update={"per_second": False}), start=START, end=END
    )
    assert counts.to_numpy().tolist() == CHECKOUT.astype(float).tolist()
    first, last = START + timedelta(days=27), END + timedelta(days=1)
    tail = read_cloudwatch_history(aws, source, start=first, end=last)
    assert_equal(tail, expected(first, last))


def test_cloudwatch_unknown_metric_is_an_empty_history(cloudwatch) -> None:
    aws, source = cloudwatch
    other = source.model_copy(update={"metric_name": "NoSuchMetric"})
    assert read_cloudwatch_history(aws, other, start=START, end=END).empty


class FakeCloudWatch:
    """CloudWatch's JSON protocol (awsJson1.0) on loopback, answering what moto cannot:
    ``answers`` (status, body) are played in order, the last one repeating; the JSON bodies
    of the requests are kept in ``requests``."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fake.requests.append(json.loads(self.rfile.read(length) or b"{}"))
                status, body = fake.answers.pop(0) if len(fake.answers) > 1 else fake.answers[0]
                content = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake_cloudwatch() -> Iterator[list[FakeCloudWatch]]:
    made: list[FakeCloudWatch] = []
    yield made
    for fake in made:
        fake.close()


def _result(hours: range, status: str = "Complete", **extra: Any) -> dict[str, Any]:
    stamps = [(START + timedelta(hours=h)).timestamp() for h in hours]
    values = [float(CHECKOUT[h]) for h in hours]
    return {"Id": "history", "Timestamps": stamps, "Values": values, "StatusCode": status} | extra


def _serve(made: list[FakeCloudWatch], *answers: tuple[int, dict[str, Any]]) -> FakeCloudWatch:
    made.append(FakeCloudWatch(list(answers)))
    return made[-1]


SOURCE = CloudWatchSource(namespace="Shop", metric_name="RequestCount", dimensions={"A": "b"})


def test_cloudwatch_pages_are_followed(fake_cloudwatch) -> None:
    fake = _serve(
        fake_cloudwatch,
        (200, {"MetricDataResults": [_result(range(0, 30), "PartialData")], "NextToken": "p2"}),
        (200, {"MetricDataResults": [_result(range(30, 48))], "Messages": []}),
    )
    history = read_cloudwatch_history(
        _aws(fake.url), SOURCE, start=START, end=START + timedelta(days=2)
    )
    assert_equal(history, expected(START, START + timedelta(days=2)))
    first, second = fake.requests
    assert "NextToken" not in first
    assert second["NextToken"] == "p2"
    assert first["ScanBy"] == "TimestampAscending"
    assert first["StartTime"] == START.timestamp()
    assert first["EndTime"] == (START + timedelta(days=2)).timestamp()
    stat = first["MetricDataQueries"][0]["MetricStat"]
    assert stat["Period"] == 3600
    assert stat["Stat"] == "Sum"
    assert stat["Metric"]["Dimensions"] == [{"Name": "A", "Value": "b"}]


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (
            {"MetricDataResults": [_result(range(0), "InternalError")]},
            UnavailableError,
            "internal error",
        ),
        (
            {
                "MetricDataResults": [
                    _result(range(0), "Forbidden", Messages=[{"Code": "X", "Value": "denied"}])
                ]
            },
            AuthError,
            "X: denied",
        ),
        ({"MetricDataResults": [_result(range(3), "PartialData")]}, UnavailableError, "partial"),
    ],
)
def test_cloudwatch_status_codes(fake_cloudwatch, answer, error, words) -> None:
    fake = _serve(fake_cloudwatch, (200, answer))
    with pytest.raises(error, match=words) as caught:
        read_cloudwatch_history(_aws(fake.url), SOURCE, start=START, end=END)
    assert "CloudWatch metric Shop/RequestCount" in str(caught.value)


def test_cloudwatch_5xx_is_retried_then_unavailable(fake_cloudwatch) -> None:
    fake = _serve(fake_cloudwatch, (500, {"__type": "InternalFailure", "message": "boom"}))
    aws = _aws(fake.url, max_attempts=3)
    with pytest.raises(UnavailableError, match="HTTP 500") as caught:
        read_cloudwatch_history(aws, SOURCE, start=START, end=END)
    assert "get metric data of CloudWatch metric Shop/RequestCount" in str(caught.value)
    assert len(fake.requests) == 3  # the block's bounded attempts, botocore's one retry layer


def test_cloudwatch_refusal_is_an_invalid_request(fake_cloudwatch) -> None:
    body = {"__type": "InvalidParameterValueException", "message": "The stat is wrong"}
    fake = _serve(fake_cloudwatch, (400, body))
    with pytest.raises(InvalidRequestError, match="The stat is wrong"):
        read_cloudwatch_history(_aws(fake.url), SOURCE, start=START, end=END)
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def history_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checkout history as CSV (UTC 'Z' text, and New York offsets across its DST change)
    and as Parquet (timezone-aware timestamps)."""
    folder = tmp_path_factory.mktemp("history")
    series = expected()
    stamps = [stamp.strftime("%Y-%m-%dT%H:%M:%SZ") for stamp in series.index]
    values = series.to_numpy().tolist()
    pl.DataFrame({"timestamp": stamps, "value": values}).write_csv(folder / "utc.csv")
    local = [stamp.tz_convert("America/New_York").isoformat() for stamp in series.index]
    pl.DataFrame({"rps": values, "at": local}).write_csv(folder / "new-york.csv")
    when = pl.Series("timestamp", series.index.to_pydatetime().tolist()).dt.replace_time_zone("UTC")
    pl.DataFrame({"timestamp": when, "value": values}).write_parquet(folder / "utc.parquet")
    return {
        "csv": folder / "utc.csv",
        "new-york": folder / "new-york.csv",
        "parquet": folder / "utc.parquet",
    }


def test_files_read_the_same_history(history_files) -> None:
    for name, source in [
        ("csv", FileSource(path=str(history_files["csv"]))),
        ("parquet", FileSource(path=str(history_files["parquet"]))),
        (
            "new-york",
            FileSource(
                path=str(history_files["new-york"]), timestamp_column="at", value_column="rps"
            ),
        ),
    ]:
        history = read_file_history(source, start=START, end=END)
        assert_equal(history, expected(), name)
    first, last = START + timedelta(days=1), START + timedelta(days=2)
    inside = read_file_history(FileSource(path=str(history_files["csv"])), start=first, end=last)
    assert_equal(inside, expected(first, last))


def test_per_minute_rows_are_averaged_into_hours(tmp_path: Path) -> None:
    minutes = pd.date_range(START, periods=3 * 60, freq="min")
    values = np.arange(len(minutes), dtype=float)
    frame = pl.DataFrame({"timestamp": [m.isoformat() for m in minutes], "value": values})
    path = tmp_path / "minutes.csv"
    frame.write_csv(path)
    history = read_file_history(FileSource(path=str(path)), start=START, end=END)
    assert history.index.tolist() == list(pd.date_range(START, periods=3, freq="h"))
    assert history.tolist() == pytest.approx([29.5, 89.5, 149.5])


def test_a_file_without_rows_is_an_empty_history(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("timestamp,value\n")
    history = read_file_history(FileSource(path=str(path)), start=START, end=END)
    assert history.empty
    assert str(history.index.tz) == "UTC"


def test_empty_values_are_missing_hours(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text(
        "timestamp,value\n"
        "2026-10-26T00:00:00Z,1.5\n"
        "2026-10-26T01:00:00Z,\n"
        "2026-10-26T02:00:00Z,NaN\n"
        "2026-10-26T03:00:00+01:00, 2\n"
    )
    history = read_file_history(FileSource(path=str(path)), start=START, end=END)
    assert history.to_dict() == {
        pd.Timestamp("2026-10-26T00:00:00Z"): 1.5,
        pd.Timestamp("2026-10-26T02:00:00Z"): 2.0,
    }


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (
            "timestamp,value\n2026-10-26T00:00:00,1\n",
            "column 'timestamp': timestamps must carry a timezone, e.g. 2026-11-01T00:00:00Z",
        ),
        (
            "timestamp,value\n2026-10-26T00:00:00Z,1\n2026-10-26T01:00:00,1\n",
            "column 'timestamp': timestamps must carry a timezone",
        ),
        ("timestamp,value\nyesterday,1\n", "column 'timestamp' has timestamps that do not parse"),
        (
            "timestamp,value\n2026-10-26T00:00:00Z,1\n2026-10-26T01:00Z+1,1\n",
            r"column 'timestamp' has 1 timestamps that do not parse \(row 2",
        ),
        ("timestamp,value\n,1\n", "column 'timestamp' has no timestamp in data row 1"),
        ("timestamp,value\n2026-10-26T00:00:00Z,many\n", r"'value' has 1 values .*'many'"),
        ("time,value\n2026-10-26T00:00:00Z,1\n", "timestamp_column: .* no column 'timestamp'"),
        ("timestamp,rps\n2026-10-26T00:00:00Z,1\n", "value_column: .* no column 'value'"),
    ],
)
def test_bad_csv_files_are_refused_naming_path_and_column(
    tmp_path: Path, content: str, words: str
) -> None:
    path = tmp_path / "history.csv"
    path.write_text(content)
    with pytest.raises(HistoryFileError, match=words) as caught:
        read_file_history(FileSource(path=str(path)), start=START, end=END)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_naive_parquet_timestamps_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "naive.parquet"
    pl.DataFrame({"timestamp": [datetime(2026, 10, 26)], "value": [1.0]}).write_parquet(path)
    with pytest.raises(ValueError, match="timestamps must carry a timezone"):
        read_file_history(FileSource(path=str(path)), start=START, end=END)


def test_parquet_of_wrong_types_or_bytes_is_refused(tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.parquet"
    pl.DataFrame({"timestamp": [1], "value": [1.0]}).write_parquet(numbers)
    with pytest.raises(HistoryFileError, match="holds Int64, not timestamps"):
        read_file_history(FileSource(path=str(numbers)), start=START, end=END)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not a parquet file")
    with pytest.raises(HistoryFileError, match="cannot be read as Parquet"):
        read_file_history(FileSource(path=str(garbage)), start=START, end=END)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(NotFoundError, match=f"path: the history file {path} does not exist"):
        read_file_history(FileSource(path=str(path)), start=START, end=END)


# --------------------------------------------------------------------------- contract


def test_three_sources_give_the_same_history_and_the_same_plan(
    prometheus, cloudwatch, history_files
) -> None:
    """Issue 6's acceptance: real Prometheus, CloudWatch on moto server, and files agree.

    CloudWatch and the files give the very same doubles, hence the very same plan. Prometheus
    differs in the last bit of some rates (``count * (1/3600)``): its plan decides the same
    instances, costs, cuts and windows, on forecasts equal to 1e-12.
    """
    histories = {
        "cloudwatch": read_cloudwatch_history(*cloudwatch, start=START, end=END),
        "csv": read_file_history(FileSource(path=str(history_files["csv"])), start=START, end=END),
        "parquet": read_file_history(
            FileSource(path=str(history_files["parquet"])), start=START, end=END
        ),
    }
    prometheus_history = read_prometheus_history(
        prometheus, PrometheusSource(query=CHECKOUT_QUERY), start=START, end=END
    )
    for name, history in histories.items():
        assert_equal(history, histories["csv"], name)
    assert_close(prometheus_history, histories["csv"], "prometheus")

    plans = {name: _plan(history) for name, history in histories.items()}
    reference = plans["csv"]
    assert plans["cloudwatch"] == reference
    assert plans["parquet"] == reference
    from_prometheus = _plan(prometheus_history)
    assert _decided(from_prometheus) == _decided(reference)
    assert [h.forecast_rps for h in from_prometheus.services[0].hours] == pytest.approx(
        [h.forecast_rps for h in reference.services[0].hours], rel=1e-12
    )

    granted = [hour.granted for hour in reference.service("checkout").hours]
    assert len(granted) == 48
    assert min(granted) < max(granted)  # the daily shape reaches the plan
    assert reference.shortfalls  # and the budget cuts the peaks, the same way for all
    assert len(reference.services[0].schedule()) > 2


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (START.replace(tzinfo=None), END, "start must be timezone-aware"),
        (START, END.replace(tzinfo=None), "end must be timezone-aware"),
        (START + timedelta(minutes=30), END, "start must be on the hour"),
        (START, END + timedelta(seconds=1), "end must be on the hour"),
        (
            datetime(2026, 10, 26, tzinfo=datetime.strptime("+0530", "%z").tzinfo),
            END,
            "start must be on the hour",
        ),
        (END, START, "end must be after start"),
        (START, START, "end must be after start"),
    ],
)
def test_windows_are_aware_and_on_the_hour(tmp_path: Path, start, end, words) -> None:
    source = FileSource(path=str(tmp_path / "never-read.csv"))
    with pytest.raises(ValueError, match=words):
        read_file_history(source, start=start, end=end)
    down = HttpService(base_url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match=words):
        read_prometheus_history(down, PrometheusSource(query="up"), start=start, end=end)
    with pytest.raises(ValueError, match=words):
        read_cloudwatch_history(_aws("http://127.0.0.1:9"), SOURCE, start=start, end=end)


def test_the_flow_plans_the_same_from_the_three_sources(
    prometheus, cloudwatch, history_files, prefect_server
) -> None:
    """The same acceptance through the runbook itself: one ``load-forecast`` run, the same
    checkout history behind three services, one per source: the same model, the same plan."""
    from decisions.load_forecast import LoadForecastParams
    from flows.load_forecast import load_forecast

    aws, source = cloudwatch
    settings = SERVICE.model_dump(exclude={"name"})
    sources = {
        "from-prometheus": {"kind": "prometheus", "query": CHECKOUT_QUERY},
        "from-cloudwatch": source.model_dump(),
        "from-parquet": {"kind": "file", "path": str(history_files["parquet"])},
    }
    params = LoadForecastParams.model_validate(
        {
            "target": "three-sources",
            "as_of": END,
            "history_days": DAYS,
            "services": [{"name": n, "source": s, **settings} for n, s in sources.items()],
        }
    )
    result = load_forecast(params=params, prometheus=prometheus, aws=aws)
    assert result.ok, result.reason
    assert result.plan is not None
    models = {o.service: o.model for o in result.services}
    assert len(set(models.values())) == 1, models
    granted = {s.service.name: [h.granted for h in s.hours] for s in result.plan.services}
    assert granted["from-cloudwatch"] == granted["from-parquet"] == granted["from-prometheus"]
    assert min(granted["from-parquet"]) < max(granted["from-parquet"])
