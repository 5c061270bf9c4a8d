"""retry-storm's decisions: the storm signal with its traffic floor, the containment ladder and
its exact undo, recovery over consecutive intervals, the load reduction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from decisions.retry_storm import (
    DISABLE,
    OPEN_BREAKER,
    TIGHTEN,
    Signal,
    Thresholds,
    containment_plan,
    load_reduction_percent,
    recovered,
    storming,
)

T = Thresholds()
NAIVE = {
    "max_attempts": 5,
    "budget_percent": None,
    "budget_min_retries": 3,
    "breaker_enabled": False,
}


def signal(caller: str = "shop/checkout", requests: float = 10, retries: float = 0, **kw) -> Signal:
    return Signal(
        caller=caller, dependency="payments", request_rate=requests, retry_rate=retries, **kw
    )


def test_the_storm_is_above_the_ratio_and_over_the_floor() -> None:
    calm = signal(retries=1.5)  # 15 %
    edge = signal(caller="shop/edge", retries=2.0)  # exactly 20 %: not above
    storm = signal(caller="shop/frontend", retries=40)  # 400 %
    idle = signal(caller="shop/idle", requests=0.05, retries=0.05)  # 100 % but under the floor
    none = signal(caller="shop/none", requests=0, retries=0)
    assert storming([calm, edge, storm, idle, none], T) == (storm,)
    assert idle.retry_ratio(T) is None
    assert none.retry_ratio(T) is None
    worse = signal(caller="shop/worse", retries=60)
    assert [s.caller for s in storming([storm, worse], T)] == ["shop/worse", "shop/frontend"]


def test_bad_measurements_are_refused() -> None:
    with pytest.raises(ValidationError):
        signal(requests=-1)
    with pytest.raises(ValidationError, match="finite"):
        signal(requests=float("inf"))
    with pytest.raises(ValidationError):
        signal(error_rate=1.5)


def test_the_ladder_tightens_then_disables_then_opens_the_breaker_and_undoes_exactly() -> None:
    storm = storming([signal(retries=40), signal(caller="shop/frontend", retries=30)], T)
    plan = containment_plan(storm, {"shop/checkout": NAIVE, "shop/frontend": NAIVE})
    assert [r.key for r in plan.rungs] == [TIGHTEN, DISABLE, OPEN_BREAKER]
    assert set(plan.callers) == {"shop/checkout", "shop/frontend"}
    tighten, disable, breaker = plan.rungs
    (first, _) = tighten.changes
    assert first.after == {"budget_percent": 10.0, "budget_min_retries": 1, "max_attempts": 3}
    assert first.before == {"budget_percent": None, "budget_min_retries": 3, "max_attempts": 5}
    assert disable.changes[0].before == {"max_attempts": 3}  # what the rung before left
    assert breaker.changes[0].after["breaker_enabled"] is True
    # undoing newest first gives back the original settings exactly
    state = dict(NAIVE)
    for rung in plan.rungs:
        state.update(rung.changes[0].after)
    for rung in reversed(plan.rungs):
        state.update(rung.undo()[0].after)
    assert {k: state[k] for k in NAIVE} == NAIVE


def test_rungs_that_change_nothing_are_left_out_and_blind_plans_refused() -> None:
    strict = {**NAIVE, "max_attempts": 1, "budget_percent": 10.0, "budget_min_retries": 1}
    plan = containment_plan(storming([signal(retries=40)], T), {"shop/checkout": strict})
    assert [r.key for r in plan.rungs] == [OPEN_BREAKER]
    assert containment_plan((), {}).empty
    with pytest.raises(ValueError, match="no current retry settings for shop/checkout"):
        containment_plan(storming([signal(retries=40)], T), {})


def test_recovered_and_load_reduction() -> None:
    assert recovered([0.9, 0.5, 0.01, 0.0, 0.04], T)
    assert not recovered([0.0, 0.0], T)  # too few intervals yet
    assert not recovered([0.0, 0.2, 0.0], T)  # a relapse in the window
    assert not recovered([0.0, float("nan"), 0.0], T)
    assert load_reduction_percent(10.0, 2.5) == pytest.approx(75.0)
    assert load_reduction_percent(0.0, 1.0) is None


def test_contained_needs_data_for_every_caller_acted_on() -> None:
    from decisions.retry_storm import contained_verdict

    calm = signal(caller="shop/checkout", retries=0.5)
    assert contained_verdict([calm], {"shop/checkout"}, T) is True
    # the frontend was changed too but has no series yet: no verdict, never "contained"
    assert contained_verdict([calm], {"shop/checkout", "shop/frontend"}, T) is None
    assert contained_verdict([], {"shop/checkout"}, T) is None
    # anything storming, acted on or not, keeps it open
    storm = signal(caller="shop/edge", retries=40)
    assert contained_verdict([calm, storm], {"shop/checkout"}, T) is None


def test_the_kill_switch_targets_the_root_cause_only() -> None:
    from decisions.retry_storm import kill_switch_targets

    def pair(caller: str, dependency: str, error: float) -> Signal:
        return Signal(
            caller=caller, dependency=dependency, request_rate=5, retry_rate=0, error_rate=error
        )

    frontend = pair("shop/frontend", "checkout", 1.0)  # checkout fails because payments does
    checkout = pair("shop/checkout", "payments", 0.95)
    assert kill_switch_targets([frontend, checkout], 0.9) == (checkout,)
    assert kill_switch_targets([frontend, pair("shop/checkout", "payments", 0.5)], 0.9) == (
        frontend,
    )
    assert kill_switch_targets([pair("shop/checkout", "payments", 0.2)], 0.9) == ()


def test_tighten_never_loosens_what_the_pods_have_in_force() -> None:
    storm = [signal(retries=40)]
    plan = containment_plan(
        storm, {"shop/checkout": {}}, {"shop/checkout": {"max_attempts": 2, "budget_percent": 5}}
    )
    tighten = plan.rungs[0]
    assert tighten.key == TIGHTEN
    assert tighten.changes[0].after == {
        "budget_percent": 5.0,
        "budget_min_retries": 1,
        "max_attempts": 2,
    }
    assert tighten.changes[0].before == {
        "budget_percent": None,
        "budget_min_retries": None,
        "max_attempts": None,
    }
