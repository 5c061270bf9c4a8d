"""Fixtures of the end-to-end tests that roll the demo shop out (see ``bluegreen_shop``)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from bluegreen_shop import NAMESPACE, Shop

from blocks import KubernetesTarget
from sandbox.showcase import deployment_manifest, service_manifest


@pytest.fixture
def k8s(sandbox) -> KubernetesTarget:
    return KubernetesTarget(
        kubeconfig_path=sandbox.endpoints["kubeconfig"], context="sandbox", namespace=NAMESPACE
    )


@pytest.fixture
def shop(sandbox, prefect_server, k8s: KubernetesTarget) -> Iterator[Shop]:
    """Blue v1 (2 replicas) behind the active Service ``bg-<hex>``; deleted afterwards."""
    service = f"bg-{uuid.uuid4().hex[:8]}"
    labels = {"app": service, "colour": "blue"}
    manifest = deployment_manifest(f"{service}-blue", "payments", "demo/shop:v1", 2, {})
    manifest["metadata"]["labels"] = labels | {"role": "payments"}
    manifest["spec"]["selector"]["matchLabels"] = labels
    manifest["spec"]["template"]["metadata"]["labels"] = labels | {"role": "payments"}
    with k8s.get_api_client() as api:
        k8s.core_v1(api).create_namespaced_service(NAMESPACE, service_manifest(service, labels))
        k8s.apps_v1(api).create_namespaced_deployment(NAMESPACE, manifest)
    try:
        url = sandbox.cluster.wait_for_service(NAMESPACE, service, endpoints=2, timeout_seconds=30)
        yield Shop(k8s, service, url)
    finally:
        with k8s.get_api_client() as api:
            apps, core = k8s.apps_v1(api), k8s.core_v1(api)
            for colour in ("blue", "green"):
                with contextlib.suppress(Exception):  # never created, or already gone
                    apps.delete_namespaced_deployment(f"{service}-{colour}", NAMESPACE)
            for name in (service, f"{service}-preview"):
                with contextlib.suppress(Exception):  # never created, or already gone
                    core.delete_namespaced_service(name, NAMESPACE)
