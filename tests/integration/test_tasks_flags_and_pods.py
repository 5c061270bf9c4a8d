"""Feature-flag, namespace and pod-wait tasks against the session sandbox's Kubernetes API.

Called with ``.fn()`` (no Prefect engine), like ``test_tasks_kubernetes.py``; conflicts and
5xx are injected with the API emulator's fault endpoint (``/_sandbox/faults``).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest

from blocks import KubernetesTarget
from decisions.bluegreen import FLAGS_KEY
from decisions.flags import Flag, parse_flags
from runbooks.errors import ConflictError, InvalidRequestError
from sandbox.showcase import deployment_manifest
from tasks.flags import set_feature_flag
from tasks.kubernetes import (
    RolloutTimeoutError,
    namespace_exists,
    scale_deployment,
    wait_for_no_pods,
    wait_for_rollout,
)

NAMESPACE = "default"


@pytest.fixture
def config_map(k8s: KubernetesTarget) -> Iterator[str]:
    name = f"flags-{uuid.uuid4().hex[:8]}"
    yield name
    with k8s.get_api_client() as api, contextlib.suppress(Exception):  # maybe never created
        k8s.core_v1(api).delete_namespaced_config_map(name, NAMESPACE)


def _document(k8s: KubernetesTarget, name: str) -> dict[str, Flag]:
    with k8s.get_api_client() as api:
        found = k8s.core_v1(api).read_namespaced_config_map(name, NAMESPACE)
    return parse_flags(json.loads(found.data[FLAGS_KEY]))


def test_flag_steps_create_then_update_and_keep_other_flags(k8s, config_map: str) -> None:
    assert set_feature_flag.fn(k8s, NAMESPACE, config_map, "new-checkout", 10) == Flag(
        "new-checkout", True, 10.0
    )
    with k8s.get_api_client() as api:  # someone else's flag and key in the same ConfigMap
        core = k8s.core_v1(api)
        live = core.read_namespaced_config_map(config_map, NAMESPACE)
        document = json.loads(live.data[FLAGS_KEY])
        document["flags"]["dark-mode"] = {"enabled": True, "rollout_percent": 30, "allow": []}
        live.data = {FLAGS_KEY: json.dumps(document), "other.txt": "kept"}
        core.replace_namespaced_config_map(config_map, NAMESPACE, live)
    set_feature_flag.fn(k8s, NAMESPACE, config_map, "new-checkout", 50)
    flags = _document(k8s, config_map)
    assert flags["new-checkout"] == Flag("new-checkout", True, 50.0)
    assert flags["dark-mode"] == Flag("dark-mode", True, 30.0)
    # the kill switch: off for everyone, idempotent
    for _ in range(2):
        set_feature_flag.fn(k8s, NAMESPACE, config_map, "new-checkout", None)
    assert _document(k8s, config_map)["new-checkout"] == Flag("new-checkout", False, 0.0)
    with k8s.get_api_client() as api:
        live = k8s.core_v1(api).read_namespaced_config_map(config_map, NAMESPACE)
    assert live.data["other.txt"] == "kept"


def test_a_conflicting_writer_is_retried_then_reported(k8s, kube_faults, config_map: str) -> None:
    set_feature_flag.fn(k8s, NAMESPACE, config_map, "f", 10)
    path = rf"/namespaces/{NAMESPACE}/configmaps/{config_map}$"
    kube_faults.post(
        "/_sandbox/faults", json={"method": "PUT", "path": path, "status": 409, "times": 2}
    )
    assert set_feature_flag.fn(k8s, NAMESPACE, config_map, "f", 50).rollout_percent == 50
    kube_faults.post(
        "/_sandbox/faults", json={"method": "PUT", "path": path, "status": 409, "times": None}
    )
    with pytest.raises(ConflictError, match="another writer"):
        set_feature_flag.fn(k8s, NAMESPACE, config_map, "f", 100)
    assert _document(k8s, config_map)["f"].rollout_percent == 50  # nothing half-written


def test_an_invalid_flags_document_is_refused_untouched(k8s, config_map: str) -> None:
    with k8s.get_api_client() as api:
        body = {"metadata": {"name": config_map}, "data": {FLAGS_KEY: "{not json"}}
        k8s.core_v1(api).create_namespaced_config_map(NAMESPACE, body)
    with pytest.raises(InvalidRequestError, match="not a valid flags document"):
        set_feature_flag.fn(k8s, NAMESPACE, config_map, "f", 10)
    with k8s.get_api_client() as api:
        live = k8s.core_v1(api).read_namespaced_config_map(config_map, NAMESPACE)
    assert live.data[FLAGS_KEY] == "{not json"


def test_namespace_exists(k8s) -> None:
    assert namespace_exists.fn(k8s, NAMESPACE)
    assert not namespace_exists.fn(k8s, f"missing-{uuid.uuid4().hex[:8]}")


def test_wait_for_no_pods_waits_for_the_pods_themselves(k8s) -> None:
    name = f"gone-{uuid.uuid4().hex[:8]}"
    manifest = deployment_manifest(name, "payments", "demo/shop:v1", 2, {})
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    with k8s.get_api_client() as api:
        k8s.apps_v1(api).create_namespaced_deployment(NAMESPACE, manifest)
    try:
        wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=30)
        with pytest.raises(RolloutTimeoutError, match="still exist"):
            wait_for_no_pods.fn(k8s, NAMESPACE, labels, timeout_seconds=0.2, poll_seconds=0.1)
        scale_deployment.fn(k8s, NAMESPACE, name, 0)
        waited = wait_for_no_pods.fn(k8s, NAMESPACE, labels, timeout_seconds=30)
        assert waited >= 0
        with k8s.get_api_client() as api:
            pods = k8s.core_v1(api).list_namespaced_pod(
                NAMESPACE, label_selector=",".join(f"{k}={v}" for k, v in labels.items())
            )
        assert pods.items == []
    finally:
        with k8s.get_api_client() as api, contextlib.suppress(Exception):
            k8s.apps_v1(api).delete_namespaced_deployment(name, NAMESPACE)
