"""The real demand series of the forecast benchmark: Taylor's electricity demand, as a request rate.

Why this series: issue 6 asks for a real, registry-installable demand series, and ``pmdarima``
(a dev dependency) embeds one in its wheel as a Python literal, so nothing downloads at run
time: Taylor (2003), half-hourly electricity demand in England and Wales in megawatts, Monday
5 June to Sunday 27 August 2000, 4,032 values (12 weeks). It is the textbook double-seasonal
load series (the same one R's ``forecast::taylor`` ships): a strong daily cycle, working days
against weekends, a slow drift over the summer — the shape of a business service's traffic.

Assumptions, made here once:

- **Clock.** The data set gives no timezone; its values are read in order from Monday 5 June
  2000 00:00, labelled UTC because our planner works in UTC. England's clock was on BST (UTC+1)
  for the whole period (26 March - 29 October 2000: no change inside it), so the true UTC is one
  hour earlier for every value alike; a constant shift moves no season and changes no figure.
- **Hours.** Each hour is the mean of its two half-hours (the planner is hourly; a request rate
  averaged over the hour is what Prometheus' ``rate(...[1h])`` would give).
- **Scale.** ``RPS_PER_MW`` turns megawatts into requests per second: 0.1 req/s per MW puts the
  series between about 1,870 and 3,880 req/s, which the benchmark's service settings turn into
  about 20 to 40 instances. The scale changes no ratio the benchmark prints except through
  rounding to whole instances, which is why it is chosen to give tens of instances, not two.
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pandas as pd

START = pd.Timestamp("2000-06-05 00:00", tz="UTC")
"""Monday 5 June 2000, the first half-hour of the data set (its clock, labelled UTC)."""
RPS_PER_MW = 0.1
"""Requests per second per megawatt of demand: the series as a service's request rate."""
NAME = "taylor"
DESCRIPTION = (
    "Taylor (2003): half-hourly electricity demand of England and Wales, "
    "Mon 5 June - Sun 27 August 2000 (MW)"
)


def provenance() -> str:
    """Where the numbers come from, for the benchmark's header."""
    return (
        f"pmdarima {version('pmdarima')} (PyPI), pmdarima.datasets.load_taylor: embedded in the "
        "wheel, from R's forecast::taylor; J.W. Taylor, J. Oper. Res. Soc. 54 (2003) 799-805"
    )


def half_hourly_mw() -> pd.Series:
    """The 4,032 half-hourly values in MW, indexed from ``START`` (UTC) every 30 minutes."""
    # pmdarima's package import pulls in scikit-learn and statsmodels (several seconds): only
    # here, so importing this module stays cheap.
    from pmdarima.datasets import load_taylor

    values = np.asarray(load_taylor(), dtype=float)
    index = pd.date_range(START, periods=len(values), freq="30min", name="ds")
    return pd.Series(values, index=index, name="demand_mw")


def hourly_rps() -> pd.Series:
    """The request rate of the benchmark's service: hourly mean MW x ``RPS_PER_MW``, UTC index."""
    hourly = half_hourly_mw().resample("h").mean() * RPS_PER_MW
    hourly.name = "request_rate_rps"
    return hourly
