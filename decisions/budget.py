"""Retry budget: retries may add at most ``budget_percent`` % to the requests sent.

The recipe's budget counts since the process started, so after a calm hour it allows a storm,
and with no requests it always says yes. Ours is Finagle's and Envoy's: a sliding window of
``window_seconds``; a retry is allowed while retries in the window stay under
``budget_percent`` % of the first attempts in the window, or under the floor
``min_retries_per_window`` so a quiet client can still retry the odd failure. Refusals are
counted, because a refused retry is the signal that a dependency is in trouble.

Why written here: no maintained Python library offers a retry budget (stamina, tenacity and
backoff retry per call); Finagle's ``RetryBudget`` and Envoy's ``retry_budget`` are the models.
Thread-safe: one budget per target is shared by every caller of that target.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from decisions.window import SlidingCounts


class RetryBudgetSettings(BaseModel):
    """Settings of one retry budget (Google SRE: 10 % per client)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget_percent: float = Field(
        10.0, ge=0, le=100, description="Retries allowed, as a percentage of first attempts."
    )
    window_seconds: float = Field(10.0, gt=0, description="Length of the sliding window.")
    min_retries_per_window: int = Field(
        3, ge=0, description="Retries always allowed per window, so a quiet client can retry."
    )
    buckets: int = Field(10, ge=1, le=1000, description="Resolution of the sliding window.")


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """What the budget saw in its current window, and its refusals since it was made."""

    requests: int
    retries: int
    allowed_retries: int
    refused_total: int


class RetryBudget:
    """A sliding-window retry budget for one target."""

    def __init__(self, settings: RetryBudgetSettings, clock: Callable[[], float]):
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._window = SlidingCounts(
            settings.window_seconds, settings.buckets, ("requests", "retries")
        )
        self._refused = 0

    def record_request(self) -> None:
        """Count a first attempt (a logical request), retries excluded."""
        with self._lock:
            self._window.add(self._clock(), requests=1)

    def try_acquire_retry(self) -> bool:
        """Allow and count one retry, or refuse it (and count the refusal)."""
        with self._lock:
            now = self._clock()
            totals = self._window.totals(now)
            if totals["retries"] + 1 <= self._allowed(totals["requests"]):
                self._window.add(now, retries=1)
                return True
            self._refused += 1
            return False

    def snapshot(self) -> BudgetSnapshot:
        with self._lock:
            totals = self._window.totals(self._clock())
            return BudgetSnapshot(
                requests=totals["requests"],
                retries=totals["retries"],
                allowed_retries=int(self._allowed(totals["requests"])),
                refused_total=self._refused,
            )

    def _allowed(self, requests: int) -> float:
        by_ratio = requests * self.settings.budget_percent / 100.0
        return max(float(self.settings.min_retries_per_window), by_ratio)
