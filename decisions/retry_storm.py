"""What ``retry-storm`` decides: is there a storm, how to contain it step by step, when it is
over, and how to put everything back. Pure: measurements in, frozen plans and verdicts out.

The signal is the alert's (:mod:`runbooks.alerts`): retries per logical request, per caller and
dependency, over a window, with a traffic floor so an idle caller's one retried call is not a
storm. A caller and dependency at or below the floor have no ratio at all (``None``), as the
PromQL has no series for them.

Containment is a ladder, each rung a change to the callers' retry settings (the document the
demo shop re-reads from its ConfigMap, the fields of ``sandbox.shop.downstream.RetrySettings``),
applied only to the storming callers and verified before the next rung:

1. ``tighten-retries``: a retry budget of 10 % (Google SRE's per-client figure) with one retry a
   window always allowed, and at most 3 attempts. Most storms stop here: retries can no longer
   multiply the load, and a healthy share of calls still gets a second chance.
2. ``disable-retries``: one attempt per call. The dependency sees only the logical load.
3. ``open-breaker``: the circuit breaker enabled with a low minimum of calls, so calls to a
   dependency that keeps failing are refused at the caller (the kill switch) and the
   dependency gets time to recover.

Why a ladder and not everything at once: every rung costs the users something (fewer second
chances, then none, then refused calls); the runbook stops at the first rung that brings the
retry ratio under the threshold. Each rung records the previous values of exactly the fields
it changes, so the undo puts back what was there (not the defaults), and restoring goes down
the ladder in reverse, one rung at a time, watching for a relapse after each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

RETRY_FIELDS = (
    "max_attempts",
    "budget_percent",
    "budget_min_retries",
    "breaker_enabled",
    "breaker_minimum_calls",
    "breaker_failure_rate_percent",
)
"""The retry-settings fields containment may change (and restores)."""

TIGHTEN = "tighten-retries"
DISABLE = "disable-retries"
OPEN_BREAKER = "open-breaker"


class Thresholds(BaseModel):
    """When a caller is storming, and when the storm is over."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry_ratio: float = Field(0.2, gt=0, description="Retries per request above which: storm.")
    min_request_rate: float = Field(0.1, ge=0, description="Calls/s below which: no verdict.")
    recovered_error_rate: float = Field(
        0.05, ge=0, le=1, description="Error share at or under which an interval is healthy."
    )
    recovered_intervals: int = Field(3, ge=1, description="Healthy intervals in a row: recovered.")


class Signal(BaseModel):
    """One caller -> dependency pair over the measuring window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    caller: str = Field(min_length=1, description="namespace/role of the calling pods.")
    dependency: str = Field(min_length=1, description="The service it calls.")
    request_rate: float = Field(ge=0, description="Logical requests per second.")
    retry_rate: float = Field(ge=0, description="Retries per second.")
    error_rate: float = Field(0.0, ge=0, le=1, description="Share of requests that failed.")
    breaker_open: bool = False

    @model_validator(mode="after")
    def _finite(self) -> Signal:
        for name in ("request_rate", "retry_rate", "error_rate"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number for {self.caller}")
        return self

    def retry_ratio(self, thresholds: Thresholds) -> float | None:
        """Retries per logical request; ``None`` under the traffic floor (no verdict)."""
        if self.request_rate < thresholds.min_request_rate or self.request_rate == 0:
            return None
        return self.retry_rate / self.request_rate


def storming(signals: Iterable[Signal], thresholds: Thresholds) -> tuple[Signal, ...]:
    """The pairs whose retry ratio is above the threshold, worst first."""
    found = [
        s
        for s in signals
        if (ratio := s.retry_ratio(thresholds)) is not None and ratio > thresholds.retry_ratio
    ]
    return tuple(sorted(found, key=lambda s: (-(s.retry_ratio(thresholds) or 0), s.caller)))


class SettingsChange(BaseModel):
    """One caller's retry settings: the fields a rung sets, and what they were."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    caller: str
    after: dict[str, Any] = Field(description="Fields set by the rung.")
    before: dict[str, Any] = Field(description="Their values before (None: unset).")

    @property
    def changed(self) -> bool:
        return any(self.before.get(k) != v for k, v in self.after.items())


class Rung(BaseModel):
    """One containment step: what it does to which callers, and how to verify it worked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    sentence: str
    changes: tuple[SettingsChange, ...]

    def undo(self) -> tuple[SettingsChange, ...]:
        """The changes that put back exactly what this rung replaced."""
        return tuple(
            SettingsChange(caller=c.caller, after=dict(c.before), before=dict(c.after))
            for c in self.changes
        )


class ContainmentPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    callers: tuple[str, ...] = Field(description="The storming callers the plan acts on.")
    rungs: tuple[Rung, ...] = Field(description="In the order they are tried.")

    @property
    def empty(self) -> bool:
        return not self.rungs


def _rung_fields(key: str, current: Mapping[str, Any]) -> dict[str, Any]:
    if key == TIGHTEN:
        attempts = current.get("max_attempts")
        return {
            "budget_percent": 10.0,
            "budget_min_retries": 1,
            "max_attempts": min(3, attempts) if isinstance(attempts, int) else 3,
        }
    if key == DISABLE:
        return {"max_attempts": 1}
    return {
        "breaker_enabled": True,
        "breaker_minimum_calls": 5,
        "breaker_failure_rate_percent": 50.0,
    }


_SENTENCES = {
    TIGHTEN: "retry budget 10 % (1 retry a window always allowed), at most 3 attempts",
    DISABLE: "retries off: one attempt per call",
    OPEN_BREAKER: "circuit breaker on (opens at 50 % failures over 5+ calls): calls to the "
    "failing dependency refused at the caller",
}


def containment_plan(
    storm: Sequence[Signal], current: Mapping[str, Mapping[str, Any]]
) -> ContainmentPlan:
    """The ladder for the storming callers, given each caller's current retry settings.

    Each rung's ``before`` is what the caller had before *that* rung (the previous rung's
    values included), so undoing rungs newest first restores the original settings exactly.
    A rung that changes nothing for any caller (already as strict) is left out. A storming
    caller without known settings is refused (``ValueError``): acting blind could not be undone.
    """
    callers = tuple(dict.fromkeys(s.caller for s in storm))
    missing = [c for c in callers if c not in current]
    if missing:
        raise ValueError(f"no current retry settings for {', '.join(missing)}: cannot plan an undo")
    state = {c: dict(current[c]) for c in callers}
    rungs: list[Rung] = []
    for key in (TIGHTEN, DISABLE, OPEN_BREAKER):
        changes = []
        for caller in callers:
            after = _rung_fields(key, state[caller])
            change = SettingsChange(
                caller=caller, after=after, before={k: state[caller].get(k) for k in after}
            )
            if change.changed:
                changes.append(change)
                state[caller].update(after)
        if changes:
            rungs.append(Rung(key=key, sentence=_SENTENCES[key], changes=tuple(changes)))
    return ContainmentPlan(callers=callers, rungs=tuple(rungs))


def contained(signals: Iterable[Signal], callers: Iterable[str], thresholds: Thresholds) -> bool:
    """No pair of ``callers`` is storming any more (under the floor counts as calm)."""
    wanted = set(callers)
    return not storming([s for s in signals if s.caller in wanted], thresholds)


def recovered(error_rates: Sequence[float], thresholds: Thresholds) -> bool:
    """The dependency's last ``recovered_intervals`` error shares are all at or under the bar."""
    tail = list(error_rates)[-thresholds.recovered_intervals :]
    return len(tail) == thresholds.recovered_intervals and all(
        math.isfinite(e) and e <= thresholds.recovered_error_rate for e in tail
    )


def load_reduction_percent(storm_load: float, contained_load: float) -> float | None:
    """How much the dependency's load fell from the storm to containment, in percent."""
    if not (math.isfinite(storm_load) and math.isfinite(contained_load)) or storm_load <= 0:
        return None
    return 100.0 * (storm_load - contained_load) / storm_load
