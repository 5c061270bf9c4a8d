"""Request-rate history for ``load-forecast``: Prometheus, CloudWatch, or a CSV/Parquet file.

One contract for the three readers, so that the same data gives the *identical* series whichever
system holds it (and so the same plan): the raw hourly history in ``[start, end)`` as a float
``pd.Series`` named ``"value"``, indexed by a UTC ``DatetimeIndex`` of hour **starts**, sorted,
one row per hour. A missing hour is absent, not NaN and not zero: filling gaps, clipping outliers
and refusing a too-short history is :func:`decisions.forecasting.clean_history`'s job, which
sees every source the same way. ``start`` and ``end`` must be timezone-aware and on the hour: an
hourly history read from half past would mix two hours into each value.

Why each source is read the way it is:

- **Prometheus** (``query_range`` over the ``HttpService`` block, via
  :func:`tasks.prometheus.query_range`, so HTTP, errors and retries are that task's): a range
  query evaluates the PromQL *at* each step. ``rate(x[1h])`` evaluated at ``t`` is the hour
  *before* ``t``, so by default (``value_at="hour_end"``) the value at ``t`` is filed under the
  hour starting ``t - 1h``; a query whose value at ``t`` describes the hour starting at ``t``
  says ``value_at="hour_start"``. Several series are refused: summing them here would be a guess
  at what the query meant. Queries are split so that no request asks for more than 10,000 points
  (Prometheus refuses more than 11,000 per series).
- **CloudWatch** (``GetMetricData`` through the ``AwsTarget`` block's client, whose botocore
  *standard* retry mode and explicit timeouts are the one retry layer): ``Period=3600``, oldest
  first, every ``NextToken`` page. CloudWatch stamps a period with its start, which is already
  the hour start. ``per_second`` divides an hourly ``Sum`` of requests by 3600 to get req/s.
  A result whose ``StatusCode`` is ``InternalError`` is an :class:`UnavailableError`,
  ``Forbidden`` an :class:`AuthError`; ``PartialData`` means "more on the next page" and is
  followed, and is an error only when no next page comes.
- **File** (``.csv`` or ``.parquet`` by suffix, read with polars): timestamps must carry their
  timezone; a naive one is refused, not assumed UTC, because a file written in local time would
  shift the daily season, and every schedule built on it, by hours without a sound. Rows finer
  than an hour (per minute, say) are averaged into their hour: a mean of rates is the hour's
  rate. Every problem is one :class:`HistoryFileError` naming the path and the column.

These are plain functions, not tasks: the flow wraps fetch + clean + forecast of one service in
one task, so a failed service is one failed task in the UI.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from blocks.aws import AwsTarget
from blocks.http import HttpService
from decisions.load_forecast import CloudWatchSource, FileSource, PrometheusSource
from runbooks.errors import (
    AuthError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    botocore_errors,
)
from runbooks.kit._run import logger as run_logger
from tasks.prometheus import query_range

if TYPE_CHECKING:
    import polars as pl

HOUR_SECONDS = 3600
MAX_POINTS_PER_QUERY = 10_000
"""Points asked of Prometheus per range query; it refuses more than 11,000 per series."""
MAX_CLOUDWATCH_PAGES = 1_000
"""A bound on ``NextToken`` pages (each holds up to 100,800 points): a loop guard, not a limit."""
_US_PER_HOUR = HOUR_SECONDS * 1_000_000


class HistoryFileError(InvalidRequestError, ValueError):
    """A history file that cannot be read as one: names the path and the column at fault.

    Also a ``ValueError``, like every other refusal of bad history data (``clean_history``).
    """


# --------------------------------------------------------------------------- readers


def read_prometheus_history(
    prometheus: HttpService, source: PrometheusSource, *, start: datetime, end: datetime
) -> pd.Series:
    """The hourly history of ``source.query`` in ``[start, end)`` (see the module doc).

    No series is an empty history; several are refused with :class:`InvalidRequestError`.
    Prometheus down is an :class:`UnavailableError` after the block's bounded retries.
    """
    first, stop = _window_hours(start, end)
    shift = 1 if source.value_at == "hour_end" else 0
    hours: list[int] = []
    values: list[float] = []
    for chunk_first, chunk_last in evaluation_chunks(first, stop, MAX_POINTS_PER_QUERY):
        series = query_range.fn(
            prometheus,
            source.query,
            start=_hour_datetime(chunk_first + shift),
            end=_hour_datetime(chunk_last + shift),
            step_seconds=HOUR_SECONDS,
        )
        if len(series) > 1:
            shown = ", ".join(_labels_text(s.labels) for s in series[:3])
            raise InvalidRequestError(
                f"the PromQL query {source.query!r} gave {len(series)} series ({shown}"
                f"{', ...' if len(series) > 3 else ''}); a history is one series: aggregate "
                "it, e.g. sum(...) with no 'by' clause",
                target=prometheus.target,
            )
        for timestamp, value in series[0].points if series else ():
            hours.append(round(timestamp) // HOUR_SECONDS - shift)
            values.append(value)
    return _hourly(np.array(hours, dtype=np.int64), np.array(values, dtype=float), first, stop)


def read_cloudwatch_history(
    aws: AwsTarget, source: CloudWatchSource, *, start: datetime, end: datetime
) -> pd.Series:
    """The hourly history of one CloudWatch metric in ``[start, end)`` (see the module doc)."""
    first, stop = _window_hours(start, end)
    what = f"CloudWatch metric {source.namespace}/{source.metric_name}"
    query = {
        "Id": "history",
        "MetricStat": {
            "Metric": {
                "Namespace": source.namespace,
                "MetricName": source.metric_name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in source.dimensions.items()],
            },
            "Period": HOUR_SECONDS,
            "Stat": source.stat,
        },
        "ReturnData": True,
    }
    request: dict[str, Any] = {
        "MetricDataQueries": [query],
        "StartTime": _hour_datetime(first),
        "EndTime": _hour_datetime(stop),
        "ScanBy": "TimestampAscending",
    }
    client = aws.get_client("cloudwatch")
    stamps: list[datetime] = []
    values: list[float] = []
    seen_tokens: set[str] = set()
    for _page in range(MAX_CLOUDWATCH_PAGES):
        with botocore_errors(f"get metric data of {what}", source.namespace):
            answer = client.get_metric_data(**request)
        for message in answer.get("Messages") or []:
            run_logger(__name__).warning("%s: CloudWatch says %s", what, _message(message))
        status = "Complete"
        for result in answer.get("MetricDataResults") or []:
            if result.get("Id") != "history":
                continue
            status = result.get("StatusCode") or "Complete"
            _check_status(status, result, what, source.namespace)
            stamps += result.get("Timestamps") or []
            values += result.get("Values") or []
        token = answer.get("NextToken")
        if not token:
            if status == "PartialData":
                raise UnavailableError(
                    f"{what}: CloudWatch returned partial data and no NextToken to read the "
                    "rest; retry later",
                    target=source.namespace,
                )
            break
        if token in seen_tokens:
            raise UnavailableError(
                f"{what}: CloudWatch repeated a NextToken; stopped paging to avoid a loop",
                target=source.namespace,
            )
        seen_tokens.add(token)
        request["NextToken"] = token
    else:
        raise UnavailableError(
            f"{what}: more than {MAX_CLOUDWATCH_PAGES} pages of GetMetricData; "
            "read a shorter window",
            target=source.namespace,
        )
    if len(stamps) != len(values):
        raise UnavailableError(
            f"{what}: CloudWatch returned {len(stamps)} timestamps for {len(values)} values",
            target=source.namespace,
        )
    hours = np.array([int(stamp.timestamp()) // HOUR_SECONDS for stamp in stamps], dtype=np.int64)
    numbers = np.array(values, dtype=float)
    if source.per_second:
        numbers = numbers / HOUR_SECONDS
    return _hourly(hours, numbers, first, stop)


def read_file_history(source: FileSource, *, start: datetime, end: datetime) -> pd.Series:
    """The hourly history in a CSV or Parquet file, ``[start, end)`` (see the module doc)."""
    first, stop = _window_hours(start, end)
    path = Path(source.path)
    if not path.is_file():
        raise NotFoundError(
            f"path: the history file {path} does not exist (or is not a file)", target=str(path)
        )
    frame = _read_columns(path, source.timestamp_column, source.value_column)
    if frame.height == 0:  # a header and no rows: no history, as clean_history will say
        return _hourly(np.array([], dtype=np.int64), np.array([], dtype=float), first, stop)
    micros = _timestamps_us(frame.get_column(source.timestamp_column), path, source)
    values = _rates(frame.get_column(source.value_column), path, source.value_column)
    hours = np.floor_divide(micros, _US_PER_HOUR)
    return _hourly(hours, values, first, stop)


# --------------------------------------------------------------------------- shared helpers


def evaluation_chunks(first: int, stop: int, max_points: int) -> Iterator[tuple[int, int]]:
    """``(first, last)`` hour numbers of consecutive chunks covering ``[first, stop)``, each of
    at most ``max_points`` hours (both ends inclusive, as Prometheus' ``start``/``end``)."""
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    for chunk in range(first, stop, max_points):
        yield chunk, min(chunk + max_points, stop) - 1


def _window_hours(start: datetime, end: datetime) -> tuple[int, int]:
    """``start`` and ``end`` as hours since the epoch, refused unless aware, on the hour (in
    UTC: 00:00 at +05:30 is not) and in order."""
    hours = []
    for field, value in (("start", start), ("end", end)):
        if not isinstance(value, datetime):
            raise ValueError(f"{field} must be a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{field} must be timezone-aware, e.g. datetime(2026, 11, 1, tzinfo=UTC); "
                f"got {value.isoformat()}"
            )
        seconds = value.timestamp()
        if seconds % HOUR_SECONDS:
            raise ValueError(f"{field} must be on the hour (UTC), got {value.isoformat()}")
        hours.append(int(seconds) // HOUR_SECONDS)
    if hours[1] <= hours[0]:
        raise ValueError(
            f"end must be after start, got start {start.isoformat()} and end {end.isoformat()}"
        )
    return hours[0], hours[1]


def _hour_datetime(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * HOUR_SECONDS, UTC)


def _hourly(hours: np.ndarray, values: np.ndarray, first: int, stop: int) -> pd.Series:
    """The one way every reader builds its result, so equal data gives identical series: NaN
    and hours outside ``[first, stop)`` dropped, one value per hour (the mean of several),
    sorted, a UTC index of hour starts in pandas' default resolution."""
    keep = ~np.isnan(values) & (hours >= first) & (hours < stop)
    per_hour = pd.Series(values[keep], dtype=float).groupby(hours[keep], sort=True).mean()
    index = pd.to_datetime(
        per_hour.index.to_numpy(dtype=np.int64) * HOUR_SECONDS, unit="s", utc=True
    )
    return pd.Series(per_hour.to_numpy(dtype=float), index=index, name="value", dtype=float)


def _labels_text(labels: Mapping[str, str]) -> str:
    shown = dict(labels)
    name = shown.pop("__name__", "")
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(shown.items()))
    return f"{name}{{{inner}}}"


# --------------------------------------------------------------------------- CloudWatch


def _check_status(status: str, result: Mapping[str, Any], what: str, target: str) -> None:
    said = "; ".join(_message(m) for m in result.get("Messages") or []) or "no details"
    if status == "InternalError":
        raise UnavailableError(
            f"{what}: CloudWatch reported an internal error ({said}); retry later", target=target
        )
    if status == "Forbidden":
        raise AuthError(
            f"{what}: CloudWatch refused to read it ({said}); check the block's credentials "
            "and cloudwatch:GetMetricData permission",
            target=target,
        )
    if status not in ("Complete", "PartialData"):
        raise UnavailableError(f"{what}: unknown StatusCode {status!r} ({said})", target=target)


def _message(message: Any) -> str:
    if isinstance(message, Mapping):
        return f"{message.get('Code', '')}: {message.get('Value', '')}".strip(": ")
    return str(message)


# --------------------------------------------------------------------------- files


def _read_columns(path: Path, timestamp_column: str, value_column: str) -> pl.DataFrame:
    """The two columns of the file, as stored (CSV: all text, parsed here, not guessed)."""
    import polars as pl

    wanted = [timestamp_column, value_column]
    csv = path.suffix.lower() == ".csv"
    try:
        if csv:
            frame = pl.read_csv(path, infer_schema=False)
            columns = frame.columns
        else:
            columns = list(pl.read_parquet_schema(path))
    except (pl.exceptions.PolarsError, OSError) as exc:
        kind = "CSV" if csv else "Parquet"
        raise HistoryFileError(
            f"path: {path} cannot be read as {kind}: {_first_line(exc)}"
        ) from exc
    missing = [column for column in wanted if column not in columns]
    if missing:
        field = "timestamp_column" if timestamp_column in missing else "value_column"
        raise HistoryFileError(
            f"{field}: {path} has no column {missing[0]!r}; its columns are "
            f"{', '.join(repr(c) for c in columns) or 'none'}"
        )
    if csv:
        return frame.select(wanted)
    try:
        return pl.read_parquet(path, columns=wanted)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise HistoryFileError(
            f"path: {path} cannot be read as Parquet: {_first_line(exc)}"
        ) from exc


def _timestamps_us(column: pl.Series, path: Path, source: FileSource) -> np.ndarray:
    """Microseconds since the epoch (UTC) of each row; naive or unparsable ones refused."""
    import polars as pl

    name = source.timestamp_column
    where = f"timestamp_column: {path} column {name!r}"
    if column.dtype == pl.String:
        column = _parse_timestamps(column, where)
    if column.dtype == pl.Date or (
        isinstance(column.dtype, pl.Datetime) and column.dtype.time_zone is None
    ):
        example = next((str(v) for v in column if v is not None), "")
        raise HistoryFileError(_naive(where, example))
    if not isinstance(column.dtype, pl.Datetime):
        raise HistoryFileError(
            f"{where} holds {column.dtype}, not timestamps; write ISO 8601 text with a "
            "timezone, e.g. 2026-11-01T00:00:00Z"
        )
    if column.null_count():
        row = int(column.is_null().arg_true()[0]) + 1
        raise HistoryFileError(f"{where} has no timestamp in data row {row}")
    return column.dt.epoch("us").to_numpy().astype(np.int64)


def _parse_timestamps(text: pl.Series, where: str) -> pl.Series:
    import polars as pl

    text = text.str.strip_chars()
    blank = text.is_null() | (text == "")
    if blank.any():
        raise HistoryFileError(
            f"{where} has no timestamp in data row {int(blank.arg_true()[0]) + 1}"
        )
    try:
        parsed = text.str.to_datetime(strict=False)
    except pl.exceptions.PolarsError as exc:  # no format fits even the first value
        raise HistoryFileError(
            f"{where} has timestamps that do not parse (first {text[0]!r}): "
            f"{_first_line(exc)}; write ISO 8601 with a timezone, e.g. 2026-11-01T00:00:00Z"
        ) from exc
    if parsed.dtype.time_zone is None:  # type: ignore[union-attr]
        return parsed  # refused by the caller, with an example
    failed = parsed.is_null()
    if failed.any():
        rows = failed.arg_true()
        bad = text.gather(rows)
        with suppress(pl.exceptions.PolarsError):  # no format fits: unparsable, said below
            naive = bad.str.to_datetime(strict=False)
            if naive.dtype.time_zone is None and naive.is_not_null().any():  # type: ignore[union-attr]
                example = bad[int(naive.is_not_null().arg_true()[0])]
                raise HistoryFileError(_naive(where, str(example)))
        shown = ", ".join(
            f"row {int(r) + 1}: {v!r}" for r, v in zip(rows[:3], bad[:3], strict=True)
        )
        raise HistoryFileError(
            f"{where} has {len(rows)} timestamps that do not parse ({shown}); write ISO 8601 "
            "with a timezone, e.g. 2026-11-01T00:00:00Z"
        )
    return parsed


def _naive(where: str, example: str) -> str:
    return (
        f"{where}: timestamps must carry a timezone, e.g. 2026-11-01T00:00:00Z "
        f"(got {example!r}); a guess would shift the daily season"
    )


def _rates(column: pl.Series, path: Path, name: str) -> np.ndarray:
    """The values as floats, empty cells NaN (a missing hour); text that is no number refused."""
    import polars as pl

    where = f"value_column: {path} column {name!r}"
    if column.dtype == pl.String:
        text = column.str.strip_chars()
        numbers = text.cast(pl.Float64, strict=False)
        bad = numbers.is_null() & text.is_not_null() & (text != "")
        if bad.any():
            rows = bad.arg_true()
            shown = ", ".join(
                f"row {int(r) + 1}: {v!r}"
                for r, v in zip(rows[:3], text.gather(rows[:3]), strict=True)
            )
            raise HistoryFileError(f"{where} has {len(rows)} values that are not numbers ({shown})")
        column = numbers
    elif not column.dtype.is_numeric():
        raise HistoryFileError(f"{where} holds {column.dtype}, not numbers (req/s)")
    return column.cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(float)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
