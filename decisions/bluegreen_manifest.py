"""The idle colour's Deployment manifest, derived from the active colour's live one. Pure.

Blue-green convention (see :mod:`decisions.bluegreen`): the idle colour runs the *same* spec as
the active one (probes, env, resources, ports), so the only differences a rollout introduces are
the ones it means to: the image under test, the colour labels, and the replica count.
"""

from __future__ import annotations

import copy
from typing import Any

from decisions.bluegreen import Colour, deployment_name, pod_labels, preview_service_name

# Server-managed metadata a new object must not carry (the API server sets or refuses them).
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision",)


def idle_manifest(
    active: dict[str, Any], *, service: str, colour: Colour, image: str, replicas: int
) -> dict[str, Any]:
    """A Deployment manifest for ``colour`` built from ``active`` (a live manifest).

    The first container gets ``image`` (the one the plan compares); every ``colour`` label (on
    the Deployment, its selector and its pod template) names ``colour``, and ``app`` is set to
    ``service``. ``ValueError`` when ``active`` has no pod template with a container.
    """
    body = copy.deepcopy(active)
    body.pop("status", None)
    labels = pod_labels(service, colour)
    meta = body.get("metadata") or {}
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _SERVER_ANNOTATIONS
    }
    meta = {
        **meta,
        "name": deployment_name(service, colour),
        "labels": {**(meta.get("labels") or {}), **labels},
        "annotations": annotations,
    }
    body["metadata"] = meta
    body["apiVersion"] = body.get("apiVersion") or "apps/v1"
    body["kind"] = body.get("kind") or "Deployment"
    spec = body.get("spec") or {}
    template = spec.get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    if not containers:
        raise ValueError("the active Deployment has no container in its pod template to copy")
    containers[0]["image"] = image
    template_meta = template.get("metadata") or {}
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
    template["metadata"] = template_meta
    selector = spec.get("selector") or {}
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), **labels}
    spec["selector"] = selector
    spec["template"] = template
    spec["replicas"] = replicas
    body["spec"] = spec
    return body


def preview_manifest(
    *, service: str, colour: Colour, ports: list[dict[str, Any]]
) -> dict[str, Any]:
    """The preview Service selecting ``colour``, with the active Service's ``ports``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": preview_service_name(service),
            "labels": {"app": service, "role": "preview"},
        },
        "spec": {"selector": pod_labels(service, colour), "ports": ports},
    }


def mounted_config_maps(manifest: dict[str, Any]) -> frozenset[str]:
    """Names of the ConfigMaps a Deployment manifest's pods mount as volumes (projected too)."""
    pod = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
    names: set[str] = set()
    for volume in pod.get("volumes") or []:
        if (volume.get("configMap") or {}).get("name"):
            names.add(volume["configMap"]["name"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("configMap") or {}).get("name"):
                names.add(source["configMap"]["name"])
    return frozenset(names)
