"""The storm drill's pure parts: the recipe's loop as the baseline, the scaled policy, bounds."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from runbooks.resilience import ResiliencePolicy
from sandbox.storm import DrillSettings, exponential_backoff_retry, scaled_policy


def test_the_naive_loop_is_the_recipes_scaled() -> None:
    slept: list[float] = []
    calls = []

    def always_fails() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        exponential_backoff_retry(
            always_fails, time_scale=0.5, rng=random.Random(1), sleep=slept.append
        )
    assert len(calls) == 5
    assert len(slept) == 4
    for attempt, wait in enumerate(slept):
        base = 2**attempt * 0.5
        assert base <= wait <= base * 1.1  # the recipe's 10 % jitter: the flaw we compare against


def test_the_naive_loop_returns_the_first_success() -> None:
    results = iter([ValueError("once"), "ok"])

    def flaky() -> str:
        value = next(results)
        if isinstance(value, Exception):
            raise value
        return value

    slept: list[float] = []
    assert exponential_backoff_retry(flaky, sleep=slept.append) == "ok"
    assert len(slept) == 1


def test_scaled_policy_scales_every_time_and_nothing_else() -> None:
    default, scaled = ResiliencePolicy(), scaled_policy(0.02, budget_percent=10)
    for name in ("backoff", "budget", "breaker"):
        before = getattr(default, name).model_dump()
        after = getattr(scaled, name).model_dump()
        for key, value in before.items():
            expected = value * 0.02 if key.endswith("_seconds") else value
            assert after[key] == pytest.approx(expected), f"{name}.{key}"
    assert scaled.retry_statuses == default.retry_statuses
    assert scaled.idempotent_methods == default.idempotent_methods


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"outage_seconds": 10_000}, "max_wall_seconds"),
        ({"clients": 64, "interval_seconds": 0.1}, "max_offered_per_wall_second"),
        ({"clients": 0}, "clients"),
        ({"time_scale": 0}, "time_scale"),
    ],
)
def test_settings_refuse_an_unbounded_drill(changes: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        DrillSettings(**changes)
