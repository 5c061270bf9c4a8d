"""apply-scaling against the session sandbox's API emulator. Its tasks: HPA minReplicas
following a schedule hour by hour, idempotence (the resourceVersion does not move), clamps,
dry runs, a person's concurrent edit (a real 409), a 500 retried, refusals; and KEDA cron
triggers written into a ScaledObject of a CRD registered in the emulator, its cpu trigger kept.

Tasks are called with ``.fn()`` (no Prefect engine); each test uses its own names in
``default`` and deletes what it created. The flow: schedules that load-forecast stored (Prefect
variables) applied hour by hour, a re-run in the hour changing nothing, the floor once the plan
runs out, a missing schedule reported while the others apply.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from blocks import KubernetesTarget
from decisions.kube_scaling import FLOOR_ANNOTATION, SET_ANNOTATION
from decisions.load_forecast import ApplyScalingParams, LoadForecastParams
from decisions.scaling import compress_schedule
from flows.apply_scaling import apply_scaling
from flows.load_forecast import load_forecast
from runbooks.errors import InvalidRequestError, NotFoundError
from runbooks.kit import Outcome
from sandbox.demand import synthetic_demand, write_history_csv
from sandbox.showcase import deployment_manifest
from tasks.kube_scaling import (
    apply_hpa_minimum,
    apply_keda_schedule,
    find_hpa,
    find_scaled_object,
)
from tasks.kubernetes import apply_deployment
from tasks.schedules import delete_schedule, read_schedules

NAMESPACE = "default"
T0 = datetime(2026, 3, 14, 9, tzinfo=UTC)
H = timedelta(hours=1)
SCHEDULE = compress_schedule({T0: 6, T0 + H: 4, T0 + 2 * H: 8})
KEDA = ("keda.sh", "v1alpha1")
CPU = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}

SCALED_OBJECT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "names": {
            "kind": "ScaledObject",
            "listKind": "ScaledObjectList",
            "plural": "scaledobjects",
            "singular": "scaledobject",
            "shortNames": ["so"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["scaleTargetRef", "triggers"],
                                "properties": {
                                    "scaleTargetRef": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {
                                            "apiVersion": {"type": "string"},
                                            "kind": {"type": "string"},
                                            "name": {"type": "string"},
                                        },
                                    },
                                    "minReplicaCount": {"type": "integer", "format": "int32"},
                                    "maxReplicaCount": {"type": "integer", "format": "int32"},
                                    "triggers": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["metadata", "type"],
                                            "properties": {
                                                "type": {"type": "string"},
                                                "name": {"type": "string"},
                                                "metricType": {"type": "string"},
                                                "metadata": {
                                                    "type": "object",
                                                    "additionalProperties": {"type": "string"},
                                                },
                                            },
                                        },
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Cleanup:
    def __init__(self, k8s: KubernetesTarget):
        self.k8s = k8s
        self.deployments: list[str] = []
        self.hpas: list[str] = []
        self.scaled_objects: list[str] = []

    def run(self) -> None:
        with self.k8s.get_api_client() as api:
            for name in self.hpas:
                with contextlib.suppress(Exception):  # already gone or never created
                    self.k8s.autoscaling_v2(api).delete_namespaced_horizontal_pod_autoscaler(
                        name, NAMESPACE
                    )
            for name in self.scaled_objects:
                with contextlib.suppress(Exception):  # gone with its CRD, or never created
                    self.k8s.custom_objects(api).delete_namespaced_custom_object(
                        *KEDA, NAMESPACE, "scaledobjects", name
                    )
            for name in self.deployments:
                with contextlib.suppress(Exception):  # already gone or never created
                    self.k8s.apps_v1(api).delete_namespaced_deployment(name, NAMESPACE)


@pytest.fixture
def cleanup(k8s: KubernetesTarget) -> Iterator[Cleanup]:
    done = Cleanup(k8s)
    yield done
    done.run()


def _deployment(k8s: KubernetesTarget, cleanup: Cleanup) -> str:
    name = _name("scaled")
    cleanup.deployments.append(name)
    apply_deployment.fn(k8s, deployment_manifest(name, "checkout", "demo/shop:v1", 1, {}))
    return name


def _create_hpa(
    k8s: KubernetesTarget,
    cleanup: Cleanup,
    deployment: str,
    *,
    min_replicas: int = 2,
    max_replicas: int = 10,
    owners: list[dict[str, Any]] | None = None,
) -> str:
    name = _name("hpa")
    cleanup.hpas.append(name)
    body = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "ownerReferences": owners or []},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
        },
    }
    with k8s.get_api_client() as api:
        k8s.autoscaling_v2(api).create_namespaced_horizontal_pod_autoscaler(NAMESPACE, body)
    return name


def _hpa(k8s: KubernetesTarget, name: str) -> Any:
    with k8s.get_api_client() as api:
        return k8s.autoscaling_v2(api).read_namespaced_horizontal_pod_autoscaler(name, NAMESPACE)


@pytest.fixture
def hpa(k8s: KubernetesTarget, cleanup: Cleanup) -> tuple[str, str]:
    """(deployment, hpa): a Deployment and its HPA, minReplicas 2, maxReplicas 10."""
    deployment = _deployment(k8s, cleanup)
    return deployment, _create_hpa(k8s, cleanup, deployment)


def _apply(k8s: KubernetesTarget, deployment: str, now: datetime, windows=SCHEDULE, **kw: Any):
    return apply_hpa_minimum.fn(
        k8s, NAMESPACE, deployment, windows, now=now, dry_run=kw.get("dry_run", False)
    )


# -- HPA ----------------------------------------------------------------------------------------


def test_min_replicas_follows_the_schedule_hour_by_hour(k8s, hpa) -> None:
    deployment, name = hpa
    found = find_hpa.fn(k8s, NAMESPACE, deployment)
    assert found is not None
    assert found["metadata"]["name"] == name
    assert found["spec"]["minReplicas"] == 2

    before = _hpa(k8s, name).metadata.resource_version
    early = _apply(k8s, deployment, T0 - H)  # no plan yet: the floor, which it already is
    assert (early.changed, early.after) == (False, 2)
    assert _hpa(k8s, name).metadata.resource_version == before  # nothing written

    seen = []
    for hour in range(4):
        now = T0 + hour * H + timedelta(minutes=7)
        change = _apply(k8s, deployment, now)
        live = _hpa(k8s, name)
        assert live.spec.min_replicas == change.after
        seen.append((change.before, change.after))
        assert live.metadata.annotations[FLOOR_ANNOTATION] == "2"
        assert live.metadata.annotations[SET_ANNOTATION] == str(change.after)

        again = _apply(k8s, deployment, now + timedelta(minutes=30))  # the same hour again
        assert not again.changed
        assert again.note.startswith("unchanged")
        assert _hpa(k8s, name).metadata.resource_version == live.metadata.resource_version
    assert seen == [(2, 6), (6, 4), (4, 8), (8, 2)]
    assert change.note == "no plan for this hour (12:00 UTC): back to the floor 2"


def test_clamped_to_max_replicas(k8s, cleanup) -> None:
    deployment = _deployment(k8s, cleanup)
    name = _create_hpa(k8s, cleanup, deployment, min_replicas=3, max_replicas=5)
    change = _apply(k8s, deployment, T0, windows=compress_schedule({T0: 14}))
    assert (change.floor, change.after, change.max_replicas) == (3, 5, 5)
    assert "clamped to maxReplicas 5" in change.note
    assert _hpa(k8s, name).spec.min_replicas == 5


def test_dry_run_decides_and_writes_nothing(k8s, hpa) -> None:
    deployment, name = hpa
    before = _hpa(k8s, name)
    change = _apply(k8s, deployment, T0, dry_run=True)
    assert (change.changed, change.before, change.after) == (True, 2, 6)
    after = _hpa(k8s, name)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.spec.min_replicas == 2
    assert after.metadata.annotations is None


def test_a_hand_edit_becomes_the_new_floor(k8s, hpa) -> None:
    deployment, name = hpa
    assert _apply(k8s, deployment, T0).after == 6
    with k8s.get_api_client() as api:
        k8s.autoscaling_v2(api).patch_namespaced_horizontal_pod_autoscaler(
            name, NAMESPACE, {"spec": {"minReplicas": 3}}
        )
    change = _apply(k8s, deployment, T0 + H)  # plan 4, above the person's 3
    assert (change.floor, change.before, change.after) == (3, 3, 4)
    assert _hpa(k8s, name).metadata.annotations[FLOOR_ANNOTATION] == "3"
    assert _apply(k8s, deployment, T0 + 3 * H).after == 3  # no plan: back to their floor


def _inject(kube_faults: httpx.Client, hpa: str, **fault: Any) -> int:
    path = rf"/namespaces/{NAMESPACE}/horizontalpodautoscalers/{hpa}$"
    created = kube_faults.post("/_sandbox/faults", json={"method": "PATCH", "path": path} | fault)
    created.raise_for_status()
    return created.json()["id"]


def _hits(kube_faults: httpx.Client, fault_id: int) -> int:
    listed = kube_faults.get("/_sandbox/faults").json()["faults"]
    return next(f["hits"] for f in listed if f["id"] == fault_id)


def test_a_concurrent_edit_is_a_409_then_reread_and_converges(k8s, hpa, kube_faults) -> None:
    """A person raises minReplicas to 3 while our patch (read at 2) is in flight: the server
    refuses ours (stale resourceVersion), we read again, take 3 as the floor, and set 6."""
    deployment, name = hpa
    held = _inject(kube_faults, name, action="hang", seconds=1.5, times=1)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_apply, k8s, deployment, T0)
        deadline = time.monotonic() + 10
        while _hits(kube_faults, held) == 0:  # our patch is being held by the server
            assert time.monotonic() < deadline, "the patch never reached the API server"
            time.sleep(0.02)
        live = _hpa(k8s, name)
        live.spec.min_replicas = 3
        with k8s.get_api_client() as api:  # a PUT, not held by the PATCH fault
            k8s.autoscaling_v2(api).replace_namespaced_horizontal_pod_autoscaler(
                name, NAMESPACE, live
            )
        change = running.result(timeout=30)
    assert (change.floor, change.before, change.after, change.changed) == (3, 3, 6, True)
    final = _hpa(k8s, name)
    assert final.spec.min_replicas == 6
    assert final.metadata.annotations[FLOOR_ANNOTATION] == "3"


def test_a_500_is_retried(k8s, hpa, kube_faults) -> None:
    deployment, name = hpa
    fault = _inject(kube_faults, name, status=500, times=1)
    change = _apply(k8s, deployment, T0)
    assert (change.changed, change.after) == (True, 6)
    assert _hits(kube_faults, fault) == 1
    assert _hpa(k8s, name).spec.min_replicas == 6


def test_a_deployment_without_autoscaler_is_refused(k8s, cleanup) -> None:
    deployment = _deployment(k8s, cleanup)
    assert find_hpa.fn(k8s, NAMESPACE, deployment) is None
    with pytest.raises(InvalidRequestError) as exc:
        _apply(k8s, deployment, T0)
    assert f"{NAMESPACE}/{deployment}" in str(exc.value)
    assert "create an HPA or ScaledObject first" in str(exc.value)


def test_an_unknown_namespace_is_named(k8s) -> None:
    with pytest.raises(NotFoundError, match="namespace no-such-ns does not exist"):
        apply_hpa_minimum.fn(k8s, "no-such-ns", "web", SCHEDULE, now=T0, dry_run=False)
    with pytest.raises(NotFoundError, match="no-such-ns"):
        find_hpa.fn(k8s, "no-such-ns", "web")


def test_a_naive_now_is_refused(k8s, hpa) -> None:
    deployment, _ = hpa
    with pytest.raises(InvalidRequestError, match="timezone-aware"):
        _apply(k8s, deployment, datetime(2026, 3, 14, 9))  # naive: the point


# -- KEDA ---------------------------------------------------------------------------------------


def _crds(k8s: KubernetesTarget, api: Any) -> Any:
    from kubernetes.client import ApiextensionsV1Api

    return ApiextensionsV1Api(api)


def _crd_installed(k8s: KubernetesTarget) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    with k8s.get_api_client() as api:
        try:
            found = _crds(k8s, api).read_custom_resource_definition("scaledobjects.keda.sh")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return api.sanitize_for_serialization(found)


def _wait_for_group(k8s: KubernetesTarget, present: bool) -> None:
    deadline = time.monotonic() + 10
    with k8s.get_api_client() as api:
        while True:
            try:
                k8s.custom_objects(api).list_namespaced_custom_object(
                    *KEDA, NAMESPACE, "scaledobjects"
                )
                served = True
            except Exception:
                served = False
            if served == present:
                return
            assert time.monotonic() < deadline, f"keda.sh served={served}, wanted {present}"
            time.sleep(0.05)


@pytest.fixture
def keda_crd(k8s: KubernetesTarget) -> Iterator[None]:
    """KEDA's ScaledObject CRD registered in the emulator (removed after if we added it)."""
    created = _crd_installed(k8s) is None
    if created:
        with k8s.get_api_client() as api:
            _crds(k8s, api).create_custom_resource_definition(SCALED_OBJECT_CRD)
    _wait_for_group(k8s, present=True)
    yield
    if created:
        with k8s.get_api_client() as api:
            _crds(k8s, api).delete_custom_resource_definition("scaledobjects.keda.sh")


@pytest.fixture
def no_keda_crd(k8s: KubernetesTarget) -> Iterator[None]:
    """KEDA's CRD absent; one registered by another test is put back after."""
    existing = _crd_installed(k8s)
    if existing is not None:
        with k8s.get_api_client() as api:
            _crds(k8s, api).delete_custom_resource_definition("scaledobjects.keda.sh")
    _wait_for_group(k8s, present=False)
    yield
    if existing is not None:
        body = {k: existing[k] for k in ("apiVersion", "kind", "spec")}
        body["metadata"] = {"name": "scaledobjects.keda.sh"}
        with k8s.get_api_client() as api:
            _crds(k8s, api).create_custom_resource_definition(body)


def _create_scaled_object(k8s: KubernetesTarget, cleanup: Cleanup, deployment: str) -> dict:
    name = _name("so")
    cleanup.scaled_objects.append(name)
    body = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": deployment},
            "minReplicaCount": 2,
            "maxReplicaCount": 7,
            "triggers": [CPU],
        },
    }
    with k8s.get_api_client() as api:
        return k8s.custom_objects(api).create_namespaced_custom_object(
            *KEDA, NAMESPACE, "scaledobjects", body
        )


def _scaled_object(k8s: KubernetesTarget, name: str) -> dict:
    with k8s.get_api_client() as api:
        return k8s.custom_objects(api).get_namespaced_custom_object(
            *KEDA, NAMESPACE, "scaledobjects", name
        )


def test_keda_cron_triggers_are_written_and_the_cpu_trigger_kept(k8s, cleanup, keda_crd) -> None:
    deployment = _deployment(k8s, cleanup)
    created = _create_scaled_object(k8s, cleanup, deployment)
    name = created["metadata"]["name"]
    found = find_scaled_object.fn(k8s, NAMESPACE, deployment)
    assert found is not None
    assert found["metadata"]["name"] == name

    dry = apply_keda_schedule.fn(k8s, NAMESPACE, deployment, SCHEDULE, dry_run=True)
    assert dry.changed
    unwritten = _scaled_object(k8s, name)["metadata"]["resourceVersion"]
    assert unwritten == created["metadata"]["resourceVersion"]

    change = apply_keda_schedule.fn(k8s, NAMESPACE, deployment, SCHEDULE, dry_run=False)
    assert change.changed
    assert change.floor == 2
    live = _scaled_object(k8s, name)
    triggers = live["spec"]["triggers"]
    assert triggers[0] == CPU
    assert [t["metadata"] for t in triggers[1:]] == [
        {"timezone": "Etc/UTC", "start": s, "end": e, "desiredReplicas": n}
        for s, e, n in [
            ("0 9 14 3 *", "0 10 14 3 *", "6"),
            ("0 10 14 3 *", "0 11 14 3 *", "4"),
            ("0 11 14 3 *", "0 12 14 3 *", "7"),  # 8 capped at maxReplicaCount 7
        ]
    ]
    assert all(t["type"] == "cron" for t in triggers[1:])

    again = apply_keda_schedule.fn(k8s, NAMESPACE, deployment, SCHEDULE, dry_run=False)
    assert not again.changed
    assert again.note.startswith("unchanged")
    unwritten = _scaled_object(k8s, name)["metadata"]["resourceVersion"]
    assert unwritten == live["metadata"]["resourceVersion"]

    # a Deployment scaled by KEDA: its minReplicas is not ours to patch
    with pytest.raises(InvalidRequestError, match=f"KEDA ScaledObject {name}"):
        _apply(k8s, deployment, T0)


def test_keda_write_is_retried_on_500(k8s, cleanup, keda_crd, kube_faults) -> None:
    deployment = _deployment(k8s, cleanup)
    name = _create_scaled_object(k8s, cleanup, deployment)["metadata"]["name"]
    path = rf"/namespaces/{NAMESPACE}/scaledobjects/{name}$"
    created = kube_faults.post(
        "/_sandbox/faults", json={"method": "PATCH", "path": path, "status": 500, "times": 1}
    )
    fault = created.json()["id"]
    change = apply_keda_schedule.fn(k8s, NAMESPACE, deployment, SCHEDULE, dry_run=False)
    assert change.changed
    assert _hits(kube_faults, fault) == 1
    assert len(_scaled_object(k8s, name)["spec"]["triggers"]) == 4


def test_keda_owned_hpa_is_skipped(k8s, cleanup, keda_crd) -> None:
    deployment = _deployment(k8s, cleanup)
    scaled = _create_scaled_object(k8s, cleanup, deployment)
    owner = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "name": scaled["metadata"]["name"],
        "uid": scaled["metadata"]["uid"],
        "controller": True,
    }
    _create_hpa(k8s, cleanup, deployment, owners=[owner])
    assert find_hpa.fn(k8s, NAMESPACE, deployment) is None


def test_without_the_keda_crd_there_is_no_scaled_object(k8s, hpa, no_keda_crd) -> None:
    deployment, _ = hpa
    assert find_scaled_object.fn(k8s, NAMESPACE, deployment) is None
    with pytest.raises(InvalidRequestError, match="is scaled by HorizontalPodAutoscaler"):
        apply_keda_schedule.fn(k8s, NAMESPACE, deployment, SCHEDULE, dry_run=False)


# -- the apply-scaling flow on schedules load-forecast stored ----------------------------------


def _plan_and_store(tmp_path: Path, service: str, deployment: str) -> tuple[int, ...]:
    """Run load-forecast on a file history ending at T0 so it stores ``service``'s schedule."""
    history = write_history_csv(
        tmp_path / f"{service}.csv", synthetic_demand(T0, days=21, base_rps=150, seed=9)
    )
    result = load_forecast(
        params=LoadForecastParams.model_validate(
            {
                "target": service,
                "as_of": T0,
                "horizon_hours": 6,
                "models": ["seasonal_naive_daily"],
                "services": [
                    {
                        "name": service,
                        "source": {"kind": "file", "path": str(history)},
                        "capacity_per_instance_rps": 30,
                        "min_instances": 1,
                        "max_instances": 9,
                        "kubernetes": {"namespace": NAMESPACE, "deployment": deployment},
                    }
                ],
            }
        )
    )
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    schedules, errors = read_schedules((service,))
    assert not errors
    return schedules[service].instances


def test_apply_scaling_follows_the_stored_schedule_hour_by_hour(
    prefect_server: str, k8s, hpa, tmp_path: Path
) -> None:
    deployment, name = hpa  # minReplicas 2 (the floor), maxReplicas 10
    service = _name("svc")
    planned = _plan_and_store(tmp_path, service, deployment)
    try:
        assert len(planned) == 6
        for hour, wanted in enumerate(planned):
            at = T0 + hour * H + timedelta(minutes=5)
            params = ApplyScalingParams(services=(service,), at=at)
            result = apply_scaling(params=params, kubernetes=k8s)
            expected = min(max(wanted, 2), 10)
            assert _hpa(k8s, name).spec.min_replicas == expected
            change = result.changes[0]
            assert (change.service, change.scaler, change.after) == (service, "hpa", str(expected))
            rerun = apply_scaling(params=params, kubernetes=k8s)  # idempotent within the hour
            assert rerun.outcome is Outcome.NO_CHANGE
            assert not rerun.changes[0].changed
        past = apply_scaling(
            params=ApplyScalingParams(services=(service,), at=T0 + 6 * H), kubernetes=k8s
        )
        assert _hpa(k8s, name).spec.min_replicas == 2  # the plan ran out: back to the floor
        assert "back to the floor" in past.changes[0].note
    finally:
        delete_schedule(service)


def test_apply_scaling_reports_a_missing_schedule_and_a_dry_run_writes_nothing(
    prefect_server: str, k8s, hpa, tmp_path: Path
) -> None:
    deployment, name = hpa
    service = _name("svc")
    _plan_and_store(tmp_path, service, deployment)
    missing = _name("nobody")
    try:
        before = _hpa(k8s, name).metadata.resource_version
        result = apply_scaling(
            params=ApplyScalingParams(services=(service, missing), at=T0, dry_run=True),
            kubernetes=k8s,
        )
        assert result.outcome is Outcome.FAILED
        assert result.failed == (missing,)
        failed = next(c for c in result.changes if c.service == missing)
        assert "no schedule stored" in failed.note
        planned = next(c for c in result.changes if c.service == service)
        assert planned.ok
        assert _hpa(k8s, name).metadata.resource_version == before  # dry run: nothing written
    finally:
        delete_schedule(service)
