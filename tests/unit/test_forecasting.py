"""Forecasting: cleaning, seasonal naive, MASE, backtest and choice; one small Prophet fit."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from decisions.forecasting import (
    SeasonalNaive,
    backtest,
    choose_model,
    clean_history,
    mase,
    score_models,
)

START = pd.Timestamp("2026-03-02 00:00", tz="UTC")  # a Monday


def _load(days: int = 28, *, seed: int = 7, noise: float = 4.0, trend: float = 0.0) -> pd.Series:
    """Requests/s with a daily cycle, quieter weekends, noise and an optional trend per day."""
    hours = np.arange(days * 24)
    daily = 40 * np.sin(2 * np.pi * (hours % 24 - 9) / 24)
    weekend = np.where((hours // 24) % 7 >= 5, -30.0, 0.0)
    rng = np.random.default_rng(seed)
    values = 150 + daily + weekend + trend * hours / 24 + rng.normal(0, noise, hours.size)
    index = pd.date_range(START, periods=hours.size, freq="h")
    return pd.Series(values, index=index, name="rps")


# --------------------------------------------------------------------------- cleaning


def test_a_clean_history_passes_through_unchanged() -> None:
    load = _load()
    out = clean_history(load, service="api")
    pd.testing.assert_series_equal(out, load, check_freq=False)
    assert str(out.index.tz) == "UTC"
    assert out.index.freq == "h"


def test_unsorted_duplicated_and_sub_hourly_points_are_averaged_into_hours() -> None:
    load = _load(days=8)
    quarter = load.resample("15min").ffill().iloc[::-1]  # reversed, 4 points per hour
    hour = load.index[50]
    copies = quarter[quarter.index.floor("h") == hour] + 8  # the same 4 timestamps again
    out = clean_history(pd.concat([quarter, copies]), service="api")
    assert out.index.is_monotonic_increasing
    assert out.index.freq == "h"
    # duplicates merged: the mean of 4 originals and 4 copies 8 higher
    assert out.loc[hour] == pytest.approx(load.loc[hour] + 4)
    pd.testing.assert_series_equal(out.drop(hour), load.drop(hour), check_freq=False)


def test_an_aware_index_is_converted_to_utc() -> None:
    load = _load(days=8)
    berlin = load.tz_convert("Europe/Berlin")
    out = clean_history(berlin, service="api")
    assert str(out.index.tz) == "UTC"
    pd.testing.assert_series_equal(out, load, check_freq=False)


def test_a_naive_index_is_refused_naming_the_service() -> None:
    naive = _load(days=8).tz_localize(None)
    with pytest.raises(ValueError, match=r"service 'checkout'.*no timezone"):
        clean_history(naive, service="checkout")


def test_a_short_gap_is_interpolated_and_a_long_one_filled_from_a_week_earlier() -> None:
    load = _load()
    holed = load.copy()
    short = slice(200, 203)  # 3 hours
    long = slice(400, 410)  # 10 hours, across a day's rise
    holed.iloc[short] = np.nan
    holed = holed.drop(holed.index[long])  # missing points, not NaN ones
    out = clean_history(holed, service="api")
    assert len(out) == len(load)
    expected_short = np.linspace(load.iloc[199], load.iloc[203], 5)[1:-1]
    np.testing.assert_allclose(out.iloc[short], expected_short)
    np.testing.assert_allclose(out.iloc[long], load.iloc[400 - 168 : 410 - 168])


def test_a_long_gap_in_the_first_week_is_filled_from_a_week_later() -> None:
    load = _load(days=10)
    holed = load.copy()
    holed.iloc[30:40] = np.nan
    out = clean_history(holed, service="api")
    np.testing.assert_allclose(out.iloc[30:40], load.iloc[30 + 168 : 40 + 168])


def test_spikes_and_drops_are_clipped_and_ordinary_hours_kept() -> None:
    load = _load()
    spiked = load.copy()
    spiked.iloc[100] = 5000.0  # a scrape glitch
    spiked.iloc[300:302] = 0.0  # an outage: demand did not vanish
    out = clean_history(spiked, service="api")
    assert out.iloc[100] < 250
    assert (out.iloc[300:302] > 50).all()
    untouched = np.isclose(out.to_numpy(), load.to_numpy())
    assert untouched.mean() > 0.99


@pytest.mark.parametrize(
    ("series", "message"),
    [
        (pd.Series(np.nan, index=_load(days=8).index), r"service 'search'.*no usable values"),
        (pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC")), r"'search'.*no usable"),
        (_load(days=3), r"service 'search'.*spans 3\.0 days, at least 7 needed"),
        (_load(days=8).iloc[::3], r"service 'search'.*6\d% of the h steps.*missing"),
        (pd.Series([1.0, 2.0]), r"service 'search'.*indexed by timestamps"),
    ],
    ids=["nan-only", "empty", "too-short", "mostly-missing", "no-timestamps"],
)
def test_unusable_histories_are_refused_naming_the_service(series, message) -> None:
    with pytest.raises(ValueError, match=message):
        clean_history(series, service="search")


def test_negative_and_non_finite_values_count_as_missing() -> None:
    load = _load(days=8)
    bad = load.copy()
    bad.iloc[50] = -3.0
    bad.iloc[51] = np.inf
    out = clean_history(bad, service="api")
    np.testing.assert_allclose(out.iloc[50:52], np.linspace(load.iloc[49], load.iloc[52], 4)[1:3])


# --------------------------------------------------------------------------- MASE


def test_mase_of_a_perfect_forecast_is_zero() -> None:
    load = _load()
    assert mase(load.iloc[-48:], load.iloc[-48:], load.iloc[:-48], 24) == 0.0


def test_mase_of_seasonal_naive_on_its_own_season_is_one() -> None:
    load = _load().to_numpy()
    # in sample, by definition
    assert mase(load[24:], load[:-24], load, 24) == pytest.approx(1.0)
    # out of sample, on a stationary series: about one
    train, test = load[:-168], load[-168:]
    assert 0.7 < mase(test, train[-168:], train, 168) < 1.3


@pytest.mark.parametrize(
    ("actual", "predicted", "training", "message"),
    [
        ([1.0, 2.0], [1.0], [1.0, 2.0, 3.0], "equally long"),
        ([1.0], [1.0], [1.0, 2.0], "longer than season 2"),
        ([1.0], [np.nan], [1.0, 2.0, 3.0], "NaN"),
        ([1.0], [1.0], [5.0, 6.0, 5.0, 6.0], "repeats exactly every 2"),
    ],
)
def test_mase_refuses_what_it_cannot_define(actual, predicted, training, message) -> None:
    with pytest.raises(ValueError, match=message):
        mase(actual, predicted, training, 2)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("season", [24, 168])
@pytest.mark.parametrize("horizon", [1, 48, 200])
def test_seasonal_naive_forecasts_the_horizon_after_the_history(season, horizon) -> None:
    load = _load()
    forecast = SeasonalNaive(season).fit(load).forecast(horizon)
    assert list(forecast.columns) == ["yhat", "yhat_upper"]
    assert len(forecast) == horizon
    assert forecast.index[0] == load.index[-1] + pd.Timedelta(hours=1)
    assert (forecast.index.to_series().diff().dropna() == pd.Timedelta(hours=1)).all()
    assert (forecast["yhat_upper"] >= forecast["yhat"]).all()
    repeated = np.tile(load.to_numpy()[-season:], horizon // season + 1)[:horizon]
    np.testing.assert_allclose(forecast["yhat"], repeated)


def test_seasonal_naive_upper_bound_covers_about_95_percent() -> None:
    load = _load(days=35, noise=8)
    train, test = load.iloc[:-168], load.iloc[-168:]
    forecast = SeasonalNaive(168).fit(train).forecast(168)
    covered = (test.to_numpy() <= forecast["yhat_upper"].to_numpy()).mean()
    assert covered > 0.9


def test_seasonal_naive_refuses_a_raw_or_short_history() -> None:
    load = _load(days=10)
    with pytest.raises(ValueError, match="needs at least 336 hours"):
        SeasonalNaive(168).fit(load.iloc[:300])
    with pytest.raises(ValueError, match="UTC DatetimeIndex"):
        SeasonalNaive(24).fit(load.tz_localize(None))
    with pytest.raises(ValueError, match="hourly and gap-free"):
        SeasonalNaive(24).fit(load.drop(load.index[100]))
    with pytest.raises(ValueError, match="horizon_hours must be at least 1"):
        SeasonalNaive(24).fit(load).forecast(0)


# --------------------------------------------------------------------------- backtest, choice


def test_backtest_scores_each_model_and_the_weekly_naive_wins_on_a_weekly_series() -> None:
    load = _load()
    models = [SeasonalNaive(24), SeasonalNaive(168)]
    scores = backtest(load, models, holdout_days=2)
    assert set(scores) == {"seasonal_naive_daily", "seasonal_naive_weekly"}
    # the holdout is a Saturday and Sunday: yesterday (Friday) is the wrong day to repeat
    assert scores["seasonal_naive_weekly"] < scores["seasonal_naive_daily"]
    assert choose_model(scores, models) == SeasonalNaive(168)


def test_backtest_leaves_out_a_model_the_history_is_too_short_for() -> None:
    scores = backtest(_load(days=8), [SeasonalNaive(24), SeasonalNaive(168)], holdout_days=2)
    assert set(scores) == {"seasonal_naive_daily"}
    with pytest.raises(ValueError, match=r"no model can be backtested: 144 hours.*need 336"):
        backtest(_load(days=8), [SeasonalNaive(168)], holdout_days=2)


def test_choose_model_breaks_ties_towards_the_simpler_model() -> None:
    daily, weekly = SeasonalNaive(24), SeasonalNaive(168)
    tied = {daily.name: 0.8, weekly.name: 0.8}
    assert choose_model(tied, [weekly, daily]) == daily
    close = {daily.name: 0.8, weekly.name: 0.79}
    assert choose_model(close, [weekly, daily]) == weekly
    assert choose_model(close, [weekly, daily], tolerance=0.05) == daily
    with pytest.raises(ValueError, match="has a score"):
        choose_model({}, [daily])


def test_prophet_forecasts_quietly_and_choose_model_takes_the_lower_mase(capfd) -> None:
    from tasks.forecast_models import ProphetModel

    load = _load(days=14, trend=3.0)
    train, test = load.iloc[:-48], load.iloc[-48:]
    prophet = ProphetModel(uncertainty_samples=100)
    naive = SeasonalNaive(24)

    forecast = prophet.fit(train).forecast(48)  # the one Prophet fit of the suite

    assert len(forecast) == 48
    assert forecast.index[0] == train.index[-1] + pd.Timedelta(hours=1)
    assert str(forecast.index.tz) == "UTC"
    assert (forecast["yhat_upper"] >= forecast["yhat"]).all()
    scores = {
        prophet.name: mase(test, forecast["yhat"], train, 24),
        naive.name: mase(test, naive.fit(train).forecast(48)["yhat"], train, 24),
    }
    lower = min(scores, key=scores.__getitem__)
    assert choose_model(scores, [prophet, naive]).name == lower
    # pytest's own log handler hides cmdstanpy's stderr handler: check the levels as well
    assert logging.getLogger("cmdstanpy").getEffectiveLevel() >= logging.WARNING
    captured = capfd.readouterr()
    assert "cmdstanpy" not in captured.err + captured.out
    assert "plotly" not in captured.err + captured.out


def test_a_series_repeating_exactly_is_ranked_by_mae_not_refused() -> None:
    day = np.concatenate([np.full(8, 10.0), np.full(16, 50.0)])
    index = pd.date_range("2026-11-01", periods=24 * 21, freq="h", tz="UTC")
    flat_days = pd.Series(np.tile(day, 21), index=index)
    scored = score_models(flat_days, [SeasonalNaive(24), SeasonalNaive(168)])
    assert scored.metric == "MAE"
    assert scored.scores == {"seasonal_naive_daily": 0.0, "seasonal_naive_weekly": 0.0}
    assert choose_model(scored.scores, [SeasonalNaive(24), SeasonalNaive(168)]) == SeasonalNaive(24)
    assert score_models(_load(), [SeasonalNaive(24)]).metric == "MASE"


def test_the_upper_bound_ignores_the_recent_trend() -> None:
    # a month of falling load: signed errors are all negative; the margin still covers a rebound
    index = pd.date_range("2026-11-01", periods=24 * 28, freq="h", tz="UTC")
    hours = np.arange(len(index))
    falling = pd.Series(1000 - hours * 0.5 + 50 * np.sin(2 * np.pi * hours / 24), index=index)
    forecast = SeasonalNaive(24).fit(falling).forecast(24)
    margin = (forecast["yhat_upper"] - forecast["yhat"]).to_numpy()
    assert np.allclose(margin, 12.0)  # |y[t] - y[t - 24]| is 12 every hour
