"""Circuit breaker: scripted outcomes drive every transition."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from decisions.breaker import BreakerSettings, BreakerState, CircuitBreaker, Transition

SETTINGS = BreakerSettings(
    failure_rate_percent=50,
    slow_call_rate_percent=80,
    slow_call_seconds=1.0,
    window_seconds=10,
    minimum_calls=4,
    open_seconds=5,
    half_open_probes=2,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transitions() -> list[Transition]:
    return []


@pytest.fixture
def breaker(clock: Clock, transitions: list[Transition]) -> CircuitBreaker:
    return CircuitBreaker("payments", SETTINGS, clock, transitions.append)


def _call(breaker: CircuitBreaker, ok: bool, seconds: float = 0.01) -> bool:
    permit = breaker.acquire()
    if permit is None:
        return False
    breaker.record(permit, success=ok, duration_seconds=seconds)
    return True


def _states(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.from_state.value, t.to_state.value) for t in transitions]


def test_closed_open_half_open_closed(breaker, clock, transitions) -> None:
    for ok in (True, False, True):
        assert _call(breaker, ok)
    assert breaker.state is BreakerState.CLOSED  # under minimum_calls
    assert _call(breaker, False)  # 2 failures of 4 = 50 %
    assert breaker.state is BreakerState.OPEN
    assert not _call(breaker, True)  # open: not called
    assert breaker.retry_after() == pytest.approx(5.0)
    clock.now += 5
    assert _call(breaker, True)  # first probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert _call(breaker, True)
    assert breaker.state is BreakerState.CLOSED
    assert _states(transitions) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert "failure rate 50%" in transitions[0].reason


def test_half_open_reopens_on_failed_probes(breaker, clock, transitions) -> None:
    for _ in range(4):
        _call(breaker, False)
    clock.now += 5
    assert _call(breaker, False)  # 1 of 2 probes failed: 50 % >= 50 %: reopen at once
    assert breaker.state is BreakerState.OPEN
    assert _states(transitions)[-2:] == [("open", "half_open"), ("half_open", "open")]
    assert not _call(breaker, True)


def test_half_open_admits_only_n_probes(breaker, clock) -> None:
    for _ in range(4):
        _call(breaker, False)
    clock.now += 5
    first, second = breaker.acquire(), breaker.acquire()
    assert first is not None
    assert second is not None
    assert breaker.acquire() is None  # third caller refused while probes are out
    breaker.record(first, success=True, duration_seconds=0.01)
    breaker.record(second, success=True, duration_seconds=0.01)
    assert breaker.state is BreakerState.CLOSED


def test_slow_calls_open_the_breaker(breaker) -> None:
    for _ in range(3):
        _call(breaker, True, seconds=2.0)
    assert breaker.state is BreakerState.CLOSED
    _call(breaker, True, seconds=2.0)  # 4 of 4 slow: 100 % >= 80 %
    assert breaker.state is BreakerState.OPEN


def test_failures_leave_the_window(breaker, clock) -> None:
    _call(breaker, False)
    _call(breaker, False)
    clock.now += 11
    _call(breaker, True)
    _call(breaker, False)
    _call(breaker, True)
    assert breaker.state is BreakerState.CLOSED  # only 1 failure of 3 in the window


def test_late_outcome_from_a_previous_state_is_ignored(breaker, clock) -> None:
    straggler = breaker.acquire()
    for _ in range(4):
        _call(breaker, False)
    clock.now += 5
    probe = breaker.acquire()
    assert straggler is not None
    assert probe is not None
    breaker.record(straggler, success=False, duration_seconds=9)  # admitted while closed
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(probe, success=True, duration_seconds=0.01)
    assert _call(breaker, True)
    assert breaker.state is BreakerState.CLOSED


def test_trip_and_reset_are_kill_switches(breaker, transitions) -> None:
    breaker.trip("storm containment")
    assert breaker.state is BreakerState.OPEN
    assert not _call(breaker, True)
    breaker.reset("storm over")
    assert breaker.state is BreakerState.CLOSED
    assert [t.reason for t in transitions] == ["storm containment", "storm over"]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"failure_rate_percent": 101}, "failure_rate_percent"),
        ({"failure_rate_percent": 0}, "failure_rate_percent"),
        ({"slow_call_rate_percent": 150}, "slow_call_rate_percent"),
        ({"minimum_calls": 0}, "minimum_calls"),
        ({"open_seconds": -1}, "open_seconds"),
        ({"half_open_probes": 0}, "half_open_probes"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        BreakerSettings(**settings)
