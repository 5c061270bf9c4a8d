"""The demo shop in a namespace of its own, for tests that must not meet each other's pods."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from blocks import KubernetesTarget
from sandbox.showcase import deploy_shop


@contextlib.contextmanager
def own_shop(
    sandbox: Any, prefix: str, replicas: int = 1
) -> Iterator[tuple[KubernetesTarget, dict[str, Any]]]:
    """The shop (``replicas`` pods per role) in a new namespace ``<prefix>-<random>``; the
    block on that namespace and the shop's Services; the namespace deleted on leaving."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k8s = KubernetesTarget(
        kubeconfig_path=sandbox.endpoints["kubeconfig"], context="sandbox", namespace=namespace
    )
    with k8s.get_api_client() as api:
        k8s.core_v1(api).create_namespace({"metadata": {"name": namespace}})
        shop = deploy_shop(
            k8s.apps_v1(api), k8s.core_v1(api), namespace=namespace, replicas=replicas
        )
    try:
        yield k8s, shop
    finally:
        with k8s.get_api_client() as api:
            k8s.core_v1(api).delete_namespace(namespace)
