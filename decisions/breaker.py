"""Circuit breaker: stop calling a dependency that is failing or slow, probe it, resume.

States and transitions (Resilience4j's model, with its time-based sliding window)::

    CLOSED --(failure rate or slow-call rate >= threshold, over >= minimum_calls)--> OPEN
    OPEN   --(open_seconds passed, on the next call)-----------------------------> HALF_OPEN
    HALF_OPEN --(half_open_probes outcomes under both thresholds)----------------> CLOSED
    HALF_OPEN --(probe outcomes reach a threshold)--------------------------------> OPEN

Every transition is handed to ``on_transition`` (outside the lock, so a listener may log or
emit events without stalling callers). Calls are admitted with a :class:`Permit` that names
the breaker *epoch* it was admitted in; an outcome that arrives after the breaker moved on (a
slow call admitted while closed finishing after it opened) is ignored instead of corrupting the
new state's counts.

Why written here: pybreaker (the recipe's) counts consecutive failures only, with no slow-call
rate, no sliding window and no half-open probe count; aiobreaker and circuitbreaker are the
same. No maintained Python library has Resilience4j's semantics, and these ~150 lines are
pure and fully tested.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from decisions.window import SlidingCounts


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerSettings(BaseModel):
    """Settings of one circuit breaker (Resilience4j's names and, where sensible, defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_rate_percent: float = Field(
        50.0, gt=0, le=100, description="Failure rate (%) over the window that opens the breaker."
    )
    slow_call_rate_percent: float = Field(
        100.0, gt=0, le=100, description="Slow-call rate (%) over the window that opens it."
    )
    slow_call_seconds: float = Field(5.0, gt=0, description="A call at least this long is slow.")
    window_seconds: float = Field(30.0, gt=0, description="Length of the sliding window.")
    minimum_calls: int = Field(
        10, ge=1, description="Calls needed in the window before rates are judged."
    )
    open_seconds: float = Field(
        10.0, gt=0, description="Time spent open before probing in half-open."
    )
    half_open_probes: int = Field(3, ge=1, description="Probe calls admitted when half-open.")
    buckets: int = Field(10, ge=1, le=1000, description="Resolution of the sliding window.")


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state, as logged and emitted as an event."""

    target: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Permit:
    """Admission of one call; hand it back to :meth:`CircuitBreaker.record`."""

    epoch: int
    probe: bool


class CircuitBreaker:
    """A thread-safe circuit breaker for one target."""

    def __init__(
        self,
        target: str,
        settings: BreakerSettings,
        clock: Callable[[], float],
        on_transition: Callable[[Transition], None] | None = None,
    ):
        self.target = target
        self.settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._epoch = 0
        self._opened_at = 0.0
        self._window = SlidingCounts(
            settings.window_seconds, settings.buckets, ("calls", "failures", "slow")
        )
        self._probes_admitted = 0
        self._probe_calls = 0
        self._probe_failures = 0
        self._probe_slow = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker admits a probe (0 when not open)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.settings.open_seconds - self._clock())

    def acquire(self) -> Permit | None:
        """Admit a call (a :class:`Permit`) or refuse it (``None``)."""
        transition = None
        with self._lock:
            if self._state is BreakerState.OPEN:
                if self._clock() - self._opened_at < self.settings.open_seconds:
                    return None
                transition = self._move(BreakerState.HALF_OPEN, "open wait elapsed; probing")
            if self._state is BreakerState.HALF_OPEN:
                if self._probes_admitted >= self.settings.half_open_probes:
                    permit = None
                else:
                    self._probes_admitted += 1
                    permit = Permit(self._epoch, probe=True)
            else:
                permit = Permit(self._epoch, probe=False)
        self._announce(transition)
        return permit

    def record(self, permit: Permit, *, success: bool, duration_seconds: float) -> None:
        """Record the outcome of an admitted call."""
        slow = duration_seconds >= self.settings.slow_call_seconds
        transition = None
        with self._lock:
            if permit.epoch != self._epoch:
                return
            if self._state is BreakerState.CLOSED:
                transition = self._record_closed(success, slow)
            elif self._state is BreakerState.HALF_OPEN and permit.probe:
                transition = self._record_probe(success, slow)
        self._announce(transition)

    def trip(self, reason: str) -> None:
        """Open the breaker now (a kill switch), whatever the window says."""
        with self._lock:
            transition = self._move(BreakerState.OPEN, reason)
        self._announce(transition)

    def reset(self, reason: str) -> None:
        """Close the breaker now and forget the window."""
        with self._lock:
            transition = self._move(BreakerState.CLOSED, reason)
        self._announce(transition)

    # -- under the lock ---------------------------------------------------------------------

    def _record_closed(self, success: bool, slow: bool) -> Transition | None:
        now = self._clock()
        self._window.add(now, calls=1, failures=0 if success else 1, slow=1 if slow else 0)
        totals = self._window.totals(now)
        if totals["calls"] < self.settings.minimum_calls:
            return None
        reason = self._verdict(totals["calls"], totals["failures"], totals["slow"])
        return self._move(BreakerState.OPEN, reason) if reason else None

    def _record_probe(self, success: bool, slow: bool) -> Transition | None:
        self._probe_calls += 1
        self._probe_failures += 0 if success else 1
        self._probe_slow += 1 if slow else 0
        probes = self.settings.half_open_probes
        # Judge over all probes, counting the ones still out as successes: if the rate is
        # already at the threshold, more outcomes cannot save it, so re-open now.
        reason = self._verdict(probes, self._probe_failures, self._probe_slow)
        if reason:
            return self._move(BreakerState.OPEN, f"half-open probes: {reason}")
        if self._probe_calls >= probes:
            return self._move(BreakerState.CLOSED, f"{probes} probes passed")
        return None

    def _verdict(self, calls: int, failures: int, slow: int) -> str:
        failure_rate = 100.0 * failures / calls
        slow_rate = 100.0 * slow / calls
        if failure_rate >= self.settings.failure_rate_percent:
            return f"failure rate {failure_rate:.0f}% of {calls} calls"
        if slow_rate >= self.settings.slow_call_rate_percent:
            return f"slow-call rate {slow_rate:.0f}% of {calls} calls"
        return ""

    def _move(self, to: BreakerState, reason: str) -> Transition | None:
        if to is self._state:
            return None
        now = self._clock()
        transition = Transition(self.target, self._state, to, reason, now)
        self._state = to
        self._epoch += 1
        self._probes_admitted = self._probe_calls = self._probe_failures = self._probe_slow = 0
        if to is BreakerState.OPEN:
            self._opened_at = now
        if to is BreakerState.CLOSED:
            self._window.clear()
        return transition

    def _announce(self, transition: Transition | None) -> None:
        if transition is not None and self._on_transition is not None:
            self._on_transition(transition)
