"""Expand / backfill / contract: which SQL runs when, tied to a rollout's phases.

The recipe's migration strategy made explicit: ``expand`` steps (backward compatible: add a
column, a table) run before the new version starts, ``backfill`` steps after it is ready,
``contract`` steps (drop the old column) only after promotion, after the rollback window, and
only when the caller asks (``run_contract``), because after a contract the old version can no
longer run and rolling back is impossible. Pure: which steps are due is decided here; running
them is ``tasks/migrations.py``'s job.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class Phase(StrEnum):
    EXPAND = "expand"
    BACKFILL = "backfill"
    CONTRACT = "contract"


PHASE_ORDER = (Phase.EXPAND, Phase.BACKFILL, Phase.CONTRACT)


class MigrationStep(BaseModel):
    """One SQL step; its ``id`` is recorded once applied, so re-running skips it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Unique, stable id, e.g. 0001-add-email-verified.")
    phase: Phase = Field(description="expand, backfill or contract.")
    sql: str = Field(min_length=1, description="The SQL, one statement or several.")

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _STEP_ID.match(value):
            raise ValueError(
                "id must be lowercase letters, digits, '.', '_' or '-', starting with a letter "
                f"or digit, at most 100 characters; got {value!r}"
            )
        return value


class MigrationSpec(BaseModel):
    """The migration of one rollout: ordered steps in phases, and whether to contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: tuple[MigrationStep, ...] = Field(default=(), description="Steps in run order.")
    run_contract: bool = Field(
        False, description="Run contract steps after promotion and the rollback window."
    )

    @model_validator(mode="after")
    def _ids_unique_and_phases_ordered(self) -> MigrationSpec:
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"steps: id {step.id!r} appears twice")
            seen.add(step.id)
        ranks = [PHASE_ORDER.index(step.phase) for step in self.steps]
        if ranks != sorted(ranks):
            raise ValueError("steps must be ordered expand, then backfill, then contract")
        return self

    def due(self, phase: Phase, applied: frozenset[str] = frozenset()) -> tuple[MigrationStep, ...]:
        """The steps of ``phase`` not yet applied, in order (contract only when asked)."""
        if phase is Phase.CONTRACT and not self.run_contract:
            return ()
        return tuple(s for s in self.steps if s.phase is phase and s.id not in applied)
