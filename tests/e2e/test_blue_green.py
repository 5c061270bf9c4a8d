"""The ``blue-green`` flow end to end: sandbox cluster + Prefect server, real wire protocols.

Each test deploys its own blue v1 (two pods) and active Service under a unique name, and a
load generator sends continuous GETs through the active Service for the whole run, counting
every answer that is not a 200. Analyses are short (0.5 s x 3) and health-only (no Prometheus
block: the thresholds that need one are switched off).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from bluegreen_shop import FAST, NAMESPACE, Background, Shop
from pydantic import ValidationError

from blocks.database import DatabaseTarget
from blocks.http import HttpService
from decisions.analysis import AnalysisSpec
from decisions.bluegreen import ApprovalSpec, BlueGreenParams
from decisions.migrations import MigrationSpec, MigrationStep, Phase
from flows.blue_green import BlueGreenResult, RolloutOutcome, blue_green
from runbooks.errors import InvalidRequestError
from runbooks.kit import Outcome, artifact_key
from sandbox.load import Load


def test_v2_is_promoted_without_a_failed_request(shop: Shop) -> None:
    with Load(shop.url, concurrency=4) as load:
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
    assert load.total >= 2000, load.total  # the acceptance: 0 failed out of >= 2,000
    target = f"{NAMESPACE}/{shop.service}"
    names = {event.event for event in _events(target)}
    assert {"runbooks.blue-green.started", "runbooks.blue-green.promoted"} <= names
    assert not names & {"runbooks.blue-green.rolled-back", "runbooks.blue-green.aborted"}
    audit = _artifact("blue-green", "timeline", target)
    assert "switch" in audit
    measurements = _artifact("blue-green-measurements", target)
    assert "pre_analysis" in measurements


def _events(target: str, deadline_seconds: float = 10) -> list[Any]:
    """The events about ``target`` (polled: the server takes events asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventResourceFilter

    wanted = EventFilter(resource=EventResourceFilter(id=[f"runbooks.target.{target}"]))
    give_up = time.monotonic() + deadline_seconds
    with get_client(sync_client=True) as client:
        while True:
            found = list(client.read_events(filter=wanted, limit=50).events)
            names = {event.event for event in found}
            if any(name.rsplit(".", 1)[-1] != "started" for name in names):
                return found  # an ending event arrived
            if time.monotonic() > give_up:
                return found
            time.sleep(0.2)


def _artifact(*key_parts: str) -> str:
    """The data of the newest artifact keyed ``artifact_key(*key_parts)``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = artifact_key(*key_parts)
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)


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
    events = _events(f"{NAMESPACE}/{shop.service}")
    rolled_back = [e for e in events if e.event == "runbooks.blue-green.rolled-back"]
    assert rolled_back, [e.event for e in events]
    assert rolled_back[0].payload["rollback_seconds"] == result.rollback_seconds


def test_a_broken_version_is_caught_during_the_metrics_warm_up(shop: Shop) -> None:
    """The warm-up waits for Prometheus, not for a dead version: health is checked meanwhile."""
    warm = FAST.model_copy(update={"initial_delay_seconds": 30.0})
    started = time.monotonic()
    result = blue_green(
        params=shop.params("demo/shop:v3-broken", pre_promotion=warm), kubernetes=shop.k8s
    )
    assert result.rollout is RolloutOutcome.ROLLED_BACK, result.reason
    assert time.monotonic() - started < 20  # long before the 30 s warm-up ends
    assert [row.verdict for row in result.measurements] == ["failed"]
    assert shop.selector() == {"app": shop.service, "colour": "blue"}


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
    result = blue_green(params=shop.params("demo/shop:v2", dry_run=True), kubernetes=shop.k8s)
    assert result.rollout is RolloutOutcome.DRY_RUN
    assert result.dry_run
    assert result.plan is not None
    assert result.plan.idle_colour == "green"
    assert shop.deployment("green") is None
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert "demo/shop:v2" in _artifact("blue-green", "plan", f"{NAMESPACE}/{shop.service}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"replicas": 0}, "replicas"),
        ({"image": "demo/shop"}, "image"),
        ({"pre_promotion": {"failure_limit": -1}}, "pre_promotion.failure_limit"),
        ({"scale_down_delay_seconds": -5}, "scale_down_delay_seconds"),
    ],
)
def test_bad_input_is_refused_naming_the_field(shop: Shop, change: dict, field: str) -> None:
    values = {"service": shop.service, "image": "demo/shop:v2"} | change
    with pytest.raises(ValidationError, match=field):
        BlueGreenParams(**values)
    with pytest.raises(Exception, match=field):  # through Prefect's parameter validation
        blue_green(params=values, kubernetes=shop.k8s)
    assert shop.deployment("green") is None
    assert shop.selector() == {"app": shop.service, "colour": "blue"}


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"service": "no-such-service"}, "service: Service default/no-such-service does not"),
        ({"namespace": "no-such-namespace"}, "namespace: Namespace no-such-namespace does not"),
    ],
    ids=["unknown-service", "unknown-namespace"],
)
def test_unknown_service_or_namespace_is_refused_before_any_change(
    shop: Shop, where: dict, message: str
) -> None:
    params = shop.params("demo/shop:v2").model_copy(update=where)
    with pytest.raises(Exception, match=message):
        blue_green(params=params, kubernetes=shop.k8s)
    assert shop.deployment("green") is None


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


# -- feature flag rollout ----------------------------------------------------------------------

FLAG = "new-checkout"


def _flag_params(shop: Shop, **extra: Any) -> BlueGreenParams:
    flag = {"name": FLAG, "steps": [10, 50, 100], "hold": FAST}
    return shop.params("demo/shop:v2", flag=flag, **extra)


def _flags_document(shop: Shop) -> dict[str, Any]:
    with shop.k8s.get_api_client() as api:
        found = shop.k8s.core_v1(api).read_namespaced_config_map(f"{shop.service}-flags", NAMESPACE)
    return json.loads(found.data["flags.json"])["flags"]


def _flags_seen_by_pods(shop: Shop, user: str) -> dict[str, bool]:
    """What the active Service's pods answer for ``user`` (they re-read the mounted file)."""
    return httpx.get(f"{shop.url}/", params={"user": user}, timeout=5).json()["flags"]


def test_flag_is_rolled_out_step_by_step_after_promotion(flagged_shop: Shop) -> None:
    shop = flagged_shop
    with Load(shop.url) as load:
        result = blue_green(params=_flag_params(shop), kubernetes=shop.k8s)
    assert result.rollout is RolloutOutcome.PROMOTED, result.reason
    assert result.flag_percent == 100
    steps = [entry.step for entry in result.timeline]
    assert steps.index("post_analysis") < steps.index("flag_10") < steps.index("flag_50")
    assert steps.index("flag_100") < steps.index("scale_down_old")
    held = [row.phase for row in result.measurements if row.phase.startswith("flag_")]
    assert held == ["flag_10"] * 3 + ["flag_50"] * 3 + ["flag_100"] * 3
    assert _flags_document(shop)[FLAG] == {"enabled": True, "rollout_percent": 100.0, "allow": []}
    deadline = time.monotonic() + 10  # the pods notice the new file on their next stat
    while not _flags_seen_by_pods(shop, "any-user").get(FLAG) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _flags_seen_by_pods(shop, "any-user")[FLAG] is True
    assert load.failures == [], load.failures[:5]


def test_failing_flag_step_trips_the_kill_switch_and_rolls_back(
    flagged_shop: Shop, sandbox: Any
) -> None:
    """The new code path behind the flag breaks green once half the users get it."""
    from sandbox.cluster.faults import Fault

    shop = flagged_shop
    stop = threading.Event()

    def break_green_at_50_percent() -> None:
        while not stop.is_set():
            flag = _flags_document(shop).get(FLAG) or {}
            if flag.get("rollout_percent", 0) >= 50:
                sandbox.cluster.set_service_fault(
                    NAMESPACE, shop.service, Fault(degrade_health=True)
                )
                return
            time.sleep(0.1)

    saboteur = threading.Thread(target=break_green_at_50_percent, daemon=True)
    saboteur.start()
    try:
        with Load(shop.url) as load:
            result = blue_green(params=_flag_params(shop), kubernetes=shop.k8s)
    finally:
        stop.set()
        saboteur.join(5)
    assert result.rollout is RolloutOutcome.ROLLED_BACK, result.reason
    assert "flag_50" in result.reason
    assert result.undone == ("undo_flag", "undo_switch", "undo_deploy_idle")
    assert result.flag_percent == 0
    assert _flags_document(shop)[FLAG]["enabled"] is False
    assert "flag_100" not in {entry.step for entry in result.timeline}
    assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert shop.deployment("green").spec.replicas == 0
    assert shop.deployment("blue").spec.replicas == 2
    assert load.failures == [], load.failures[:5]


def test_flag_rollout_is_refused_when_the_pods_do_not_mount_the_config_map(shop: Shop) -> None:
    with pytest.raises(InvalidRequestError, match="does not mount ConfigMap"):
        blue_green(params=_flag_params(shop), kubernetes=shop.k8s)
    assert shop.deployment("green") is None


# -- Prometheus analysis with synthetic preview load -------------------------------------------


def _metric_spec(**extra: Any) -> AnalysisSpec:
    """Success rate and p95 from Prometheus (scraped every 2 s), on traffic we send ourselves."""
    values: dict[str, Any] = {
        "interval_seconds": 1.0,
        "count": 3,
        "window": "10s",
        "initial_delay_seconds": 10.0,  # one window: discovery plus two scrapes fit in it
        "synthetic_load_rps": 20.0,
        "success_rate_min": 0.95,
        "p95_latency_max_ms": 500.0,
    }
    return AnalysisSpec(**(values | extra))


@pytest.mark.parametrize(
    ("image", "rollout"),
    [("demo/shop:v2", RolloutOutcome.PROMOTED), ("demo/shop:v4-slow", RolloutOutcome.ROLLED_BACK)],
    ids=["v2-promoted", "slow-rolled-back"],
)
def test_preview_metrics_come_from_synthetic_load(
    shop: Shop, sandbox: Any, image: str, rollout: RolloutOutcome
) -> None:
    """Before the switch only our synthetic load reaches green: with it the queries have data,
    so a healthy-but-slow version is caught on p95 alone (its /health is fine)."""
    prometheus = HttpService(base_url=sandbox.endpoints["prometheus"], health_path="/-/ready")
    params = shop.params(image, pre_promotion=_metric_spec())
    with Load(shop.url) as load:
        result = blue_green(params=params, kubernetes=shop.k8s, prometheus=prometheus)
    assert result.rollout is rollout, result.reason
    pre = [row for row in result.measurements if row.phase == "pre_analysis"]
    assert pre
    assert all(row.success_rate is not None and row.p95_ms is not None for row in pre), pre
    load_notes = [e.detail for e in result.timeline if e.detail.startswith("synthetic load")]
    assert load_notes
    if rollout is RolloutOutcome.PROMOTED:
        assert all(row.verdict == "successful" for row in pre)
    else:
        assert pre[-1].verdict == "failed"
        assert pre[-1].health_ok  # caught on latency, not on health
        assert "p95" in pre[-1].reason
        assert shop.selector() == {"app": shop.service, "colour": "blue"}
    assert load.failures == [], load.failures[:5]
