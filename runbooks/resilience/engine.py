"""The retry loop every outgoing call goes through, and the per-target state it shares.

One :class:`Resilience` holds a policy and, per target (a host:port or a named dependency), one
retry budget and one circuit breaker, shared by every thread calling that target. Its
:meth:`Resilience.call` runs one *logical* request:

1. the breaker admits the attempt or the call fails fast with ``CircuitOpenError``;
2. the attempt's outcome is classified by the caller's :class:`Verdict` functions (the loop
   knows nothing of HTTP, Kubernetes or AWS);
3. a transient failure of an idempotent request is retried only if the backoff allows it
   (attempts and total time, ``Retry-After`` honoured), the breaker will not still be open when
   the wait ends, *and then* the budget grants it, so the budget is never charged for a retry
   that does not happen;
4. waits go through :func:`sleep`, which the testing switch turns into a record.

Retries happen here and nowhere else around the same call (no urllib3 retries, no Prefect task
retries on top): one layer, bounded.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from decisions.breaker import BreakerState, CircuitBreaker, Transition
from decisions.budget import RetryBudget
from runbooks.errors import CircuitOpenError
from runbooks.resilience.metrics import ClientMetrics
from runbooks.resilience.policy import ResiliencePolicy

T = TypeVar("T")
logger = logging.getLogger("runbooks.resilience")


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one attempt went, as the loop needs to know it.

    ``failure``: counts against the target in the breaker (5xx, 429, timeouts, connect errors;
    not a 404 or a 400, which say nothing about the target's health). ``retryable``: a retry may
    succeed. ``retry_after_seconds``: the server's hint.
    """

    failure: bool
    retryable: bool
    retry_after_seconds: float | None = None


SUCCESS = Verdict(failure=False, retryable=False)


class Resilience:
    """Policy plus per-target budgets and breakers; thread-safe; one per process is typical."""

    def __init__(
        self,
        policy: ResiliencePolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[Transition], None] | None = None,
    ):
        self.policy = policy or ResiliencePolicy()
        self.metrics = ClientMetrics()
        self._clock = clock
        self._extra_listener = on_transition
        self._lock = threading.Lock()
        self._budgets: dict[str, RetryBudget] = {}
        self._breakers: dict[str, CircuitBreaker] = {}

    def budget(self, target: str) -> RetryBudget:
        with self._lock:
            budget = self._budgets.get(target)
            if budget is None:
                budget = self._budgets[target] = RetryBudget(self.policy.budget, self._clock)
            return budget

    def breaker(self, target: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(target)
            if breaker is None:
                breaker = self._breakers[target] = CircuitBreaker(
                    target, self.policy.breaker, self._clock, self._transitioned
                )
                self.metrics.set_breaker_state(target, BreakerState.CLOSED)
            return breaker

    def call(
        self,
        target: str,
        attempt: Callable[[], T],
        *,
        judge_result: Callable[[T], Verdict],
        judge_error: Callable[[Exception], Verdict],
        idempotent: bool,
        discard: Callable[[T], None] | None = None,
    ) -> T:
        """Run one logical request with breaker, backoff and budget around ``attempt``.

        Returns the last result (a failed one too, e.g. a final 503 response: the caller decides
        what a status means) or raises the last error. ``discard`` releases a result that is
        about to be retried (e.g. closes an HTTP response).
        """
        breaker, budget, metrics = self.breaker(target), self.budget(target), self.metrics
        backoff = self.policy.backoff
        started = self._clock()
        budget.record_request()
        metrics.requests.labels(target=target).inc()
        number = 0
        result: Any = None
        failed: Exception | None = None
        while True:
            number += 1
            permit = breaker.acquire()
            if permit is None:
                metrics.breaker_rejections.labels(target=target).inc()
                if number == 1:
                    raise CircuitOpenError(target, breaker.retry_after())
                return _give_up(result, failed)  # the breaker opened while we were waiting
            if number > 1:
                metrics.retries.labels(target=target).inc()  # counted once really sent
                if failed is None and discard is not None:
                    discard(result)  # only now: had the breaker refused, the caller gets it
            attempt_started = self._clock()
            result, failed = None, None
            try:
                result = attempt()
            except Exception as exc:
                failed, verdict = exc, judge_error(exc)
            else:
                verdict = judge_result(result)
            breaker.record(
                permit,
                success=not verdict.failure,
                duration_seconds=self._clock() - attempt_started,
            )
            metrics.attempts.labels(
                target=target, outcome="failure" if verdict.failure else "success"
            ).inc()
            if not (verdict.retryable and idempotent):
                return _give_up(result, failed)
            wait = backoff.next_delay(number, self._clock() - started, verdict.retry_after_seconds)
            if wait is None:
                return _give_up(result, failed)
            if breaker.retry_after() > wait:
                # open, and still open when the wait ends: give up now, spending neither
                # budget nor waiting on a retry that cannot happen
                metrics.breaker_rejections.labels(target=target).inc()
                return _give_up(result, failed)
            if not budget.try_acquire_retry():
                metrics.retries_refused.labels(target=target).inc()
                return _give_up(result, failed)
            sleep(wait)

    def _transitioned(self, transition: Transition) -> None:
        self.metrics.set_breaker_state(transition.target, transition.to_state)
        level = logging.WARNING if transition.to_state is BreakerState.OPEN else logging.INFO
        logger.log(
            level,
            "circuit breaker for %s: %s -> %s (%s)",
            transition.target,
            transition.from_state.value,
            transition.to_state.value,
            transition.reason,
        )
        _emit_prefect_event(transition)
        if self._extra_listener is not None:
            self._extra_listener(transition)


def _give_up(result: T, failed: Exception | None) -> T:
    if failed is not None:
        raise failed
    return result


_BREAKER_EVENTS = {
    BreakerState.OPEN: "breaker-opened",
    BreakerState.HALF_OPEN: "breaker-half-opened",
    BreakerState.CLOSED: "breaker-closed",
}


def _emit_prefect_event(transition: Transition) -> None:
    """Inside a Prefect flow or task run, emit ``runbooks.resilience.breaker-*``.

    Outside Prefect (a sandbox pod, a benchmark) nothing is imported: if ``prefect`` was never
    imported, we are not in a run, and the pods must stay free of Prefect's import cost.
    """
    if "prefect.context" not in sys.modules:
        return
    from runbooks.kit import emit
    from runbooks.kit._run import in_run

    if not in_run():
        return

    try:
        emit(
            "resilience",
            _BREAKER_EVENTS[transition.to_state],
            transition.target,
            payload={
                "from_state": transition.from_state.value,
                "to_state": transition.to_state.value,
                "reason": transition.reason,
            },
        )
    except Exception:  # an event must never break the call that caused the transition
        logger.exception("could not emit the breaker event for %s", transition.target)


# -- the testing switch and the default instance ------------------------------------------------


class _Testing:
    def __init__(self) -> None:
        self.slept: list[float] = []


_testing: _Testing | None = None
_testing_lock = threading.Lock()


def sleep(seconds: float) -> None:
    """Wait ``seconds``, or only record the wait while :func:`testing` is on."""
    testing_now = _testing
    if testing_now is not None:
        with _testing_lock:
            testing_now.slept.append(seconds)
        return
    time.sleep(seconds)


@contextmanager
def testing() -> Iterator[list[float]]:
    """Turn backoff waits off (stamina's testing mode); yields the list of waits not slept.

    Also gives :func:`default_resilience` a fresh instance for the duration, so one test's
    open breakers and spent budgets never leak into the next.
    """
    global _testing, _default
    previous, _testing = _testing, _Testing()
    previous_default, _default = _default, None
    try:
        yield _testing.slept
    finally:
        _testing, _default = previous, previous_default


_default: Resilience | None = None


def default_resilience() -> Resilience:
    """The process-wide instance with the default policy (created on first use)."""
    global _default
    with _testing_lock:
        if _default is None:
            _default = Resilience()
        return _default
