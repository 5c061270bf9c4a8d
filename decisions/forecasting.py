"""Load forecasting for ``load-forecast``: clean a history, backtest models, pick one per series.

Why per series and by backtest: on hourly data seasonal naive (and MSTL) have beaten Prophet in
published statsforecast experiments, yet some series do have a trend Prophet follows. So every
service's last ``holdout_days`` are held out, each candidate forecasts them from the days before,
and the lowest MASE wins; a tie goes to the simpler model (it fails in more obvious ways).

One interface for every model, split in two so a model is a value: ``model.fit(history)``
returns a fitted forecaster, ``fitted.forecast(horizon_hours)`` a frame indexed by the next
hours (UTC) with ``yhat`` and ``yhat_upper``. A model object holds only settings, so one
instance is shared by every service and every thread. ``yhat_upper`` is the upper end of the
central 95 % interval (the 97.5th percentile), the same quantity Prophet's ``interval_width=0.95``
gives, so capacity planned on it means the same whichever model won.

Pure, like the rest of the package: Prophet is not here because cmdstanpy writes its data and
draws to temporary files and runs a subprocess; its adapter is ``tasks.forecast_models``.
MSTL/ETS are not here either: no library for them is installed (statsmodels, statsforecast),
and the weekly seasonal naive already carries both seasons of an hourly load series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd

HOURS_PER_DAY = 24
HOURS_PER_WEEK = 168

MARGIN_QUANTILE = 0.95
"""Seasonal naive: ``yhat_upper`` = ``yhat`` + this quantile of the absolute errors at the lag."""

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution x this = its standard deviation
_MIN_RESIDUALS = HOURS_PER_DAY  # fewer residuals than a day give no quantile worth the name


# --------------------------------------------------------------------------- cleaning


def clean_history(
    series: pd.Series,
    *,
    service: str,
    freq: str = "h",
    min_days: float = 7,
    max_gap_hours: float = 3,
    outlier_k: float = 6.0,
    outlier_reach_hours: float = 3,
    max_missing_fraction: float = 0.5,
) -> pd.Series:
    """A regular, gap-free, UTC series of ``freq`` steps, or a ``ValueError`` naming ``service``.

    - Timezone: an aware index is converted to UTC. A naive index is refused, not assumed UTC:
      a file written in local time would shift the daily season, and every schedule built on
      it, by hours without a sound. The reader knows the source's convention; it localizes.
    - Values: non-numeric, infinite and negative values (a request rate is never negative; a
      counter reset read naively is) are missing. Duplicated timestamps are averaged, the index
      sorted, and the series resampled to ``freq`` by the mean.
    - Outliers (a scrape glitch, an outage's drop to zero) are clipped to the median of the
      ``outlier_reach_hours`` either side +- ``outlier_k`` robust standard deviations (MAD of
      the residuals from that median). The reach is short so the daily cycle is not mistaken
      for outliers, and a spike shorter than it is outvoted by its ordinary neighbours.
      Clipping comes before filling so that no fill copies a spike.
    - Gaps of at most ``max_gap_hours`` are interpolated linearly; longer ones take the value a
      week earlier, else a week later (in the first week), else a day earlier or later: a
      straight line across a night would invent load that never comes, and a Sunday copied
      onto a Monday would miss the working day.
    - Too little: no value at all, a history spanning less than ``min_days``, or more than
      ``max_missing_fraction`` of the steps missing (the series would be mostly invented).
    """
    if not isinstance(series.index, pd.DatetimeIndex):
        raise ValueError(
            f"service {service!r}: history must be indexed by timestamps, "
            f"got a {type(series.index).__name__}"
        )
    if series.index.tz is None:
        raise ValueError(
            f"service {service!r}: history timestamps have no timezone; localize them where "
            "they are read (e.g. .tz_localize('UTC')), as a guess would shift the daily season"
        )
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    per_day = pd.Timedelta(days=1) / step
    if step <= pd.Timedelta(0) or per_day != int(per_day):
        raise ValueError(f"service {service!r}: freq {freq!r} must divide a day")
    per_day = int(per_day)
    per_hour = pd.Timedelta(hours=1) / step

    values = pd.to_numeric(series, errors="coerce").astype(float)
    values = values.where(np.isfinite(values) & (values >= 0))
    values.index = series.index.tz_convert("UTC")
    values = values.dropna()
    if values.empty:
        raise ValueError(
            f"service {service!r}: history has no usable values (empty, all NaN or negative)"
        )
    # groupby-mean then resample-mean would weigh duplicates twice; resample alone averages
    # every point in the step, duplicates included, and sorts.
    regular = values.sort_index().resample(freq).mean()
    span_days = len(regular) / per_day
    if span_days < min_days:
        raise ValueError(
            f"service {service!r}: history spans {span_days:.1f} days, at least {min_days:g} needed"
        )
    missing = float(regular.isna().mean())
    if missing > max_missing_fraction:
        raise ValueError(
            f"service {service!r}: {missing:.0%} of the {freq} steps in the history are "
            f"missing, at most {max_missing_fraction:.0%} allowed"
        )

    clipped = _clip_outliers(
        regular, reach=max(1, round(outlier_reach_hours * per_hour)), k=outlier_k
    )
    filled = _fill_gaps(
        clipped, max_short=int(max_gap_hours * per_hour), day=per_day, week=7 * per_day
    )
    filled.name = series.name
    return filled


def _clip_outliers(values: pd.Series, *, reach: int, k: float) -> pd.Series:
    """Clip each value to the median of its ``reach`` neighbours either side +- k robust sigmas.

    The value itself is left out of its reference: on a steady climb (a morning ramp) a
    centred median *is* the middle value, so every residual would be 0, the MAD 0 and nothing
    ever an outlier. Without it, a spike of up to ``reach`` hours is still outvoted by the
    ordinary neighbours. No clipping when the residuals have no spread (a flat series).
    """
    neighbours = pd.concat([values.shift(lag) for lag in range(-reach, reach + 1) if lag], axis=1)
    reference = neighbours.median(axis=1)  # NaN-skipping, and silent on all-NaN rows
    residual = (values - reference).dropna()
    if residual.empty:
        return values
    mad = float((residual - residual.median()).abs().median())
    if not mad > 0:
        return values
    bound = k * _MAD_TO_SIGMA * mad
    lower = (reference - bound).clip(lower=0).fillna(-np.inf)
    return values.clip(lower=lower, upper=(reference + bound).fillna(np.inf))


def _fill_gaps(values: pd.Series, *, max_short: int, day: int, week: int) -> pd.Series:
    """Interpolate runs of at most ``max_short`` missing steps, fill longer runs seasonally."""
    missing = values.isna()
    run_id = (missing != missing.shift()).cumsum()
    run_length = missing.groupby(run_id).transform("sum")
    short = missing & (run_length <= max_short)
    interpolated = values.interpolate(method="linear", limit_area="inside")
    out = values.where(~short, interpolated)
    # A gap longer than a week fills from what was filled a week before it: repeat until done.
    for _ in range(len(out) // day + 1):
        if not out.isna().any():
            break
        before = int(out.isna().sum())
        for lag in (week, -week, day, -day):
            out = out.fillna(out.shift(lag))
        if int(out.isna().sum()) == before:
            break
    # Only a history shorter than a day could get here; a line beats a hole.
    return out.interpolate(method="linear", limit_direction="both")


# --------------------------------------------------------------------------- models


class Fitted(Protocol):
    """A model fitted to one history: forecasts the hours that follow it."""

    def forecast(self, horizon_hours: int) -> pd.DataFrame:
        """``yhat`` and ``yhat_upper`` for the next ``horizon_hours``, indexed by UTC hour."""
        ...


class Model(Protocol):
    """Settings of a forecasting model; ``fit`` never changes them (one instance, many series).

    ``complexity`` orders models for ties (lower is simpler); ``min_history_hours`` is the
    shortest history ``fit`` accepts, so a backtest skips a model instead of failing on it.
    """

    @property
    def name(self) -> str: ...

    @property
    def complexity(self) -> int: ...

    @property
    def min_history_hours(self) -> int: ...

    def fit(self, history: pd.Series) -> Fitted: ...


def check_history(history: pd.Series, *, model: str, min_hours: int) -> None:
    """Refuse what ``clean_history`` would never return: models trust their input after this."""
    index = history.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None or str(index.tz) != "UTC":
        raise ValueError(f"{model}: history must have a UTC DatetimeIndex (see clean_history)")
    if len(history) < min_hours:
        raise ValueError(
            f"{model}: needs at least {min_hours} hours of history, got {len(history)}"
        )
    if not (index[1:] - index[:-1] == pd.Timedelta(hours=1)).all():
        raise ValueError(f"{model}: history must be hourly and gap-free (see clean_history)")
    if history.isna().any():
        raise ValueError(f"{model}: history has NaN values (see clean_history)")


def forecast_frame(last: pd.Timestamp, yhat: np.ndarray, yhat_upper: np.ndarray) -> pd.DataFrame:
    """The frame every model returns: the hours after ``last``; load is never negative and the
    upper bound never under the point forecast, whatever a model's arithmetic says."""
    yhat = np.clip(np.asarray(yhat, dtype=float), 0, None)
    upper = np.maximum(np.asarray(yhat_upper, dtype=float), yhat)
    index = pd.date_range(last + pd.Timedelta(hours=1), periods=len(yhat), freq="h", name="ds")
    return pd.DataFrame({"yhat": yhat, "yhat_upper": upper}, index=index)


def check_horizon(horizon_hours: int) -> None:
    """Shared by every model, so a zero horizon fails the same way whichever model won."""
    if horizon_hours < 1:
        raise ValueError(f"horizon_hours must be at least 1, got {horizon_hours}")


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """Tomorrow is the same hour of the last day (or week): the benchmark models must beat.

    The upper bound is empirical, not Gaussian: the 95th percentile of the *absolute* errors
    the history made at that lag (``|y[t] - y[t - k * season]|`` for a step ``k`` seasons
    ahead), i.e. the half-width of a central 95 % interval of those errors. Absolute, not the
    97.5th percentile of the signed errors: signed errors carry the last weeks' trend, so after
    a falling month the margin shrinks to almost nothing just before load turns up again. On
    Taylor's electricity demand (``benchmarks/forecast.py``) the signed bound covered 91.7 %
    of the replayed hours instead of 97.5 % (3.4 % under-provisioned hours); the absolute one
    0.5 %, for 1 % more instances. With too few residuals at lag ``k`` the one-season margin
    grows as ``sqrt(k)``, as a random walk's would.
    """

    season_hours: int = HOURS_PER_WEEK

    def __post_init__(self) -> None:
        if self.season_hours < 1:
            raise ValueError(f"season_hours must be at least 1, got {self.season_hours}")

    @property
    def name(self) -> str:
        """Stable names, as they appear in the backtest table."""
        named = {HOURS_PER_DAY: "daily", HOURS_PER_WEEK: "weekly"}
        return f"seasonal_naive_{named.get(self.season_hours, f'{self.season_hours}h')}"

    @property
    def complexity(self) -> int:
        """The values it remembers: a daily season is simpler than a weekly one."""
        return self.season_hours

    @property
    def min_history_hours(self) -> int:
        """One season to repeat and one more to measure its errors."""
        return 2 * self.season_hours

    def fit(self, history: pd.Series) -> SeasonalNaiveFit:
        """Keep the history (read-only); the work is a slice and a quantile at forecast time."""
        check_history(history, model=self.name, min_hours=self.min_history_hours)
        values = history.to_numpy(dtype=float, copy=True)
        values.flags.writeable = False
        return SeasonalNaiveFit(self.season_hours, values, history.index[-1])


@dataclass(frozen=True, slots=True)
class SeasonalNaiveFit:
    """A seasonal naive model fitted to one history."""

    season_hours: int
    values: np.ndarray = field(repr=False)
    last: pd.Timestamp

    def forecast(self, horizon_hours: int) -> pd.DataFrame:
        """Repeat the last season; add the residual quantile of each step's lag."""
        check_horizon(horizon_hours)
        season = self.season_hours
        repeats = math.ceil(horizon_hours / season)
        yhat = np.tile(self.values[-season:], repeats)[:horizon_hours]
        seasons_ahead = np.arange(horizon_hours) // season + 1
        margin = np.array([self._margin(int(k)) for k in range(1, repeats + 1)])
        return forecast_frame(self.last, yhat, yhat + margin[seasons_ahead - 1])

    def _margin(self, seasons_ahead: int) -> float:
        lag = seasons_ahead * self.season_hours
        if len(self.values) - lag >= _MIN_RESIDUALS:
            residuals = np.abs(self.values[lag:] - self.values[:-lag])
            return float(np.quantile(residuals, MARGIN_QUANTILE))
        return self._margin(1) * math.sqrt(seasons_ahead)


# --------------------------------------------------------------------------- scoring

M = TypeVar("M", bound=Model)


def mase(
    actual: Sequence[float] | np.ndarray | pd.Series,
    predicted: Sequence[float] | np.ndarray | pd.Series,
    training: Sequence[float] | np.ndarray | pd.Series,
    season: int,
) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006).

    The forecast's mean absolute error divided by the in-sample mean absolute error of the
    seasonal naive forecast on ``training``: below 1 beats seasonal naive's one-season-ahead
    error, and it compares series of any scale, which is why it ranks models across services.
    Undefined (``ValueError``) when the training data repeats exactly every ``season``.
    """
    a, p, t = (np.asarray(x, dtype=float) for x in (actual, predicted, training))
    if a.ndim != 1 or a.shape != p.shape or a.size == 0:
        raise ValueError(f"actual and predicted must be equally long, got {a.shape}, {p.shape}")
    if season < 1 or t.size <= season:
        raise ValueError(f"training must be longer than season {season}, got {t.size} values")
    if np.isnan(a).any() or np.isnan(p).any() or np.isnan(t).any():
        raise ValueError("MASE of NaN values: clean the history first")
    scale = float(np.mean(np.abs(t[season:] - t[:-season])))
    if scale == 0:
        raise ValueError(
            f"MASE is undefined: the training data repeats exactly every {season} steps"
        )
    return float(np.mean(np.abs(a - p)) / scale)


def backtest(
    history: pd.Series,
    models: Sequence[Model],
    *,
    holdout_days: int = 7,
    season: int = HOURS_PER_DAY,
) -> dict[str, float]:
    """MASE of each model forecasting the last ``holdout_days`` from the days before them.

    A week by default: two days held out are often two weekdays, and then a daily naive (which
    copies Friday onto Saturday) can win the backtest; on Taylor's demand it did on 13 of 56
    nights and cost 1.30x the oracle on those (``benchmarks/forecast.py``).

    A model whose ``min_history_hours`` the training part does not reach is left out (not
    scored as bad): a 7-day history cannot backtest a weekly naive, but can the others. The
    MASE scale uses the daily ``season`` by default; the scale is shared by all models of one
    series, so it changes no ranking, only how the numbers read across services.
    """
    return score_models(history, models, holdout_days=holdout_days, season=season).scores


@dataclass(frozen=True, slots=True)
class Scores:
    """Backtest scores of one series: ``metric`` is ``MASE``, or ``MAE`` where MASE is undefined.

    MASE divides by the training data's seasonal naive error, which is 0 for a series that
    repeats exactly every season (a constant load, a synthetic test series). Such a series still
    needs a model, and every model's mean absolute error still ranks them, so the scores fall
    back to MAE and say so instead of failing the service.
    """

    metric: str
    scores: dict[str, float]


def score_models(
    history: pd.Series,
    models: Sequence[Model],
    *,
    holdout_days: int = 7,
    season: int = HOURS_PER_DAY,
) -> Scores:
    """:func:`backtest`, falling back to MAE when MASE is undefined (see :class:`Scores`)."""
    if holdout_days < 1:
        raise ValueError(f"holdout_days must be at least 1, got {holdout_days}")
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    holdout = holdout_days * HOURS_PER_DAY
    train, test = history.iloc[:-holdout], history.iloc[-holdout:]
    predictions = {
        model.name: model.fit(train).forecast(holdout)["yhat"].to_numpy()
        for model in models
        if len(train) >= model.min_history_hours
    }
    if not predictions:
        raise ValueError(
            f"no model can be backtested: {len(train)} hours before the {holdout_days}-day "
            f"holdout, the models need {min(m.min_history_hours for m in models)}"
            if models
            else "no model to backtest"
        )
    actual, training = test.to_numpy(dtype=float), train.to_numpy(dtype=float)
    if len(training) > season and np.any(training[season:] != training[:-season]):
        return Scores(
            "MASE", {n: mase(actual, p, training, season) for n, p in predictions.items()}
        )
    return Scores("MAE", {n: float(np.mean(np.abs(actual - p))) for n, p in predictions.items()})


def choose_model(scores: Mapping[str, float], models: Sequence[M], *, tolerance: float = 0.0) -> M:
    """The model with the lowest MASE; a more complex model must beat a simpler one by more
    than ``tolerance`` (so an exact tie goes to the simpler one). Unscored models are skipped."""
    scored = sorted((m for m in models if m.name in scores), key=lambda m: m.complexity)
    if not scored:
        raise ValueError(f"none of the models {[m.name for m in models]} has a score")
    best = scored[0]
    for model in scored[1:]:
        if scores[model.name] < scores[best.name] - tolerance:
            best = model
    return best
