"""The ``blue-green`` flow end to end: sandbox cluster + Prefect server, real wire protocols.

Each test deploys its own blue v1 (two pods) and active Service under a unique name, and a
load generator sends continuous GETs through the active Service for the whole run, counting
every answer that is not a 200. Analyses are short (0.5 s x 3) and health-only (no Prometheus
block: the thresholds that need one are switched off).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from bluegreen_shop import NAMESPACE, Background, Shop
from pydantic import ValidationError

from blocks.database import DatabaseTarget
from decisions.bluegreen import ApprovalSpec, BlueGreenParams
from decisions.migrations import MigrationSpec, MigrationStep, Phase
from flows.blue_green import BlueGreenResult, RolloutOutcome, blue_green
from runbooks.errors import InvalidRequestError
from runbooks.kit import Outcome, artifact_key
from sandbox.load import Load


def test_v2_is_promoted_without_a_failed_request(shop: Shop) -> None:
    with Load(shop.url) as load:
        result = blue_green(params=shop.params("demo/shop:v2"), kubernetes=shop.k8s)
        time.sleep(0.3)  # requests after the scale-down land on green
    assert isinstance(result, BlueGreenResult)
    assert result.rollout is RolloutOutcome.PROMOTED, result.reason
    assert result.outcome is Outcome.SUCCEEDED
    assert result.active_colour == "green"
    assert result.active_image == "demo/shop:v2"
    assert shop.selector() == {"app": shop.service, "colour": "green"}
    assert shop.deployment("blue").spec.replicas == 0
    green = shop.deployment("green")
    assert green.spec.template.spec.containers[0].image == "demo/shop:v2"
    assert green.spec.replicas == 2
    phases = {(row.phase, row.verdict) for row in result.measurements}
    assert phases == {("pre_analysis", "successful"), ("post_analysis", "successful")}
    assert load.failures == [], load.failures[:5]
    assert load.total >= 500, load.total


def test_broken_version_is_rolled_back_fast(shop: Shop) -> None:
    with Load(shop.url) as load:
        result = blue_green(params=shop.params("demo/shop:v3-broken"), kubernetes=shop.k8s)
    assert result.rollout is RolloutOutcome.ROLLED_BACK, result.reason
    assert result.outcome is Outcome.ROLLED_BACK
    assert "pre_analysis" in result.reason
    assert result.rollback_seconds is not None
    assert result.rollback_seconds < 15
    assert result.undone == ("undo_deploy_idle",)
    assert result.measurements[-1].verdict == "failed"
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert shop.deployment("green").spec.replicas == 0
    assert shop.deployment("blue").spec.replicas == 2
    assert load.failures == [], load.failures[:5]
    assert load.total > 0


def test_crashloop_fails_at_the_rollout_wait_and_leaves_blue_alone(shop: Shop) -> None:
    blue_before = shop.deployment("blue")
    started = time.monotonic()
    with Load(shop.url) as load:
        result = blue_green(params=shop.params("demo/shop:v5-crashloop"), kubernetes=shop.k8s)
    elapsed = time.monotonic() - started
    assert result.rollout is RolloutOutcome.ROLLED_BACK, result.reason
    assert "RolloutFailedError" in result.reason
    assert elapsed < 30  # long before the 60 s progress deadline
    assert result.measurements == ()
    blue = shop.deployment("blue")
    assert blue.metadata.generation == blue_before.metadata.generation
    assert blue.spec.template.spec.containers[0].image == "demo/shop:v1"
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert shop.deployment("green").spec.replicas == 0
    assert load.failures == [], load.failures[:5]


def test_dry_run_publishes_the_plan_and_changes_nothing(shop: Shop) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    result = blue_green(params=shop.params("demo/shop:v2", dry_run=True), kubernetes=shop.k8s)
    assert result.rollout is RolloutOutcome.DRY_RUN
    assert result.dry_run
    assert result.plan is not None
    assert result.plan.idle_colour == "green"
    assert shop.deployment("green") is None
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    key = artifact_key("blue-green", "plan", f"{NAMESPACE}/{shop.service}")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert artifacts
    assert "demo/shop:v2" in str(artifacts[0].data)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"replicas": 0}, "replicas"), ({"image": "demo/shop"}, "image")],
)
def test_bad_input_is_refused_naming_the_field(shop: Shop, change: dict, field: str) -> None:
    values = {"service": shop.service, "image": "demo/shop:v2"} | change
    with pytest.raises(ValidationError, match=field):
        BlueGreenParams(**values)
    with pytest.raises(Exception, match=field):  # through Prefect's parameter validation
        blue_green(params=values, kubernetes=shop.k8s)
    assert shop.deployment("green") is None
    assert shop.selector() == {"app": shop.service, "colour": "blue"}


# -- approval gate -----------------------------------------------------------------------------


def _approval_params(shop: Shop, **approval: Any) -> BlueGreenParams:
    spec = {"mode": "required", "timeout_seconds": 120} | approval
    return shop.params("demo/shop:v2", approval=ApprovalSpec(**spec))


def test_approved_rollout_is_promoted_and_records_the_approver(shop: Shop) -> None:
    from prefect.flow_runs import resume_flow_run

    params = _approval_params(shop, allowed_approvers=("alice", "bob"))
    with Load(shop.url) as load:
        run = Background(shop.service).start(params=params, kubernetes=shop.k8s)
        run_id = run.paused_run_id()
        assert shop.selector() == {"app": shop.service, "colour": "blue"}  # gate holds
        answer = {"decision": "approve", "approver": "alice", "reason": "CAB-42 approved"}
        resume_flow_run(run_id, run_input=answer)
        result = run.join()
    assert result.rollout is RolloutOutcome.PROMOTED, result.reason
    assert result.outcome is Outcome.SUCCEEDED
    assert result.approval is not None
    assert (result.approval.approver, result.approval.reason) == ("alice", "CAB-42 approved")
    assert result.approval.accepted
    audit = [entry.detail for entry in result.timeline if entry.step == "approval"]
    assert "approved by alice: CAB-42 approved" in audit
    assert shop.selector() == {"app": shop.service, "colour": "green"}
    assert shop.deployment("blue").spec.replicas == 0
    assert load.failures == [], load.failures[:5]


@pytest.mark.parametrize(
    ("answer", "note"),
    [
        ({"decision": "reject", "approver": "alice", "reason": "freeze"}, "rejected by alice"),
        (
            {"decision": "approve", "approver": "mallory", "reason": "lgtm"},
            "approve by mallory refused: not an allowed approver",
        ),
    ],
    ids=["reject", "approver-not-allowed"],
)
def test_rejected_rollout_switches_nothing(shop: Shop, answer: dict, note: str) -> None:
    from prefect.flow_runs import resume_flow_run

    params = _approval_params(shop, allowed_approvers=("alice",))
    with Load(shop.url) as load:
        run = Background(shop.service).start(params=params, kubernetes=shop.k8s)
        resume_flow_run(run.paused_run_id(), run_input=answer)
        result = run.join()
    assert result.rollout is RolloutOutcome.REJECTED, result.reason
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.approval is not None
    assert not result.approval.accepted
    assert note in result.approval.note
    assert note in result.reason
    assert result.undone == ("undo_deploy_idle",)
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert shop.deployment("green").spec.replicas == 0
    assert shop.deployment("blue").spec.replicas == 2
    assert load.failures == [], load.failures[:5]


def test_approval_timeout_aborts_cleanly(shop: Shop) -> None:
    params = _approval_params(shop, timeout_seconds=2)
    with Load(shop.url) as load:
        result = blue_green(params=params, kubernetes=shop.k8s)
    assert result.rollout is RolloutOutcome.ABORTED, result.reason
    assert result.outcome is Outcome.ROLLED_BACK
    assert "timed out" in result.reason
    assert result.approval is not None
    assert result.approval.decision is None
    assert result.undone == ("undo_deploy_idle",)
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert shop.deployment("green").spec.replicas == 0
    assert load.failures == [], load.failures[:5]


# -- expand / backfill / contract migrations ---------------------------------------------------


def _migration(run_contract: bool) -> MigrationSpec:
    return MigrationSpec(
        steps=(
            MigrationStep(
                id="0001-add-email-verified",
                phase=Phase.EXPAND,
                sql="ALTER TABLE users ADD COLUMN email_verified INTEGER",
            ),
            MigrationStep(
                id="0002-backfill-email-verified",
                phase=Phase.BACKFILL,
                sql="UPDATE users SET email_verified = 0 WHERE email_verified IS NULL",
            ),
            MigrationStep(
                id="0003-drop-legacy", phase=Phase.CONTRACT, sql="ALTER TABLE users DROP legacy"
            ),
        ),
        run_contract=run_contract,
    )


@pytest.fixture
def service_db(tmp_path) -> tuple[DatabaseTarget, Path]:
    path = tmp_path / "shop.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, legacy TEXT)")
        db.executemany("INSERT INTO users (legacy) VALUES (?)", [("a",), ("b",)])
    return DatabaseTarget(url=f"sqlite:///{path}"), path


def _db_state(path: Path) -> tuple[set[str], set[str], list[tuple]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(users)")}
        ledger = {row[0] for row in db.execute("SELECT step_id FROM runbooks_migrations")}
        users = db.execute("SELECT * FROM users ORDER BY id").fetchall()
    return columns, ledger, users


EXPAND_BACKFILL = ("0001-add-email-verified", "0002-backfill-email-verified")


@pytest.mark.parametrize("run_contract", [False, True], ids=["no-contract", "contract"])
def test_promotion_runs_expand_backfill_and_contract_only_when_asked(
    shop: Shop, service_db: tuple[DatabaseTarget, Path], run_contract: bool
) -> None:
    database, path = service_db
    params = shop.params("demo/shop:v2", migration=_migration(run_contract=run_contract))
    result = blue_green(params=params, kubernetes=shop.k8s, database=database)
    assert result.rollout is RolloutOutcome.PROMOTED, result.reason
    steps = [entry.step for entry in result.timeline]
    assert steps.index("migrate_expand") < steps.index("deploy_idle")
    assert steps.index("wait_rollout") < steps.index("migrate_backfill") < steps.index("switch")
    columns, ledger, users = _db_state(path)
    if run_contract:  # after the bake and the scale-down delay (the rollback window)
        assert steps.index("scale_down_old") < steps.index("migrate_contract")
        assert result.migrations_applied == (*EXPAND_BACKFILL, "0003-drop-legacy")
        assert columns == {"id", "email_verified"}
        assert users == [(1, 0), (2, 0)]
    else:
        assert "migrate_contract" not in steps
        assert result.migrations_applied == EXPAND_BACKFILL
        assert columns == {"id", "legacy", "email_verified"}
        assert ledger == set(EXPAND_BACKFILL)
        assert users == [(1, "a", 0), (2, "b", 0)]


def test_rollback_keeps_expand_and_never_contracts(
    shop: Shop, service_db: tuple[DatabaseTarget, Path]
) -> None:
    database, path = service_db
    params = shop.params("demo/shop:v3-broken", migration=_migration(run_contract=True))
    result = blue_green(params=params, kubernetes=shop.k8s, database=database)
    assert result.rollout is RolloutOutcome.ROLLED_BACK, result.reason
    assert result.migrations_applied == EXPAND_BACKFILL
    assert "migrate_contract" not in {entry.step for entry in result.timeline}
    columns, ledger, _ = _db_state(path)
    assert "legacy" in columns  # contract (drop legacy) never ran
    assert "email_verified" in columns  # expand is kept: backward compatible
    assert "0003-drop-legacy" not in ledger
    assert shop.selector() == {"app": shop.service, "colour": "blue"}


def test_migration_without_a_database_is_refused_naming_the_field(shop: Shop) -> None:
    params = shop.params("demo/shop:v2", migration=_migration(run_contract=False))
    with pytest.raises(InvalidRequestError, match="no database block"):
        blue_green(params=params, kubernetes=shop.k8s)
    assert shop.deployment("green") is None
