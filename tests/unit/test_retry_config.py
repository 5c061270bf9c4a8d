"""retry-storm's pure edits of a caller's retry document: parsing and rendering, the verdict
before each write, the original kept in an annotation, the restore change, the gauges a change
must show, the whole ladder undone exactly; and the runbook's parameters, the assembly of a
measurement from the queries' series, and the PromQL those series come from."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from decisions.retry_config import (
    ORIGINAL_ANNOTATION,
    RetryDocumentError,
    annotations_after,
    applied,
    expected_gauges,
    gauge_value,
    parse_document,
    render_document,
    restore_change,
    verdict,
)
from decisions.retry_storm import (
    DISABLE,
    OPEN_BREAKER,
    RETRY_FIELDS,
    TIGHTEN,
    RetryStormParams,
    SettingsChange,
    Signal,
    Thresholds,
    containment_plan,
    healthy,
    measurement,
    reverse,
)
from runbooks.alerts import (
    GROUP_LABELS,
    RETRY_SETTING_GAUGES,
    backend_load_query,
    error_share_query,
    retry_setting_query,
)

CALLER = "shop/checkout"
GAUGED = tuple(RETRY_SETTING_GAUGES)


def change(after: dict, before: dict) -> SettingsChange:
    return SettingsChange(caller=CALLER, after=after, before=before)


# --- parse_document / render_document ---------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_a_missing_or_empty_document_is_an_empty_object(text: str | None) -> None:
    assert parse_document(text, "shop/checkout-retry[retry.json]") == {}


def test_invalid_json_and_non_objects_are_refused_naming_the_place() -> None:
    where = "shop/checkout-retry[retry.json]"
    with pytest.raises(
        RetryDocumentError, match=r"checkout-retry\[retry\.json\] is not valid JSON"
    ):
        parse_document("{max_attempts: 3", where)
    with pytest.raises(
        RetryDocumentError, match=r"retry\.json\] must hold a JSON object, got list"
    ):
        parse_document("[1, 2]", where)
    with pytest.raises(RetryDocumentError, match="got int"):
        parse_document("3", where)
    assert issubclass(RetryDocumentError, ValueError)


def test_rendering_is_stable_and_round_trips() -> None:
    document = {"max_attempts": 3, "budget_percent": None, "breaker_enabled": True}
    text = render_document(document)
    assert text.endswith("}\n")
    assert list(json.loads(text)) == ["breaker_enabled", "budget_percent", "max_attempts"]
    assert render_document(dict(reversed(document.items()))) == text  # key order is irrelevant
    assert parse_document(text, "x") == document
    assert render_document(parse_document(text, "x")) == text
    assert render_document({}) == "{}\n"


# --- verdict / applied --------------------------------------------------------------------------


def test_verdict_apply_done_and_conflict() -> None:
    tighten = change(after={"max_attempts": 3}, before={"max_attempts": 5})
    assert verdict({"max_attempts": 5, "timeout_seconds": 2}, tighten) == "apply"
    assert verdict({"max_attempts": 3}, tighten) == "done"  # a re-run, or a write that landed
    assert verdict({"max_attempts": 4}, tighten) == "conflict"  # someone else's edit
    assert verdict({}, tighten) == "conflict"  # someone removed it


def test_verdict_with_absent_fields() -> None:
    budget = change(after={"budget_percent": 10.0}, before={"budget_percent": None})
    assert verdict({}, budget) == "apply"  # None: the key was absent
    assert verdict({"budget_percent": 10.0}, budget) == "done"
    assert verdict({"budget_percent": 20.0}, budget) == "conflict"
    remove = change(after={"budget_percent": None}, before={"budget_percent": 10.0})
    assert verdict({"budget_percent": 10.0}, remove) == "apply"
    assert verdict({"max_attempts": 3}, remove) == "done"


def test_applied_sets_values_removes_none_and_keeps_other_keys() -> None:
    document = {"max_attempts": 5, "budget_percent": 10.0, "timeout_seconds": 2}
    out = applied(
        document,
        change(
            after={"max_attempts": 3, "budget_percent": None, "breaker_enabled": True},
            before={"max_attempts": 5, "budget_percent": 10.0, "breaker_enabled": None},
        ),
    )
    assert out == {"max_attempts": 3, "timeout_seconds": 2, "breaker_enabled": True}
    assert document == {"max_attempts": 5, "budget_percent": 10.0, "timeout_seconds": 2}  # a copy
    # removing a key that is not there is not an error
    assert applied({}, change(after={"budget_percent": None}, before={})) == {}


# --- annotations_after ----------------------------------------------------------------------


def test_the_first_change_records_the_original() -> None:
    before, after = {"max_attempts": 5}, {"max_attempts": 3}
    got = annotations_after({"other": "x"}, before, after)
    assert got == {ORIGINAL_ANNOTATION: render_document(before)}


def test_a_later_change_leaves_the_record() -> None:
    recorded = {ORIGINAL_ANNOTATION: render_document({"max_attempts": 5})}
    assert annotations_after(recorded, {"max_attempts": 3}, {"max_attempts": 1}) == {}


def test_back_at_the_original_the_record_is_removed() -> None:
    recorded = {ORIGINAL_ANNOTATION: render_document({"max_attempts": 5})}
    assert annotations_after(recorded, {"max_attempts": 3}, {"max_attempts": 5}) == {
        ORIGINAL_ANNOTATION: None
    }
    empty = {ORIGINAL_ANNOTATION: render_document({})}
    assert annotations_after(empty, {"max_attempts": 3}, {}) == {ORIGINAL_ANNOTATION: None}


def test_no_change_and_no_record_changes_no_annotation() -> None:
    assert annotations_after({}, {"max_attempts": 5}, {"max_attempts": 5}) == {}
    assert annotations_after({}, {}, {}) == {}


# --- restore_change -------------------------------------------------------------------------


def test_nothing_to_restore_when_the_fields_equal_the_original() -> None:
    original = {"max_attempts": 5, "timeout_seconds": 2}
    document = {"max_attempts": 5, "timeout_seconds": 9}  # not a retry field we restore
    assert restore_change(CALLER, document, original, RETRY_FIELDS) is None


def test_restore_changes_only_the_differing_fields_back_to_the_original() -> None:
    original = {"max_attempts": 5, "breaker_minimum_calls": 20}
    document = {
        "max_attempts": 1,
        "budget_percent": 10.0,
        "breaker_minimum_calls": 20,
        "breaker_enabled": True,
    }
    got = restore_change(CALLER, document, original, RETRY_FIELDS)
    assert got is not None
    assert got.caller == CALLER
    assert got.after == {"max_attempts": 5, "budget_percent": None, "breaker_enabled": None}
    assert got.before == {"max_attempts": 1, "budget_percent": 10.0, "breaker_enabled": True}
    assert verdict(document, got) == "apply"
    assert applied(document, got) == original


# --- gauge_value / expected_gauges ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "gauge"),
    [
        ("budget_percent", None, -1.0),
        ("budget_percent", 10.0, 10.0),
        ("breaker_enabled", True, 1.0),
        ("breaker_enabled", False, 0.0),
        ("max_attempts", 3, 3.0),
    ],
)
def test_gauge_values(field: str, value: object, gauge: float) -> None:
    assert gauge_value(field, value) == gauge


def test_expected_gauges_read_set_values_and_skip_removed_or_untouched_fields() -> None:
    after = {"max_attempts": 1, "budget_percent": None, "budget_min_retries": 1}
    # budget removed: the pod's own default, unknown here, so not checked; breaker untouched:
    # not checked; budget_min_retries is not gauged at all
    assert expected_gauges(after, GAUGED) == {"max_attempts": 1.0}
    assert expected_gauges({"breaker_enabled": True, "budget_percent": 10.0}, GAUGED) == {
        "breaker_enabled": 1.0,
        "budget_percent": 10.0,
    }
    assert expected_gauges({}, GAUGED) == {}


# --- the whole ladder, applied and undone ---------------------------------------------------


def storm_of(caller: str = CALLER) -> tuple[Signal, ...]:
    return (Signal(caller=caller, dependency="payments", request_rate=10, retry_rate=40),)


@pytest.mark.parametrize("start", [{}, {"timeout_seconds": 2}], ids=["empty", "custom-key"])
def test_the_ladder_applied_then_undone_newest_first_gives_back_the_document(start: dict) -> None:
    plan = containment_plan(storm_of(), {CALLER: start})
    assert [r.key for r in plan.rungs] == [TIGHTEN, DISABLE, OPEN_BREAKER]
    document = dict(start)
    for rung in plan.rungs:
        for c in rung.changes:
            assert verdict(document, c) == "apply"
            document = applied(document, c)
            assert verdict(document, c) == "done"
    assert document == {
        **start,
        "max_attempts": 1,
        "budget_percent": 10.0,
        "budget_min_retries": 1,
        "breaker_enabled": True,
        "breaker_minimum_calls": 5,
        "breaker_failure_rate_percent": 50.0,
    }
    for rung in reversed(plan.rungs):
        for c in rung.undo():
            assert verdict(document, c) == "apply"
            document = applied(document, c)
    assert document == start
    assert render_document(document) == render_document(start)


def test_the_annotation_follows_the_ladder_and_is_gone_after_the_undo() -> None:
    start = {"timeout_seconds": 2}
    plan = containment_plan(storm_of(), {CALLER: start})
    changes = [c for r in plan.rungs for c in r.changes]
    changes += [c for r in reversed(plan.rungs) for c in r.undo()]
    annotations: dict[str, str] = {}
    document = dict(start)
    for i, c in enumerate(changes):
        new = applied(document, c)
        for key, value in annotations_after(annotations, document, new).items():
            if value is None:
                annotations.pop(key)
            else:
                annotations[key] = value
        document = new
        if i < len(changes) - 1:
            assert parse_document(annotations[ORIGINAL_ANNOTATION], "a") == start
    assert document == start
    assert annotations == {}


# --- reverse / sentence ---------------------------------------------------------------------


def test_reverse_is_last_first_with_before_and_after_swapped() -> None:
    first = change(after={"max_attempts": 3}, before={"max_attempts": 5})
    second = SettingsChange(
        caller="shop/frontend", after={"budget_percent": 10.0}, before={"budget_percent": None}
    )
    undo = reverse([first, second])
    assert [c.caller for c in undo] == ["shop/frontend", CALLER]
    assert undo[0].after == {"budget_percent": None}
    assert undo[0].before == {"budget_percent": 10.0}
    assert undo[1].after == {"max_attempts": 5}
    assert undo[1].before == {"max_attempts": 3}
    assert reverse(undo) == (first, second)
    assert reverse([]) == ()


def test_sentence() -> None:
    c = change(
        after={"max_attempts": 3, "budget_percent": 10.0},
        before={"max_attempts": 5, "budget_percent": None},
    )
    assert c.sentence() == "max_attempts 5 -> 3, budget_percent None -> 10.0"
    assert change(after={"max_attempts": 1}, before={}).sentence() == "max_attempts None -> 1"


# --- RetryStormParams -----------------------------------------------------------------------


def test_the_default_parameters_are_valid() -> None:
    p = RetryStormParams()
    assert p.window == "1m"
    assert p.namespaces == ()
    assert p.config_map == "{role}-retry"
    assert p.thresholds == Thresholds()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": "5 minutes"}, "window"),
        ({"window": "10ms"}, "window"),
        ({"recovery_window": "30"}, "recovery_window"),
        ({"namespaces": ("shop", "Bad_NS")}, "namespaces"),
        ({"config_map": "{name}-retry"}, "config_map"),
        ({"config_map": "UPPER"}, "config_map"),
        ({"poll_seconds": -1}, "poll_seconds"),
        ({"on_step_failure": "retry"}, "on_step_failure"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RetryStormParams(**kwargs)
    assert [e["loc"][0] for e in info.value.errors()] == [field]


def test_bad_values_are_quoted_in_the_message() -> None:
    with pytest.raises(ValidationError, match="'Bad_NS'"):
        RetryStormParams(namespaces=("Bad_NS",))
    with pytest.raises(ValidationError, match=r"'\{name\}-retry'"):
        RetryStormParams(config_map="{name}-retry")


def test_an_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        RetryStormParams(windw="1m")
    assert info.value.errors()[0]["loc"] == ("windw",)
    assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    "kwargs",
    [{"namespaces": ("shop\n",)}, {"config_map": "checkout-retry\n"}, {"window": "1m\n"}],
    ids=["namespace", "config_map", "window"],
)
def test_a_trailing_newline_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        RetryStormParams(**kwargs)


def test_config_map_of_a_caller() -> None:
    assert RetryStormParams().config_map_of("shop/checkout") == ("shop", "checkout-retry")
    custom = RetryStormParams(config_map="t1-{role}-cfg")
    assert custom.config_map_of("shop/checkout") == ("shop", "t1-checkout-cfg")
    assert RetryStormParams(config_map="shared-retry").config_map_of("a/b") == ("a", "shared-retry")


# --- measurement / healthy ------------------------------------------------------------------

CHECKOUT = ("shop", "checkout", "payments")
FRONTEND = ("shop", "frontend", "payments")
OTHER = ("other", "web", "payments")


def test_measurement_assembles_signals_per_pair_with_traffic() -> None:
    m = measurement(
        requests={CHECKOUT: 10.0, FRONTEND: 4.0},
        retries={CHECKOUT: 40.0, ("shop", "idle", "payments"): 1.0},  # idle: retries only
        errors={CHECKOUT: 1.3, FRONTEND: -0.1},
        attempts={CHECKOUT: 50.0, FRONTEND: 4.0, ("shop", "checkout", "stock"): 2.0},
        breakers_open=[FRONTEND],
    )
    by_caller = {s.caller: s for s in m.signals}
    assert set(by_caller) == {"shop/checkout", "shop/frontend"}
    checkout, frontend = by_caller["shop/checkout"], by_caller["shop/frontend"]
    assert (checkout.dependency, checkout.request_rate, checkout.retry_rate) == ("payments", 10, 40)
    assert checkout.error_rate == 1.0  # clipped
    assert not checkout.breaker_open
    assert frontend.retry_rate == 0.0  # no retries series yet: 0
    assert frontend.error_rate == 0.0  # clipped
    assert frontend.breaker_open
    assert m.load == {"payments": 54.0, "stock": 2.0}  # summed across callers


def test_measurement_filters_namespaces_for_signals_and_load() -> None:
    m = measurement(
        requests={CHECKOUT: 10.0, OTHER: 7.0},
        retries={OTHER: 3.0},
        errors={},
        attempts={CHECKOUT: 10.0, OTHER: 10.0},
        breakers_open=[OTHER],
        namespaces=["shop"],
    )
    assert [s.caller for s in m.signals] == ["shop/checkout"]
    assert m.load == {"payments": 10.0}
    everything = measurement({CHECKOUT: 1.0, OTHER: 1.0}, {}, {}, {CHECKOUT: 1.0, OTHER: 1.0}, [])
    assert [s.caller for s in everything.signals] == ["other/web", "shop/checkout"]
    assert everything.load == {"payments": 2.0}


def test_healthy_needs_traffic_and_judges_by_the_error_share() -> None:
    t = Thresholds()
    m = measurement(
        requests={CHECKOUT: 10.0, FRONTEND: 10.0},
        retries={},
        errors={CHECKOUT: 0.05, FRONTEND: 0.5},
        attempts={},
        breakers_open=[],
    )
    assert healthy(m, ["shop/idle"], t) is None  # no traffic: no evidence
    assert healthy(measurement({}, {}, {}, {}, []), [CALLER], t) is None
    assert healthy(m, ["shop/checkout"], t) is True  # at the bar counts as healthy
    assert healthy(m, ["shop/frontend"], t) is False
    assert healthy(m, ["shop/checkout", "shop/frontend"], t) is False


# --- PromQL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [error_share_query, backend_load_query])
def test_the_new_queries_carry_the_window_and_group_labels(query: Callable[..., str]) -> None:
    text = query("90s")
    assert "[90s]" in text
    assert "[5m]" in query()  # the default window
    assert f"sum by ({', '.join(GROUP_LABELS)})" in text
    with pytest.raises(ValueError, match="not a PromQL duration"):
        query("5 minutes")
    with pytest.raises(ValueError, match="not a PromQL duration"):
        query("")


def test_the_error_share_counts_every_outcome_but_ok() -> None:
    assert 'outcome!="ok"' in error_share_query("1m")
    assert "> 0)" in error_share_query("1m")  # no traffic: no series, never NaN


def test_retry_setting_query() -> None:
    assert retry_setting_query("max_attempts") == "shop_retry_max_attempts"
    assert retry_setting_query("breaker_enabled") == "shop_retry_breaker_enabled"
    with pytest.raises(
        ValueError, match="gauged fields: max_attempts, budget_percent, breaker_enabled"
    ):
        retry_setting_query("budget_min_retries")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_new_queries_parse_with_promtool(tmp_path: Path) -> None:
    queries = {
        "test:error_share:ratio": error_share_query("1m"),
        "test:backend_load:rate": backend_load_query("90s"),
        "test:max_attempts": retry_setting_query("max_attempts"),
        "test:budget_percent": retry_setting_query("budget_percent"),
        "test:breaker_enabled": retry_setting_query("breaker_enabled"),
    }
    rules = {
        "groups": [{"name": "t", "rules": [{"record": k, "expr": v} for k, v in queries.items()]}]
    }
    path = tmp_path / "queries.rules.yml"
    path.write_text(json.dumps(rules, indent=2))  # JSON is YAML
    done = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(queries)} rules found" in done.stdout + done.stderr
