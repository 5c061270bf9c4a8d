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
   dependency gets time to recover. Retries off already brings the ratio to ~0, so the flow
   also takes this rung, once contained, for the callers of a dependency that is still down.

Why a ladder and not everything at once: every rung costs the users something (fewer second
chances, then none, then refused calls); the runbook stops at the first rung that brings the
retry ratio under the threshold. Each rung records the previous values of exactly the fields
it changes, so the undo puts back what was there (not the defaults), and restoring goes down
the ladder in reverse, one rung at a time, watching for a relapse after each.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

    def sentence(self) -> str:
        """``max_attempts 5 -> 3, budget_percent None -> 10.0``."""
        return ", ".join(f"{k} {self.before.get(k)} -> {v}" for k, v in self.after.items())


class Rung(BaseModel):
    """One containment step: what it does to which callers, and how to verify it worked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    sentence: str
    changes: tuple[SettingsChange, ...]

    def undo(self) -> tuple[SettingsChange, ...]:
        """The changes that put back exactly what this rung replaced."""
        return reverse(self.changes)


def reverse(changes: Iterable[SettingsChange]) -> tuple[SettingsChange, ...]:
    """The changes that put back exactly what ``changes`` replaced, last first."""
    return tuple(
        SettingsChange(caller=c.caller, after=dict(c.before), before=dict(c.after))
        for c in reversed(list(changes))
    )


class ContainmentPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    callers: tuple[str, ...] = Field(description="The storming callers the plan acts on.")
    rungs: tuple[Rung, ...] = Field(description="In the order they are tried.")

    @property
    def empty(self) -> bool:
        return not self.rungs


def _rung_fields(
    key: str, current: Mapping[str, Any], effective: Mapping[str, float]
) -> dict[str, Any]:
    """The fields a rung sets, never looser than what is in force: a value the document does
    not set comes from the pods (``effective``: their env or built-in default)."""
    if key == TIGHTEN:
        attempts = current.get("max_attempts")
        if not isinstance(attempts, int) and effective.get("max_attempts"):
            attempts = int(effective["max_attempts"])
        budget = current.get("budget_percent")
        if budget is None and effective.get("budget_percent", -1) >= 0:
            budget = effective["budget_percent"]
        return {
            "budget_percent": min(10.0, float(budget)) if budget is not None else 10.0,
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
    storm: Sequence[Signal],
    current: Mapping[str, Mapping[str, Any]],
    effective: Mapping[str, Mapping[str, float]] | None = None,
) -> ContainmentPlan:
    """The ladder for the storming callers, given each caller's current retry settings.

    Each rung's ``before`` is what the caller had before *that* rung (the previous rung's
    values included), so undoing rungs newest first restores the original settings exactly.
    A rung that changes nothing for any caller (already as strict) is left out. ``effective``
    (per caller, the settings the pods report in force) keeps a rung from loosening a value the
    document leaves to the pods' env, e.g. 2 attempts set by env stay 2. A storming
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
            after = _rung_fields(key, state[caller], (effective or {}).get(caller, {}))
            change = SettingsChange(
                caller=caller, after=after, before={k: state[caller].get(k) for k in after}
            )
            if change.changed:
                changes.append(change)
                state[caller].update(after)
        if changes:
            rungs.append(Rung(key=key, sentence=_SENTENCES[key], changes=tuple(changes)))
    return ContainmentPlan(callers=callers, rungs=tuple(rungs))


def contained_verdict(
    signals: Sequence[Signal], acted: Iterable[str], thresholds: Thresholds
) -> bool | None:
    """After a rung: True when no pair storms *and* every caller acted on has data; ``None``
    (look again) otherwise. No data is never "contained": a window too short for two scrapes
    returns nothing, and an empty answer must not end the incident."""
    seen = {s.caller for s in signals}
    if not set(acted) <= seen:
        return None
    return True if not storming(signals, thresholds) else None


def kill_switch_targets(signals: Iterable[Signal], error_share: float) -> tuple[Signal, ...]:
    """The pairs whose dependency fails at least ``error_share`` of the calls *and* is a root
    cause: a dependency that is itself a failing caller (checkout failing because payments
    fails) is a victim, and a breaker in front of it would only hide where the fault is."""
    failing = [s for s in signals if s.error_rate >= error_share]
    failing_roles = {s.caller.partition("/")[2] for s in failing}
    return tuple(s for s in failing if s.dependency not in failing_roles)


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


Key = tuple[str, str, str]
"""(namespace, role, dependency): how Prometheus labels one caller -> dependency pair."""

_DURATION = re.compile(r"^\d+[smh]$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class RetryStormParams(BaseModel):
    """What ``retry-storm`` watches, how long it waits for each verdict, and what it may change.

    Times are wall seconds. The defaults suit a Prometheus scraping every 15 s: a change is
    judged over at least ``verify_after_seconds`` (35 s: two scrapes and a margin, since
    ``rate()`` needs two samples of the new behaviour); a drill on a 2 s scrape uses shorter
    windows (``window="20s"``, ``verify_after_seconds=8``, ``poll_seconds=1``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(
        (), description="Only callers in these namespaces; empty: every namespace."
    )
    window: str = Field("1m", description="PromQL range of the storm measurement, e.g. '1m'.")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    config_map: str = Field(
        "{role}-retry",
        description="Name of the ConfigMap holding a caller's retry settings ({role} is "
        "replaced by the caller's role label), in the caller's namespace.",
    )
    config_key: str = Field("retry.json", min_length=1, description="Its key (a JSON object).")
    poll_seconds: float = Field(5.0, ge=0.1, le=300, description="Time between measurements.")
    apply_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Every pod must report the new settings within this."
    )
    verify_after_seconds: float = Field(
        35.0,
        gt=0,
        le=3600,
        description="Measure a change over at least this long after every pod took it "
        "(at least two scrapes, so rate() has two samples of the new regime only).",
    )
    settle_seconds: float = Field(
        90.0, gt=0, le=3600, description="A rung that has not contained the storm by then: next."
    )
    recovery_window: str = Field(
        "1m", description="PromQL range of each health interval (consecutive, not overlapping)."
    )
    recovery_timeout_seconds: float = Field(
        1800.0,
        gt=0,
        le=86400,
        description="Stop waiting for the dependency to heal after this; containment is kept.",
    )
    relapse_watch_seconds: float = Field(
        60.0, ge=0, le=3600, description="After each restore step, watch this long for a relapse."
    )
    kill_switch_error_share: float | None = Field(
        0.9,
        gt=0,
        le=1,
        description="Once contained, callers of a dependency still failing this share of "
        "calls get the circuit breaker on (the kill switch: the dependency gets time to "
        "recover); null: never.",
    )
    on_step_failure: Literal["keep", "undo"] = Field(
        "keep",
        description="A containment step that cannot be applied: keep the earlier steps (they "
        "already cut the load) or undo them.",
    )
    restore: bool = Field(True, description="Put the settings back once the dependency heals.")
    dry_run: bool = Field(False, description="Measure and publish the plan; change nothing.")
    trigger: str = Field("", max_length=500, description="Why this run started (audit trail).")

    @model_validator(mode="after")
    def _waits(self) -> RetryStormParams:
        if self.settle_seconds < self.verify_after_seconds:
            raise ValueError(
                f"settle_seconds ({self.settle_seconds:g}) must be at least verify_after_seconds "
                f"({self.verify_after_seconds:g}): a rung is judged no sooner than that"
            )
        return self

    @field_validator("window", "recovery_window")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _DURATION.fullmatch(value):
            raise ValueError(f"must be a PromQL duration such as '30s' or '5m', got {value!r}")
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in value if not _NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"not Kubernetes namespace names: {', '.join(map(repr, bad))}")
        return value

    @field_validator("config_map")
    @classmethod
    def _config_map(cls, value: str) -> str:
        sample = value.replace("{role}", "role")
        if "{" in sample or "}" in sample or not _NAME.fullmatch(sample):
            raise ValueError(
                "must be a ConfigMap name, optionally with {role} in it (e.g. '{role}-retry'), "
                f"got {value!r}"
            )
        return value

    def config_map_of(self, caller: str) -> tuple[str, str]:
        """``namespace/role`` -> (namespace, ConfigMap name)."""
        namespace, _, role = caller.partition("/")
        return namespace, self.config_map.replace("{role}", role)


class Measurement(BaseModel):
    """One look at the callers: a signal per caller and dependency, and each dependency's load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signals: tuple[Signal, ...]
    load: dict[str, float] = Field(description="Attempts/s each dependency receives.")

    def error_rates(self, callers: Iterable[str]) -> tuple[float, ...]:
        wanted = set(callers)
        return tuple(s.error_rate for s in self.signals if s.caller in wanted)


def measurement(
    requests: Mapping[Key, float],
    retries: Mapping[Key, float],
    errors: Mapping[Key, float],
    attempts: Mapping[Key, float],
    breakers_open: Iterable[Key],
    namespaces: Sequence[str] = (),
) -> Measurement:
    """Assemble the queries' series into signals (only pairs with a request rate: no traffic,
    no signal) and per-dependency load; ``namespaces`` filters (empty: all)."""

    def wanted(key: Key) -> bool:
        return not namespaces or key[0] in namespaces

    open_keys = set(breakers_open)
    signals = [
        Signal(
            caller=f"{key[0]}/{key[1]}",
            dependency=key[2],
            request_rate=rate,
            retry_rate=retries.get(key, 0.0),
            error_rate=_share(errors.get(key, 0.0)),
            breaker_open=key in open_keys,
        )
        for key, rate in sorted(requests.items())
        if wanted(key)
    ]
    load: dict[str, float] = {}
    for key, rate in attempts.items():
        if wanted(key):
            load[key[2]] = load.get(key[2], 0.0) + rate
    return Measurement(signals=tuple(signals), load=load)


def _share(value: float) -> float:
    """An error share clipped to [0, 1]; NaN (no data) is refused, never read as healthy."""
    if math.isnan(value):
        raise ValueError("an error share is NaN: the query gave no data for a pair with traffic")
    return min(1.0, max(0.0, value))


def healthy(m: Measurement, callers: Iterable[str], thresholds: Thresholds) -> bool | None:
    """The callers' calls succeed (error share at or under the bar for every pair); ``None``
    when none of them has traffic (no evidence either way)."""
    rates = m.error_rates(callers)
    if not rates:
        return None
    return all(r <= thresholds.recovered_error_rate for r in rates)
