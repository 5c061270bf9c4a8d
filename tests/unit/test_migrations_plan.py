"""Which migration steps are due in which phase."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from decisions.migrations import MigrationSpec, MigrationStep, Phase

STEPS = (
    MigrationStep(id="0001-add-column", phase="expand", sql="ALTER TABLE t ADD COLUMN c INT"),
    MigrationStep(id="0002-fill", phase="backfill", sql="UPDATE t SET c = 1"),
    MigrationStep(id="0003-drop-old", phase="contract", sql="ALTER TABLE t DROP COLUMN old"),
)


def test_steps_are_due_by_phase_and_skip_applied_ones() -> None:
    spec = MigrationSpec(steps=STEPS)
    assert [s.id for s in spec.due(Phase.EXPAND)] == ["0001-add-column"]
    assert spec.due(Phase.EXPAND, frozenset({"0001-add-column"})) == ()
    assert [s.id for s in spec.due(Phase.BACKFILL)] == ["0002-fill"]


def test_contract_runs_only_when_asked() -> None:
    assert MigrationSpec(steps=STEPS).due(Phase.CONTRACT) == ()
    asked = MigrationSpec(steps=STEPS, run_contract=True)
    assert [s.id for s in asked.due(Phase.CONTRACT)] == ["0003-drop-old"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((STEPS[1], STEPS[0]), "ordered expand"),
        ((STEPS[0], STEPS[0]), "appears twice"),
    ],
)
def test_bad_specs_are_refused(steps, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MigrationSpec(steps=steps)


@pytest.mark.parametrize("step_id", ["Add Column", "", "-x", "a" * 101])
def test_bad_step_ids_are_refused_naming_the_field(step_id: str) -> None:
    with pytest.raises(ValidationError, match="id"):
        MigrationStep(id=step_id, phase="expand", sql="SELECT 1")
