"""The result shape every runbook returns, and the timeline it records on the way.

Why one base model: ``runbooks run --json`` prints the flow's result, chat-ops replies quote it,
and the demo summarises it, so every runbook must answer the same questions the same way: what
ran, on which target, what happened (:class:`Outcome`), why, when, and the step-by-step timeline.
A runbook extends :class:`RunbookResult` with its own fields (e.g. the plan it executed); the base
fields and their meaning never change.

Both models are frozen: a result is a record of what happened, not a scratchpad. The mutable
part is :class:`Timeline`, a thread-safe recorder that tasks running concurrently can append to,
turned into an immutable tuple of :class:`TimelineEntry` when the result is built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC; the default clock, read at each call (never at import)."""
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class Outcome(StrEnum):
    """What a run did to the world, in the words an on-call engineer expects."""

    SUCCEEDED = "succeeded"  # the change was made and verified
    NO_CHANGE = "no_change"  # live state already matched the goal; nothing to do
    DRY_RUN = "dry_run"  # the plan was published and nothing was changed
    ROLLED_BACK = "rolled_back"  # the change failed and was undone
    FAILED = "failed"  # the run failed; see ``reason`` and the timeline


class TimelineEntry(BaseModel):
    """One step of the audit trail: when, which step, what happened, and whether it went well."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime = Field(description="When the step was recorded (UTC).")
    step: str = Field(min_length=1, description="Short step name, e.g. 'switch-selector'.")
    detail: str = Field(default="", description="What happened, in one sentence.")
    ok: bool = Field(default=True, description="False when the step failed.")

    _utc = field_validator("at")(_as_utc)


class RunbookResult(BaseModel):
    """The base result of every runbook; extend it with runbook-specific fields.

    Invariants checked on construction: ``finished_at`` is not before ``started_at``; a dry run
    (``dry_run=True``) cannot report ``succeeded`` or ``rolled_back`` (it changed nothing), and
    ``outcome=dry_run`` requires ``dry_run=True``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    runbook: str = Field(min_length=1, description="Runbook name, e.g. 'blue-green'.")
    target: str = Field(min_length=1, description="What the run acted on, e.g. 'shop/checkout'.")
    outcome: Outcome
    reason: str = Field(description="Why the run ended this way, in one sentence.")
    started_at: AwareDatetime
    finished_at: AwareDatetime
    timeline: tuple[TimelineEntry, ...] = ()
    dry_run: bool = Field(description="True when the run was asked only to plan.")

    _utc = field_validator("started_at", "finished_at")(_as_utc)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.finished_at < self.started_at:
            raise ValueError(
                f"finished_at ({self.finished_at.isoformat()}) is before started_at "
                f"({self.started_at.isoformat()})"
            )
        if self.outcome is Outcome.DRY_RUN and not self.dry_run:
            raise ValueError("outcome 'dry_run' requires dry_run=True")
        if self.dry_run and self.outcome in (Outcome.SUCCEEDED, Outcome.ROLLED_BACK):
            raise ValueError(
                f"a dry run changes nothing, so its outcome cannot be {self.outcome.value!r}; "
                "use 'dry_run', 'no_change' or 'failed'"
            )
        return self

    @property
    def ok(self) -> bool:
        """True when the run ended as intended (succeeded, no change, or a dry run)."""
        return self.outcome in (Outcome.SUCCEEDED, Outcome.NO_CHANGE, Outcome.DRY_RUN)

    @classmethod
    def from_timeline(
        cls,
        timeline: Timeline,
        *,
        runbook: str,
        target: str,
        outcome: Outcome,
        reason: str,
        dry_run: bool,
        **fields: Any,
    ) -> Self:
        """Build the result from a :class:`Timeline`: its start, its entries, and 'now' as the end.

        ``fields`` are the subclass's own fields.
        """
        return cls(
            runbook=runbook,
            target=target,
            outcome=outcome,
            reason=reason,
            started_at=timeline.started_at,
            finished_at=timeline.now(),
            timeline=timeline.entries(),
            dry_run=dry_run,
            **fields,
        )

    @classmethod
    def for_dry_run(
        cls,
        timeline: Timeline,
        *,
        runbook: str,
        target: str,
        reason: str = "dry run: plan published, nothing changed",
        **fields: Any,
    ) -> Self:
        """The result every runbook returns when ``dry_run=True`` stopped it after planning."""
        return cls.from_timeline(
            timeline,
            runbook=runbook,
            target=target,
            outcome=Outcome.DRY_RUN,
            reason=reason,
            dry_run=True,
            **fields,
        )


class Timeline:
    """A thread-safe, append-only recorder of :class:`TimelineEntry` values.

    ``clock`` is injectable so tests can pin time; it must return timezone-aware datetimes.
    ``started_at`` is read from the clock when the timeline is created (the run's start).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or utc_now
        self._lock = threading.Lock()
        self._entries: list[TimelineEntry] = []
        self.started_at: datetime = _as_utc(self._checked(self._clock()))

    def now(self) -> datetime:
        """The timeline's clock, in UTC."""
        return _as_utc(self._checked(self._clock()))

    def add(self, step: str, detail: str = "", ok: bool = True) -> TimelineEntry:
        """Record a step; entries keep the order in which ``add`` was called."""
        with self._lock:
            # Reading the clock under the lock keeps ``at`` monotonic with the entry order.
            entry = TimelineEntry(at=self.now(), step=step, detail=detail, ok=ok)
            self._entries.append(entry)
        return entry

    def entries(self) -> tuple[TimelineEntry, ...]:
        """A snapshot of the entries so far, oldest first."""
        with self._lock:
            return tuple(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @staticmethod
    def _checked(value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("the timeline clock returned a naive datetime; return an aware one")
        return value
