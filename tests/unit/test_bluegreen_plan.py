"""Blue-green parameters and plan: refusals naming the field, the colour convention, ordered
steps, no-op and resume after a crash, and undo steps in reverse order."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from decisions.bluegreen import (
    BlueGreenParams,
    Colour,
    ColourState,
    ObservedState,
    PlanOutcome,
    PlanRefused,
    StepKind,
    plan_rollout,
    rollback_steps,
)

BASE = {"service": "checkout", "namespace": "shop", "image": "demo/shop:v2"}
MIGRATION = {
    "steps": [
        {"id": "0001-add-col", "phase": "expand", "sql": "ALTER TABLE t ADD c INT"},
        {"id": "0002-fill", "phase": "backfill", "sql": "UPDATE t SET c = 1"},
        {"id": "0003-drop", "phase": "contract", "sql": "ALTER TABLE t DROP old"},
    ]
}


def params(**update: object) -> BlueGreenParams:
    return BlueGreenParams.model_validate({**BASE, **update})


def live(image: str = "demo/shop:v1", replicas: int = 2) -> ColourState:
    return ColourState(
        exists=True,
        image=image,
        replicas=replicas,
        available_replicas=replicas,
        updated_replicas=replicas,
        generation=3,
        observed_generation=3,
    )


BLUE_ACTIVE = ObservedState(active_colour=Colour.BLUE, blue=live(), active_healthy=True)


def kinds(plan_steps: object) -> list[StepKind]:
    return [s.kind for s in plan_steps]  # type: ignore[attr-defined]


# -- parameters --------------------------------------------------------------------------------


def test_defaults() -> None:
    p = params()
    assert (p.replicas, p.scale_down_delay_seconds, p.progress_deadline_seconds) == (2, 30, 600)
    assert p.pre_promotion.synthetic_load_rps > 0  # preview traffic so there is data
    assert p.post_promotion.synthetic_load_rps == 0
    assert p.approval.mode == "none"
    assert p.flag is None
    assert p.target == "shop/checkout"
    assert not p.dry_run


def test_every_field_has_a_description() -> None:
    schema = BlueGreenParams.model_json_schema()
    assert all("description" in f for f in schema["properties"].values())


@pytest.mark.parametrize(
    "image",
    [
        "demo/shop:v2",
        "localhost:5000/demo/shop:v3-broken",
        "registry.example.com/team/shop:1.2.3",
        "demo/shop@sha256:" + "a" * 64,
        "demo/shop:latest@sha256:" + "b" * 64,
    ],
)
def test_images_with_tag_or_digest_are_accepted(image: str) -> None:
    assert params(image=image).image == image


@pytest.mark.parametrize(
    ("update", "field", "message"),
    [
        ({"image": "demo/shop"}, "image", "explicit tag or digest"),
        ({"image": "localhost:5000/demo/shop"}, "image", "explicit tag or digest"),
        ({"image": "demo/shop:latest"}, "image", "mutable"),
        ({"image": "Demo/Shop:v1"}, "image", "reference"),
        ({"image": "demo/shop:"}, "image", "reference"),
        ({"service": "Checkout"}, "service", "lowercase"),
        ({"service": "1checkout"}, "service", "start with a letter"),
        ({"service": "a" * 56}, "service", "55"),
        ({"service": "check_out"}, "service", "lowercase"),
        ({"namespace": "-shop"}, "namespace", "DNS-1123"),
        ({"namespace": "s" * 64}, "namespace", "DNS-1123"),
        ({"replicas": 0}, "replicas", "greater than or equal to 1"),
        ({"preview_replicas": 0}, "preview_replicas", "greater than or equal to 1"),
        ({"preview_replicas": 3}, "preview_replicas", "<= replicas"),
        ({"scale_down_delay_seconds": -1}, "scale_down_delay_seconds", ">= 0|greater"),
        ({"progress_deadline_seconds": 0}, "progress_deadline_seconds", "greater"),
        ({"pre_promotion": {"failure_limit": -1}}, "pre_promotion.failure_limit", "greater"),
        ({"post_promotion": {"inconclusive_limit": -2}}, "post_promotion.inconclusive_limit", ""),
        ({"post_promotion": {"success_rate_min": 2}}, "post_promotion.success_rate_min", ""),
        ({"approval": {"mode": "maybe"}}, "approval.mode", ""),
        ({"approval": {"timeout_seconds": 0}}, "approval.timeout_seconds", ""),
        ({"approval": {"allowed_approvers": ["a b"]}}, "approval.allowed_approvers", "spaces"),
        ({"flag": {"name": "new checkout"}}, "flag.name", ""),
        ({"flag": {"name": "f", "steps": [50, 10]}}, "flag.steps", "strictly increasing"),
        ({"flag": {"name": "f", "steps": [0, 100]}}, "flag.steps", "1..100"),
        ({"flag": {"name": "f", "steps": []}}, "flag.steps", "at least one"),
        ({"flag": {"name": "f", "config_map": "Flags"}}, "flag.config_map", "DNS-1123"),
        ({"flag": {"name": "f", "hold": {"count": 0}}}, "flag.hold.count", ""),
        (
            {"migration": {"steps": [{"id": "X", "phase": "expand", "sql": "x"}]}},
            "migration.steps",
            "",
        ),
        ({"colour": "blue"}, "colour", "Extra inputs"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    update: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        params(**update)
    locs = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert any(loc.startswith(field) for loc in locs) or field in str(caught.value), locs
    if message:
        assert re.search(message, str(caught.value)), str(caught.value)


def test_params_are_frozen() -> None:
    with pytest.raises(ValidationError):
        params().replicas = 3  # type: ignore[misc]


def test_approvers() -> None:
    anyone = params(approval={"mode": "required"}).approval
    assert anyone.may_approve("alice")
    only = params(approval={"mode": "required", "allowed_approvers": ["alice"]}).approval
    assert only.may_approve("alice")
    assert not only.may_approve("mallory")


# -- plans -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "idle"), [(Colour.BLUE, Colour.GREEN), (Colour.GREEN, Colour.BLUE)]
)
def test_plan_deploys_the_idle_colour_and_switches_to_it(active: Colour, idle: Colour) -> None:
    observed = ObservedState(active_colour=active, **{active.value: live()}, active_healthy=True)
    plan = plan_rollout(params(), observed)
    assert plan.outcome is PlanOutcome.ROLLOUT
    assert (plan.active_colour, plan.idle_colour) == (active, idle)
    assert (plan.active_image, plan.target_image) == ("demo/shop:v1", "demo/shop:v2")
    assert kinds(plan.steps) == [
        StepKind.LOCK,
        StepKind.DEPLOY_IDLE,
        StepKind.WAIT_ROLLOUT,
        StepKind.POINT_PREVIEW,
        StepKind.PRE_ANALYSIS,
        StepKind.SWITCH,
        StepKind.POST_ANALYSIS,
        StepKind.SCALE_DOWN_OLD,
    ]
    assert plan.step("deploy_idle").colour is idle
    assert plan.step("deploy_idle").image == "demo/shop:v2"
    assert plan.step("switch").colour is idle
    assert plan.step("scale_down_old").colour is active
    assert plan.step("scale_down_old").seconds == 30
    assert f"checkout-{idle.value}" in plan.step("deploy_idle").sentence
    assert "checkout-preview" in plan.step("point_preview").sentence
    assert all(s.sentence.endswith(".") for s in plan.steps)
    assert len({s.key for s in plan.steps}) == len(plan.steps)


def test_full_plan_with_migration_approval_preview_size_and_flag() -> None:
    p = params(
        migration={**MIGRATION, "run_contract": True},
        approval={"mode": "required", "allowed_approvers": ["alice"]},
        preview_replicas=1,
        replicas=3,
        flag={"name": "new-checkout", "steps": [10, 50, 100]},
    )
    plan = plan_rollout(p, BLUE_ACTIVE)
    assert [s.key for s in plan.steps] == [
        "lock",
        "migrate_expand",
        "deploy_idle",
        "wait_rollout",
        "migrate_backfill",
        "point_preview",
        "pre_analysis",
        "approval",
        "scale_up_new",
        "wait_scale_up",
        "switch",
        "post_analysis",
        "flag_10",
        "flag_50",
        "flag_100",
        "scale_down_old",
        "migrate_contract",
    ]
    assert plan.step("deploy_idle").replicas == 1
    assert plan.step("scale_up_new").replicas == 3
    assert plan.step("migrate_expand").migration_ids == ("0001-add-col",)
    assert plan.step("migrate_contract").migration_ids == ("0003-drop",)
    assert "alice" in plan.step("approval").sentence
    assert plan.step("flag_50").percent == 50
    assert "checkout-flags" in plan.step("flag_50").sentence  # the default ConfigMap
    assert p.flag is not None
    assert plan.step("flag_50").seconds == p.flag.hold.interval_seconds * p.flag.hold.count


def test_contract_only_when_asked() -> None:
    plan = plan_rollout(params(migration=MIGRATION), BLUE_ACTIVE)
    assert StepKind.MIGRATE_CONTRACT not in kinds(plan.steps)
    assert StepKind.MIGRATE_EXPAND in kinds(plan.steps)


def test_same_image_is_a_noop_not_an_error() -> None:
    plan = plan_rollout(params(image="demo/shop:v1"), BLUE_ACTIVE)
    assert plan.outcome is PlanOutcome.NOOP
    assert plan.steps == ()
    assert "already active" in plan.reason


def test_rerun_after_the_switch_resumes_the_promotion() -> None:
    """Crashed after the switch: green is active with the new image, blue still scaled up."""
    observed = ObservedState(
        active_colour=Colour.GREEN, blue=live(), green=live("demo/shop:v2"), active_healthy=True
    )
    plan = plan_rollout(params(), observed)
    assert plan.outcome is PlanOutcome.RESUME
    assert kinds(plan.steps) == [StepKind.LOCK, StepKind.POST_ANALYSIS, StepKind.SCALE_DOWN_OLD]
    assert plan.step("post_analysis").colour is Colour.GREEN
    assert plan.step("scale_down_old").colour is Colour.BLUE
    undo = rollback_steps(plan, ["lock", "post_analysis"])
    assert [(s.kind, s.colour) for s in undo] == [
        (StepKind.SWITCH_BACK, Colour.BLUE),
        (StepKind.SCALE_DOWN_NEW, Colour.GREEN),
    ]


def test_rerun_before_the_switch_redeploys_idempotently() -> None:
    observed = BLUE_ACTIVE.model_copy(update={"green": live("demo/shop:v2")})
    plan = plan_rollout(params(), observed)
    assert plan.outcome is PlanOutcome.ROLLOUT
    assert plan.step("deploy_idle").colour is Colour.GREEN


@pytest.mark.parametrize(
    ("observed", "message"),
    [
        (ObservedState(active_colour=None, active_healthy=False), "does not exist"),
        (ObservedState(active_colour=None, blue=live(), active_healthy=True), "does not exist"),
        (
            ObservedState(active_colour=Colour.GREEN, blue=live(), active_healthy=True),
            "checkout-green does not exist",
        ),
        (
            ObservedState(
                active_colour=Colour.BLUE, blue=ColourState(exists=True), active_healthy=True
            ),
            "no container image",
        ),
        (BLUE_ACTIVE.model_copy(update={"active_healthy": False}), "unhealthy"),
    ],
)
def test_refusals_are_one_clear_sentence(observed: ObservedState, message: str) -> None:
    with pytest.raises(PlanRefused, match=message) as caught:
        plan_rollout(params(), observed)
    assert str(caught.value).endswith(".")


def test_unhealthy_active_allowed_when_asked() -> None:
    observed = BLUE_ACTIVE.model_copy(update={"active_healthy": False})
    plan = plan_rollout(params(require_healthy_active=False), observed)
    assert plan.outcome is PlanOutcome.ROLLOUT


def test_rolled_out() -> None:
    assert live().rolled_out
    assert not live().model_copy(update={"observed_generation": 2}).rolled_out
    assert not live().model_copy(update={"available_replicas": 1}).rolled_out
    assert not ColourState().rolled_out


# -- rollback ----------------------------------------------------------------------------------

FULL = params(
    migration={**MIGRATION, "run_contract": True},
    flag={"name": "new-checkout", "steps": [10, 50, 100]},
)


@pytest.mark.parametrize(
    ("reached", "expected"),
    [
        (["lock"], []),
        (["lock", "migrate_expand"], []),  # expand is backward compatible: kept
        (["lock", "migrate_expand", "deploy_idle"], [StepKind.SCALE_DOWN_NEW]),
        (
            [
                "lock",
                "migrate_expand",
                "deploy_idle",
                "wait_rollout",
                "migrate_backfill",
                "point_preview",
                "pre_analysis",
            ],
            [StepKind.SCALE_DOWN_NEW],
        ),
        (
            ["lock", "deploy_idle", "wait_rollout", "switch", "post_analysis"],
            [StepKind.SWITCH_BACK, StepKind.SCALE_DOWN_NEW],
        ),
        (
            ["lock", "deploy_idle", "switch", "post_analysis", "flag_10", "flag_50"],
            [StepKind.FLAG_OFF, StepKind.SWITCH_BACK, StepKind.SCALE_DOWN_NEW],
        ),
        (
            ["lock", "deploy_idle", "switch", "post_analysis", "flag_10", "scale_down_old"],
            [
                StepKind.SCALE_UP_OLD,
                StepKind.FLAG_OFF,
                StepKind.SWITCH_BACK,
                StepKind.SCALE_DOWN_NEW,
            ],
        ),
        (["lock", "deploy_idle", "switch", "scale_down_old", "migrate_contract"], []),
    ],
)
def test_rollback_steps_undo_in_reverse_order(reached: list[str], expected: list[StepKind]) -> None:
    plan = plan_rollout(FULL, BLUE_ACTIVE)
    undo = rollback_steps(plan, reached)
    assert kinds(undo) == expected
    for step in undo:
        if step.kind in (StepKind.SWITCH_BACK, StepKind.SCALE_UP_OLD):
            assert step.colour is Colour.BLUE
        if step.kind is StepKind.SCALE_DOWN_NEW:
            assert (step.colour, step.replicas) == (Colour.GREEN, 0)


def test_rollback_of_unknown_step_is_refused() -> None:
    plan = plan_rollout(params(), BLUE_ACTIVE)
    with pytest.raises(ValueError, match="not in the plan"):
        rollback_steps(plan, ["lock", "teleport"])
