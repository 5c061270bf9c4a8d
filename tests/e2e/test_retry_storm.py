"""``retry-storm`` on the sandbox, the bad days: no storm, Prometheus unreachable, and a
containment step refused by the API during a real storm of the demo shop.

The acceptance drill (``runbooks.demo_storm.storm_incident``: contained within 30 s, payments'
load down by at least 70 %, settings restored after the heal, events) runs in ``runbooks
demo`` and is asserted by ``tests/e2e/test_cli.py``, so CI runs one full incident, not two.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from prefect_reads import event_names
from shops import own_shop

from blocks import HttpService, KubernetesTarget
from decisions.retry_storm import RetryStormParams
from flows.retry_storm import retry_storm
from runbooks.demo_storm import DRILL_PARAMS, storm, wait_for_traffic
from runbooks.kit import Outcome
from sandbox.showcase import retry_config_map
from tasks.load import RequestLoad
from tasks.retry_config import read_retry_config


@pytest.fixture(scope="module")
def storm_shop(sandbox) -> Iterator[tuple[KubernetesTarget, dict]]:
    """The demo shop, one pod per role, in a namespace of its own."""
    with own_shop(sandbox, "storm") as shop:
        yield shop


@pytest.fixture
def prometheus(sandbox) -> HttpService:
    if not sandbox.endpoints.get("prometheus"):
        pytest.skip("Prometheus is not installed (apt-get install prometheus)")
    return HttpService(base_url=sandbox.endpoints["prometheus"], read_timeout_seconds=5)


def _documents(k8s: KubernetesTarget, params: RetryStormParams) -> dict[str, str]:
    out = {}
    for role in ("frontend", "checkout"):
        config = read_retry_config.fn(k8s, k8s.namespace, retry_config_map(role), "retry.json")
        out[role] = json.dumps(config.document) + ("" if config.original is None else " +orig")
    return out


def test_no_storm_changes_nothing_and_says_so(prefect_server, storm_shop, prometheus) -> None:
    """Healthy traffic through all three services: the runbook measures, finds no storm, stops."""
    k8s, shop = storm_shop
    params = RetryStormParams.model_validate({"namespaces": [k8s.namespace], **DRILL_PARAMS})
    before = _documents(k8s, params)
    with RequestLoad(shop["frontend"].url, path="/buy?user=calm", rps=4, concurrency=4) as load:
        wait_for_traffic(prometheus, params)
        result = retry_storm(params, prometheus, k8s)
    assert load.failed == 0, load.failures[:3]
    assert result.outcome is Outcome.NO_CHANGE, result.reason
    assert result.stage == "no-storm"
    assert "nothing changed" in result.reason
    assert _documents(k8s, params) == before


def test_prometheus_unreachable_refuses_to_act_blind(prefect_server, storm_shop) -> None:
    k8s, _ = storm_shop
    params = RetryStormParams.model_validate({"namespaces": [k8s.namespace], **DRILL_PARAMS})
    before = _documents(k8s, params)
    blind = HttpService(base_url="http://127.0.0.1:9", connect_timeout_seconds=1)
    result = retry_storm(params, blind, k8s)
    assert result.outcome is Outcome.FAILED
    assert result.stage == "refused"
    assert "refusing to act blind" in result.reason
    assert "nothing was changed" in result.reason
    assert _documents(k8s, params) == before


def _refuse_second_rung(kube_faults) -> None:
    """The next two ConfigMap writes pass (a ``hang`` fault without a status only delays them),
    the one after is refused with 403: faults match in order, each consumed once."""
    for fault in (
        {"action": "hang", "seconds": 0.01, "times": 2},
        {"status": 403, "message": "configmaps is forbidden (drill)", "times": 1},
    ):
        kube_faults.post(
            "/_sandbox/faults", json={"method": "PATCH", "path": "/configmaps/"} | fault
        ).raise_for_status()


def test_a_containment_step_failing_is_undone_or_kept_as_asked(
    prefect_server, storm_shop, prometheus, kube_faults
) -> None:
    """During a real storm, with thresholds so strict that the first rung (retry budgets, both
    callers) cannot contain it, the second rung's first write is refused by the API: with
    ``on_step_failure=undo`` the first rung is taken back (documents exactly as before, no
    annotation), with ``keep`` it stays in force and the result says so.

    The acceptance drill itself (contained within 30 s, load -70 %, restored after the heal)
    runs in ``runbooks demo``, asserted by ``tests/e2e/test_cli.py``.
    """
    k8s, shop = storm_shop
    params = RetryStormParams.model_validate({"namespaces": [k8s.namespace], **DRILL_PARAMS})
    strict = params.model_copy(
        update={
            "thresholds": params.thresholds.model_copy(update={"retry_ratio": 0.01}),
            "settle_seconds": params.verify_after_seconds,
        }
    )
    before = _documents(k8s, params)
    with storm(k8s, prometheus, shop, params):
        _refuse_second_rung(kube_faults)
        undo = retry_storm(strict.model_copy(update={"on_step_failure": "undo"}), prometheus, k8s)
        after_undo = _documents(k8s, params)
        kube_faults.delete("/_sandbox/faults").raise_for_status()
        _refuse_second_rung(kube_faults)
        keep = retry_storm(strict, prometheus, k8s)
        after_keep = _documents(k8s, params)
    kube_faults.delete("/_sandbox/faults").raise_for_status()
    # payments healed: a re-run finds no storm, but the settings the keep run left contained,
    # and restores them (to the original recorded in the annotation) once the calls succeed
    calm = params.model_copy(update={"window": "6s"})
    with RequestLoad(shop["frontend"].url, path="/buy?user=calm", rps=4, concurrency=4):
        time.sleep(6)  # the window holds calm traffic only
        rerun = retry_storm(calm, prometheus, k8s)
    after_rerun = _documents(k8s, params)

    assert undo.outcome is Outcome.ROLLED_BACK, undo.reason
    assert undo.stage == "failed"
    assert "undone (on_step_failure=undo)" in undo.reason
    assert "forbidden" in undo.reason
    assert after_undo == before == {"frontend": "{}", "checkout": "{}"}
    assert keep.outcome is Outcome.FAILED, keep.reason
    assert keep.rungs_applied == ("tighten-retries",)
    assert "kept (on_step_failure=keep)" in keep.reason
    assert all('"max_attempts": 3' in doc for doc in after_keep.values()), after_keep
    assert all(doc.endswith("+orig") for doc in after_keep.values()), after_keep
    detected = "runbooks.retry-storm.detected"
    assert detected in event_names("retry-storm", k8s.namespace, until=detected)
    assert rerun.outcome is Outcome.SUCCEEDED, (rerun.reason, rerun.timeline)
    assert rerun.stage == "restored"
    assert after_rerun == {"frontend": "{}", "checkout": "{}"}
