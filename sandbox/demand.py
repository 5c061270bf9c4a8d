"""Synthetic request-rate histories with the shape of real web load, for the sandbox's demo, the
tests and the 200-service timing of ``benchmarks/forecast.py``.

Shape: a daily cycle (quiet at night, a morning ramp, an evening peak), weekends lighter than
weekdays, multiplicative noise, a slow trend; all in UTC hours. Seeded, so a test's plan is
known. The replay benchmark's accuracy figures come from a real series (Taylor's electricity
demand, shipped with pmdarima), not from this.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_demand(
    end: datetime,
    *,
    days: int = 28,
    base_rps: float = 100.0,
    daily_amplitude: float = 0.6,
    weekend_factor: float = 0.7,
    noise: float = 0.05,
    trend_per_week: float = 0.0,
    peak_hour_utc: int = 18,
    seed: int = 0,
) -> pd.Series:
    """Hourly req/s for the ``days`` before ``end`` (exclusive, an aware hour), UTC index."""
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware")
    index = pd.date_range(end=pd.Timestamp(end).tz_convert("UTC"), periods=days * 24 + 1, freq="h")
    index = index[:-1]
    hours = np.arange(len(index), dtype=float)
    hour_of_day = index.hour.to_numpy()
    daily = 1 + daily_amplitude * np.cos(2 * math.pi * (hour_of_day - peak_hour_utc) / 24)
    weekend = np.where(index.day_of_week.to_numpy() >= 5, weekend_factor, 1.0)
    trend = 1 + trend_per_week * hours / (7 * 24)
    rng = np.random.default_rng(seed)
    wobble = 1 + noise * rng.standard_normal(len(index))
    values = np.clip(base_rps * daily * weekend * trend * wobble, 0, None)
    return pd.Series(values, index=index, name="value")


def write_history_csv(path: Path, series: pd.Series) -> Path:
    """``timestamp,value`` rows with ISO timestamps carrying their UTC offset."""
    frame = pd.DataFrame(
        {"timestamp": [t.isoformat() for t in series.index], "value": series.to_numpy()}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
