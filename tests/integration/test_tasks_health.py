"""``check_health`` against real shop pods of the session sandbox, reached through their Service.

Called with ``.fn()`` (no Prefect engine or server needed: the function itself runs); the
Kubernetes tasks deploy the pods, so this file also exercises them as a runbook would.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator

import pytest

from blocks import HttpService, KubernetesTarget
from sandbox.showcase import deployment_manifest, service_manifest
from tasks.health import check_health
from tasks.kubernetes import apply_deployment, ensure_service, wait_for_rollout

NAMESPACE = "default"


@pytest.fixture(scope="module")
def shop(sandbox) -> Iterator[dict[str, str]]:
    """``{"v1": url, "v3-broken": url}``: one pod of each behind its own Service."""
    k8s = KubernetesTarget(
        kubeconfig_path=sandbox.endpoints["kubeconfig"], context="sandbox", namespace=NAMESPACE
    )
    suffix = uuid.uuid4().hex[:6]
    names = {tag: f"health-{tag}-{suffix}" for tag in ("v1", "v3-broken")}
    try:
        for tag, name in names.items():
            labels = {"app": name, "role": "payments"}
            ensure_service.fn(k8s, service_manifest(name, labels))
            apply_deployment.fn(
                k8s, deployment_manifest(name, "payments", f"demo/shop:{tag}", 1, {})
            )
        urls = {}
        for tag, name in names.items():
            wait_for_rollout.fn(k8s, NAMESPACE, name, timeout_seconds=20)
            urls[tag] = sandbox.cluster.wait_for_service(NAMESPACE, name, timeout_seconds=10)
        yield urls
    finally:
        with k8s.get_api_client() as api:
            for name in names.values():
                for delete in (
                    k8s.apps_v1(api).delete_namespaced_deployment,
                    k8s.core_v1(api).delete_namespaced_service,
                ):
                    with contextlib.suppress(Exception):  # already gone or never created
                        delete(name, NAMESPACE)


def test_a_healthy_version_is_ok(shop) -> None:
    result = check_health.fn(HttpService(base_url=shop["v1"]))
    assert result.ok, result.error
    assert result.status_code == 200
    assert result.status == "ok"
    assert result.version == "v1"
    assert result.checks["database"] == "ok"
    assert result.error is None
    assert 0 < result.latency_ms < 2000
    assert result.url == shop["v1"] + "/health"


def test_a_broken_version_is_a_failed_result_not_an_exception(shop) -> None:
    result = check_health.fn(HttpService(base_url=shop["v3-broken"]))
    assert not result.ok
    assert result.status_code == 503
    assert result.status == "degraded"
    assert result.checks["database"] == "failing"
    assert result.failing_checks == ["database"]
    assert "HTTP 503" in result.error
    assert "database" in result.error


def test_url_override_checks_another_url_with_the_same_block(shop) -> None:
    block = HttpService(base_url=shop["v1"])
    result = check_health.fn(block, url_override=shop["v3-broken"] + "/health")
    assert not result.ok
    assert result.version == "v3-broken"
    assert check_health.fn(block, url_override="/ready").ok  # relative: joined to base_url


def test_connection_refused_is_a_failed_result() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = check_health.fn(HttpService(base_url=f"http://127.0.0.1:{port}"))
    assert not result.ok
    assert result.status_code is None
    assert "ConnectError" in result.error
    assert f"127.0.0.1:{port}/health" in result.error
