"""Full-jitter backoff: distribution, bounds, Retry-After, and refused settings."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from decisions.backoff import Backoff

BACKOFF = Backoff(base_seconds=0.1, cap_seconds=20.0, max_attempts=20, max_total_seconds=1e9)
SAMPLES = 4000
BINS = 10


def _recipe_delay(attempt: int) -> float:
    """The recipe's: base * 2**n plus up to 10 % jitter, capped (for the test to reject)."""
    base = 0.1 * 2**attempt
    return min(base + random.uniform(0, base * 0.1), 20.0)


def _clamp_after_jitter(attempt: int) -> float:
    """tenacity's wait_exponential_jitter / stamina: jitter added, then clamped."""
    return min(0.1 * 2**attempt + random.uniform(0, 1), 20.0)


def _is_uniform_on(samples: list[float], high: float) -> bool:
    """Bucketed check: every tenth of [0, high] holds ~10 % of the samples, none outside."""
    if any(not 0.0 <= s <= high for s in samples):
        return False
    counts = [0] * BINS
    for s in samples:
        counts[min(int(s / high * BINS), BINS - 1)] += 1
    expected = len(samples) / BINS
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    return chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001


@pytest.mark.parametrize("attempt", range(1, 11))
def test_delay_is_uniform_up_to_the_capped_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)
    high = min(20.0, 0.1 * 2**attempt)
    assert BACKOFF.ceiling(attempt) == pytest.approx(high)
    samples = [BACKOFF.delay(attempt, rng) for _ in range(SAMPLES)]
    assert _is_uniform_on(samples, high)


@pytest.mark.parametrize("attempt", range(1, 11))
@pytest.mark.parametrize("wrong", [_recipe_delay, _clamp_after_jitter])
def test_the_check_rejects_ten_percent_jitter_and_clamp_after_jitter(wrong, attempt: int) -> None:
    random.seed(attempt)
    samples = [wrong(attempt) for _ in range(SAMPLES)]
    assert not _is_uniform_on(samples, min(20.0, 0.1 * 2**attempt))


def test_gives_up_after_max_attempts() -> None:
    backoff = Backoff(base_seconds=0.1, cap_seconds=1, max_attempts=3, max_total_seconds=60)
    assert backoff.next_delay(1, 0.0) is not None
    assert backoff.next_delay(2, 0.0) is not None
    assert backoff.next_delay(3, 0.0) is None


def test_gives_up_when_the_wait_would_cross_the_total_time() -> None:
    backoff = Backoff(base_seconds=1, cap_seconds=1, max_attempts=10, max_total_seconds=5)
    assert backoff.next_delay(1, elapsed_seconds=3.9, retry_after_seconds=1.0) == 1.0
    assert backoff.next_delay(1, elapsed_seconds=4.5, retry_after_seconds=1.0) is None


def test_retry_after_replaces_the_jittered_wait() -> None:
    backoff = Backoff(base_seconds=0.1, cap_seconds=0.2, max_attempts=5, max_total_seconds=60)
    assert backoff.next_delay(1, 0.0, retry_after_seconds=7.0) == 7.0
    assert backoff.next_delay(1, 0.0, retry_after_seconds=0.0) == 0.0
    assert backoff.next_delay(1, 0.0, retry_after_seconds=120.0) is None  # beyond the bound


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert BACKOFF.ceiling(10_000) == 20.0


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"base_seconds": 1.0, "cap_seconds": 0.5}, "cap_seconds"),
        ({"base_seconds": 0}, "base_seconds"),
        ({"base_seconds": -1}, "base_seconds"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_total_seconds": 0}, "max_total_seconds"),
        ({"cap_seconds": "soon"}, "cap_seconds"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Backoff(**settings)
