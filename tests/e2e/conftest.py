"""Fixtures of the end-to-end tests that roll the demo shop out (see ``bluegreen_shop``)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest
from bluegreen_shop import NAMESPACE, Shop

from blocks import KubernetesTarget
from decisions.bluegreen import FLAGS_KEY, flags_config_map_name
from sandbox.showcase import blue_green_manifests, delete_blue_green

FLAGS_MOUNT = "/etc/shop/flags"


@contextlib.contextmanager
def deployed_shop(sandbox, k8s: KubernetesTarget, *, flags: bool = False) -> Iterator[Shop]:
    """Blue v1 (2 replicas) behind the active Service ``bg-<hex>``; deleted afterwards.

    With ``flags`` the pods mount the ConfigMap ``<service>-flags`` (created empty first) and
    read their feature flags from it (``SHOP_FLAGS_FILE``), as the flag rollout expects.
    """
    service = f"bg-{uuid.uuid4().hex[:8]}"
    manifest, active = blue_green_manifests(service, "demo/shop:v1", 2)
    config_map = flags_config_map_name(service)
    if flags:
        pod = manifest["spec"]["template"]["spec"]
        pod["volumes"] = [{"name": "flags", "configMap": {"name": config_map}}]
        container = pod["containers"][0]
        container["volumeMounts"] = [{"name": "flags", "mountPath": FLAGS_MOUNT}]
        container["env"].append({"name": "SHOP_FLAGS_FILE", "value": f"{FLAGS_MOUNT}/{FLAGS_KEY}"})
    with k8s.get_api_client() as api:
        core = k8s.core_v1(api)
        if flags:
            document = json.dumps({"flags": {}})
            body = {"metadata": {"name": config_map}, "data": {FLAGS_KEY: document}}
            core.create_namespaced_config_map(NAMESPACE, body)
        core.create_namespaced_service(NAMESPACE, active)
        k8s.apps_v1(api).create_namespaced_deployment(NAMESPACE, manifest)
    try:
        url = sandbox.cluster.wait_for_service(NAMESPACE, service, endpoints=2, timeout_seconds=30)
        yield Shop(k8s, service, url)
    finally:
        with k8s.get_api_client() as api:
            core = k8s.core_v1(api)
            delete_blue_green(k8s.apps_v1(api), core, service, namespace=NAMESPACE)
            with contextlib.suppress(Exception):  # only with flags
                core.delete_namespaced_config_map(config_map, NAMESPACE)


@pytest.fixture
def shop(sandbox, prefect_server, k8s: KubernetesTarget) -> Iterator[Shop]:
    """Blue v1 (2 replicas) behind the active Service ``bg-<hex>``; deleted afterwards."""
    with deployed_shop(sandbox, k8s) as deployed:
        yield deployed


@pytest.fixture
def flagged_shop(sandbox, prefect_server, k8s: KubernetesTarget) -> Iterator[Shop]:
    """Like ``shop``, with the pods reading their flags from the ConfigMap ``<service>-flags``."""
    with deployed_shop(sandbox, k8s, flags=True) as deployed:
        yield deployed
