"""Prophet behind the ``decisions.forecasting`` model interface.

Why here and not in ``decisions``: Prophet fits through cmdstanpy, which writes the data, the
initial values and the optimiser's output to temporary files and runs the Stan binary as a
subprocess. That is I/O, so the pure package keeps the interface, the seasonal naive models and
the scoring, and this adapter only translates.

Quiet by construction:
- logging: ``prophet.plot`` logs an error at import when plotly is missing (silenced) and
  cmdstanpy two INFO lines per fit (raised to WARNING). cmdstanpy sets its logger up lazily,
  on its first fit (level DEBUG and a stderr handler, unless a handler already exists, as
  under pytest), so that set-up is triggered first and overridden after;
- warnings: Prophet 1.1 calls pandas APIs that pandas 3 deprecates (``drop(inplace=True)``).
  Those warnings are for Prophet's maintainers, so a filter ignores warnings raised from
  ``prophet``/``cmdstanpy`` modules, and only those, before each fit and predict (re-added
  each time so it stays ahead of a filter such as pytest's ``error``). A filter and not
  ``warnings.catch_warnings``: forecasts run in threads, and on Python 3.11 ``catch_warnings``
  swaps the process-wide filter list, so one thread leaving it can drop another's filter.
- speed: MAP fit (no MCMC), no yearly seasonality (hourly histories of weeks cannot show one),
  a few hundred uncertainty samples. Prophet draws those with NumPy's global generator, so its
  ``yhat_upper`` varies slightly between runs; the seasonal naive bound does not.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from decisions.forecasting import (
    HOURS_PER_DAY,
    HOURS_PER_WEEK,
    Model,
    SeasonalNaive,
    check_history,
    check_horizon,
    forecast_frame,
)

if TYPE_CHECKING:
    from prophet import Prophet

# prophet.plot logs only "Importing plotly failed" (an ERROR about charts we never draw)
_NOISY_LOGGERS = {
    "prophet": logging.WARNING,
    "prophet.plot": logging.CRITICAL,
    "cmdstanpy": logging.WARNING,
}
_THEIR_MODULES = r"(prophet|cmdstanpy)(\..*)?$"


def _quiet() -> None:
    for name, level in _NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", module=_THEIR_MODULES)


def _prophet_class() -> type[Prophet]:
    """Import Prophet on first use: it takes over a second, and most flows never need it."""
    _quiet()
    from cmdstanpy.utils import get_logger
    from prophet import Prophet

    get_logger()  # cmdstanpy sets its logger up on first use (level DEBUG): let it, then lower it
    _quiet()
    return Prophet


@dataclass(frozen=True, slots=True)
class ProphetModel:
    """Prophet with daily and weekly seasonality and a 95 % interval (``yhat_upper``)."""

    interval_width: float = 0.95
    uncertainty_samples: int = 300
    changepoint_prior_scale: float = 0.05

    name: str = field(default="prophet", init=False)
    complexity: int = field(default=10 * HOURS_PER_WEEK, init=False)
    """More than any seasonal naive: a tie goes to the model with fewer moving parts."""
    min_history_hours: int = field(default=HOURS_PER_WEEK, init=False)
    """A weekly seasonality fitted on less than a week is a guess."""

    def fit(self, history: pd.Series) -> ProphetFit:
        """MAP fit on the UTC history, passed as naive UTC (Prophet refuses aware timestamps)."""
        check_history(history, model=self.name, min_hours=self.min_history_hours)
        prophet_class = _prophet_class()
        model = prophet_class(
            growth="linear",
            daily_seasonality=True,
            weekly_seasonality=True,
            yearly_seasonality=False,
            interval_width=self.interval_width,
            uncertainty_samples=self.uncertainty_samples,
            changepoint_prior_scale=self.changepoint_prior_scale,
            mcmc_samples=0,
        )
        frame = pd.DataFrame(
            {"ds": history.index.tz_convert("UTC").tz_localize(None), "y": history.to_numpy()}
        )
        _quiet()
        model.fit(frame)
        return ProphetFit(model, history.index[-1])


@dataclass(frozen=True, slots=True)
class ProphetFit:
    """A Prophet model fitted to one history."""

    model: Any = field(repr=False)
    last: pd.Timestamp

    def forecast(self, horizon_hours: int) -> pd.DataFrame:
        """``yhat`` and ``yhat_upper`` for the hours after the history, in UTC."""
        check_horizon(horizon_hours)
        start = self.last.tz_convert("UTC").tz_localize(None) + pd.Timedelta(hours=1)
        future = pd.DataFrame({"ds": pd.date_range(start, periods=horizon_hours, freq="h")})
        _quiet()
        predicted = self.model.predict(future)
        return forecast_frame(
            self.last, predicted["yhat"].to_numpy(), predicted["yhat_upper"].to_numpy()
        )


def models_named(names: Sequence[str]) -> tuple[Model, ...]:
    """The models of ``LoadForecastParams.models``, in order (one shared instance each)."""
    known: dict[str, Model] = {
        "seasonal_naive_daily": SeasonalNaive(HOURS_PER_DAY),
        "seasonal_naive_weekly": SeasonalNaive(HOURS_PER_WEEK),
        "prophet": ProphetModel(),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(known)}")
    return tuple(known[n] for n in names)
