"""The Kubernetes tasks against the session sandbox (API emulator + controller + pod runner).

Tasks are called with ``.fn()``: the function itself, no Prefect engine, so no server is
needed and a test measures the task's own timing. ``test_tasks_run_in_a_flow`` runs them as
real Prefect tasks inside a flow against the session's ``prefect_server``, to prove they work
where the runbooks call them (parameters, results, run logger).

Every test uses its own names (a random suffix) in ``default`` and deletes what it created; the
sandbox is shared by the whole session.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from blocks import KubernetesTarget
from runbooks.errors import ConflictError, UnavailableError
from sandbox.showcase import deployment_manifest, service_manifest
from tasks.kubernetes import (
    RolloutFailedError,
    RolloutTimeoutError,
    apply_deployment,
    ensure_service,
    patch_service_selector,
    read_deployment,
    read_service_selector,
    scale_deployment,
    wait_for_rollout,
)

NAMESPACE = "default"


class Cleanup:
    def __init__(self, k8s: KubernetesTarget):
        self.k8s = k8s
        self.deployments: list[str] = []
        self.services: list[str] = []

    def run(self) -> None:
        with self.k8s.get_api_client() as api:
            apps, core = self.k8s.apps_v1(api), self.k8s.core_v1(api)
            for name in self.deployments:
                with contextlib.suppress(Exception):  # already gone or never created
                    apps.delete_namespaced_deployment(name, NAMESPACE)
            for name in self.services:
                with contextlib.suppress(Exception):  # already gone or never created
                    core.delete_namespaced_service(name, NAMESPACE)


@pytest.fixture
def cleanup(k8s: KubernetesTarget) -> Iterator[Cleanup]:
    done = Cleanup(k8s)
    yield done
    done.run()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _deployment(name: str, image: str, replicas: int, **spec: Any) -> dict[str, Any]:
    manifest = deployment_manifest(name, "payments", image, replicas, {})
    manifest["spec"] |= spec
    return manifest


def _deploy(k8s, cleanup, name: str, image: str = "demo/shop:v1", replicas: int = 1, **spec):
    cleanup.deployments.append(name)
    return apply_deployment.fn(k8s, _deployment(name, image, replicas, **spec))


def test_deploy_reapply_and_roll_to_v2(k8s, cleanup) -> None:
    name = _name("bg")
    assert read_deployment.fn(k8s, NAMESPACE, name) is None

    applied = _deploy(k8s, cleanup, name, replicas=2)
    assert applied.image == "demo/shop:v1"
    ready = wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20)
    assert ready.rolled_out
    assert (ready.replicas, ready.updated_replicas, ready.available_replicas) == (2, 2, 2)
    assert ready.ready_replicas == 2
    assert ready.observed_generation >= ready.generation == 1
    assert ready.labels["app"] == name
    assert ready.condition("Available").status == "True"

    again = _deploy(k8s, cleanup, name, replicas=2)
    assert again.generation == ready.generation  # converged: no new rollout
    assert read_deployment.fn(k8s, NAMESPACE, name).rolled_out

    v2 = _deploy(k8s, cleanup, name, image="demo/shop:v2", replicas=2)
    assert v2.generation == ready.generation + 1
    done = wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20)
    assert done.image == "demo/shop:v2"
    assert done.rolled_out


def test_scale_through_the_scale_subresource(k8s, cleanup) -> None:
    name = _name("scale")
    _deploy(k8s, cleanup, name, replicas=1)
    wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20)
    assert scale_deployment.fn(k8s, NAMESPACE, name, 2) == 2
    state = wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20)
    assert state.available_replicas == 2
    assert scale_deployment.fn(k8s, NAMESPACE, name, 0) == 0
    assert scale_deployment.fn(k8s, NAMESPACE, name, 0) == 0  # idempotent
    assert wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20).replicas == 0


def test_a_crash_looping_version_fails_fast_naming_the_pod(k8s, cleanup) -> None:
    name = _name("crash")
    _deploy(k8s, cleanup, name, replicas=1)
    wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20)
    _deploy(k8s, cleanup, name, image="demo/shop:v5-crashloop", replicas=1)

    started = time.monotonic()
    with pytest.raises(RolloutFailedError, match="CrashLoopBackOff") as caught:
        wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=60)
    assert time.monotonic() - started < 5
    assert caught.value.pod is not None
    assert caught.value.pod.startswith(name)
    assert caught.value.pod in str(caught.value)
    assert caught.value.reason == "CrashLoopBackOff"
    # the old version's pod still serves: only the new template was judged
    assert read_deployment.fn(k8s, NAMESPACE, name).available_replicas == 1


def test_an_unknown_image_fails_fast_with_the_pull_error(k8s, cleanup) -> None:
    name = _name("pull")
    _deploy(k8s, cleanup, name, image="registry.example/nope:v1", replicas=1)
    started = time.monotonic()
    with pytest.raises(RolloutFailedError, match=r"ErrImagePull|ImagePullBackOff") as caught:
        wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=60)
    assert time.monotonic() - started < 5
    assert caught.value.reason in ("ErrImagePull", "ImagePullBackOff")


def _never_ready(name: str, **spec: Any) -> dict[str, Any]:
    manifest = _deployment(name, "demo/shop:v1", 1, **spec)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["path"] = "/no-such-path"  # runs, never ready
    return manifest


def test_the_progress_deadline_is_honoured(k8s, cleanup) -> None:
    name = _name("deadline")
    cleanup.deployments.append(name)
    apply_deployment.fn(k8s, _never_ready(name, progressDeadlineSeconds=2))
    started = time.monotonic()
    with pytest.raises(RolloutFailedError, match="progress deadline") as caught:
        wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20)
    assert caught.value.reason == "ProgressDeadlineExceeded"
    # conditions carry whole-second timestamps (as upstream), so the deadline may come early
    assert 0.9 < time.monotonic() - started < 8


def test_the_wait_is_bounded_by_its_timeout(k8s, cleanup) -> None:
    name = _name("slow")
    cleanup.deployments.append(name)
    apply_deployment.fn(k8s, _never_ready(name))
    started = time.monotonic()
    with pytest.raises(RolloutTimeoutError, match=r"not rolled out within 1\.5s"):
        wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=1.5, poll_seconds=0.2)
    assert 1.4 < time.monotonic() - started < 3


@pytest.fixture
def switch(k8s, cleanup) -> str:
    """A Service selecting colour blue, for the selector tests."""
    name = _name("svc")
    cleanup.services.append(name)
    state = ensure_service.fn(k8s, service_manifest(name, {"app": name, "colour": "blue"}))
    assert state.created
    assert state.ports[0].node_port
    return name


BLUE = "blue"
GREEN = "green"


def _colour(name: str, colour: str) -> dict[str, str]:
    return {"app": name, "colour": colour}


def test_ensure_service_leaves_an_existing_one_untouched(k8s, switch) -> None:
    again = ensure_service.fn(k8s, service_manifest(switch, _colour(switch, GREEN)))
    assert not again.created
    assert again.selector == _colour(switch, BLUE)
    assert read_service_selector.fn(k8s, NAMESPACE, _name("missing")) is None


def test_selector_patch_with_expected_switches_and_is_idempotent(k8s, switch) -> None:
    blue, green = _colour(switch, BLUE), _colour(switch, GREEN)
    assert patch_service_selector.fn(k8s, NAMESPACE, switch, green, expected=blue) == green
    # a re-run after the change (e.g. a crash before the result was recorded) converges
    assert patch_service_selector.fn(k8s, NAMESPACE, switch, green, expected=blue) == green
    assert read_service_selector.fn(k8s, NAMESPACE, switch) == green


def test_selector_patch_with_a_stale_expected_is_a_conflict(k8s, switch) -> None:
    stale = _colour(switch, "purple")
    with pytest.raises(ConflictError, match="someone else changed it"):
        patch_service_selector.fn(k8s, NAMESPACE, switch, _colour(switch, GREEN), expected=stale)
    assert read_service_selector.fn(k8s, NAMESPACE, switch) == _colour(switch, BLUE)


def _inject(kube_faults: httpx.Client, service: str, **fault: Any) -> int:
    path = rf"/namespaces/{NAMESPACE}/services/{service}$"
    created = kube_faults.post("/_sandbox/faults", json={"method": "PATCH", "path": path} | fault)
    created.raise_for_status()
    return created.json()["id"]


def _hits(kube_faults: httpx.Client, fault_id: int) -> int:
    listed = kube_faults.get("/_sandbox/faults").json()["faults"]
    return next(f["hits"] for f in listed if f["id"] == fault_id)


def test_selector_patch_gives_up_after_the_attempts_and_changes_nothing(
    k8s, switch, kube_faults
) -> None:
    fault = _inject(kube_faults, switch, status=503, times=10)
    with pytest.raises(UnavailableError, match="HTTP 503"):
        patch_service_selector.fn(
            k8s, NAMESPACE, switch, _colour(switch, GREEN), expected=_colour(switch, BLUE)
        )
    assert _hits(kube_faults, fault) == 3  # the layer's attempts, no more
    assert read_service_selector.fn(k8s, NAMESPACE, switch) == _colour(switch, BLUE)


@pytest.mark.parametrize("status", [500, 503])
def test_selector_patch_is_retried_through_5xx(k8s, switch, kube_faults, status: int) -> None:
    """A 500 too: the ``test`` op makes a retry of a stored attempt fail, not apply twice."""
    fault = _inject(kube_faults, switch, status=status, times=2)  # fewer than the 3 attempts
    green = _colour(switch, GREEN)
    assert (
        patch_service_selector.fn(k8s, NAMESPACE, switch, green, expected=_colour(switch, BLUE))
        == green
    )
    assert _hits(kube_faults, fault) == 2
    assert read_service_selector.fn(k8s, NAMESPACE, switch) == green


def test_an_unconditional_selector_patch_is_not_retried_on_500(k8s, switch, kube_faults) -> None:
    """Without a ``test`` op a retry after a 500 could overwrite a concurrent change."""
    fault = _inject(kube_faults, switch, status=500, times=2)
    with pytest.raises(UnavailableError, match="HTTP 500"):
        patch_service_selector.fn(k8s, NAMESPACE, switch, _colour(switch, GREEN))
    assert _hits(kube_faults, fault) == 1
    assert read_service_selector.fn(k8s, NAMESPACE, switch) == _colour(switch, BLUE)


def test_a_failed_selector_patch_is_settled_by_reading_the_selector_back(
    k8s, switch, kube_faults
) -> None:
    """Every attempt of a switch back fails, but the selector already is what it asks for
    (the forward switch never happened): success, not an error that would stop a rollback."""
    fault = _inject(kube_faults, switch, status=503, times=None)
    blue = _colour(switch, BLUE)
    assert (
        patch_service_selector.fn(k8s, NAMESPACE, switch, blue, expected=_colour(switch, GREEN))
        == blue
    )
    assert _hits(kube_faults, fault) == 3
    with pytest.raises(ConflictError, match="someone else changed it"):
        patch_service_selector.fn(
            k8s, NAMESPACE, switch, _colour(switch, GREEN), expected=_colour(switch, "purple")
        )


def test_selector_patch_is_retried_after_a_timeout(sandbox, switch, kube_faults) -> None:
    impatient = KubernetesTarget(
        kubeconfig_path=sandbox.endpoints["kubeconfig"],
        context="sandbox",
        namespace=NAMESPACE,
        request_timeout_seconds=0.5,
    )
    fault = _inject(kube_faults, switch, action="hang", seconds=5, times=1)
    green = _colour(switch, GREEN)
    assert (
        patch_service_selector.fn(
            impatient, NAMESPACE, switch, green, expected=_colour(switch, BLUE)
        )
        == green
    )
    assert _hits(kube_faults, fault) == 1


def test_tasks_run_in_a_flow(prefect_server, k8s, cleanup) -> None:
    from prefect import flow

    name = _name("flow")
    cleanup.deployments.append(name)
    cleanup.services.append(name)

    @flow(name="tasks-kubernetes-smoke")
    def deploy_and_switch() -> tuple[int, dict[str, str] | None]:
        ensure_service(k8s, service_manifest(name, {"app": name, "colour": BLUE}))
        apply_deployment(k8s, _deployment(name, "demo/shop:v1", 1))
        state = wait_for_rollout(k8s, NAMESPACE, name, timeout_seconds=20)
        patch_service_selector(
            k8s, NAMESPACE, name, {"app": name}, expected={"app": name, "colour": BLUE}
        )
        return state.available_replicas, read_service_selector(k8s, NAMESPACE, name)

    assert deploy_and_switch() == (1, {"app": name})
