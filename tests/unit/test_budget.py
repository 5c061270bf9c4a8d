"""Retry budget: a ratio over a sliding window, with a floor for quiet clients."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from decisions.budget import RetryBudget, RetryBudgetSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _budget(clock: Clock, **settings) -> RetryBudget:
    defaults = {"budget_percent": 10, "window_seconds": 10, "min_retries_per_window": 0}
    return RetryBudget(RetryBudgetSettings(**(defaults | settings)), clock)


def test_refuses_retries_above_the_ratio_and_counts_refusals() -> None:
    clock = Clock()
    budget = _budget(clock)
    for _ in range(100):
        budget.record_request()
    granted = sum(budget.try_acquire_retry() for _ in range(30))
    assert granted == 10
    snapshot = budget.snapshot()
    assert (snapshot.requests, snapshot.retries, snapshot.refused_total) == (100, 10, 20)


def test_allows_retries_again_as_the_window_slides() -> None:
    clock = Clock()
    budget = _budget(clock)
    for _ in range(100):
        budget.record_request()
    while budget.try_acquire_retry():
        pass
    clock.now += 5
    for _ in range(100):
        budget.record_request()
    assert sum(budget.try_acquire_retry() for _ in range(30)) == 10  # 200 requests, 10 used
    clock.now += 6  # the first 100 requests and their 10 retries left the window
    assert budget.snapshot().requests == 100
    assert budget.snapshot().retries == 10
    assert not budget.try_acquire_retry()
    clock.now += 10  # everything left: nothing to spend, nothing spent
    for _ in range(50):
        budget.record_request()
    assert sum(budget.try_acquire_retry() for _ in range(30)) == 5


def test_the_floor_lets_a_quiet_client_retry() -> None:
    clock = Clock()
    budget = _budget(clock, min_retries_per_window=3)
    budget.record_request()
    assert [budget.try_acquire_retry() for _ in range(4)] == [True, True, True, False]


def test_zero_percent_and_no_floor_never_retries() -> None:
    clock = Clock()
    budget = _budget(clock, budget_percent=0)
    for _ in range(1000):
        budget.record_request()
    assert not budget.try_acquire_retry()


def test_is_thread_safe() -> None:
    clock = Clock()
    budget = _budget(clock)

    def work() -> None:
        for _ in range(1000):
            budget.record_request()
            budget.try_acquire_retry()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snapshot = budget.snapshot()
    assert snapshot.requests == 8000
    assert snapshot.retries <= 800
    assert snapshot.retries + snapshot.refused_total == 8000


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"budget_percent": -1}, "budget_percent"),
        ({"budget_percent": 101}, "budget_percent"),
        ({"window_seconds": 0}, "window_seconds"),
        ({"min_retries_per_window": -1}, "min_retries_per_window"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        RetryBudgetSettings(**settings)
