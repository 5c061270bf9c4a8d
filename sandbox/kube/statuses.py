"""Checks of ``.status`` written through a ``/status`` subresource.

Controllers (the sandbox's own, or a test) write status; every reader then decodes it with the
strict client models, where e.g. a Pod's ``containerStatuses[].imageID`` or an HPA's
``status.desiredReplicas`` is required. A status the client could not decode is refused here
with a 422 naming the field, instead of breaking every later read of the object. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.kube.errors import FieldErrors
from sandbox.kube.fields import (
    bool_field,
    int_field,
    items,
    map_field,
    str_field,
    timestamps,
)
from sandbox.kube.resources import ResourceType
from sandbox.kube.validation import METRIC_SOURCES


def conditions(e: FieldErrors, status: Mapping[str, Any], required: bool) -> None:
    for where, condition in items(e, status, "conditions", "status"):
        str_field(e, condition, "type", where, required=required)
        str_field(
            e, condition, "status", where, required=required, choices=["False", "True", "Unknown"]
        )
        str_field(e, condition, "reason", where)
        str_field(e, condition, "message", where)
        int_field(e, condition, "observedGeneration", where, minimum=0)
        timestamps(
            e,
            condition,
            where,
            ("lastTransitionTime", "lastUpdateTime", "lastProbeTime", "lastHeartbeatTime"),
        )


_REPLICA_COUNTS = (
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
    "unavailableReplicas",
    "fullyLabeledReplicas",
    "terminatingReplicas",
    "observedGeneration",
    "collisionCount",
)


def _container_statuses(e: FieldErrors, status: Mapping[str, Any], key: str) -> None:
    for where, item in items(e, status, key, "status"):
        for field in ("name", "image", "imageID"):
            if not isinstance(item.get(field), str):
                e.required(f"{where}.{field}")
        if not isinstance(item.get("ready"), bool):
            e.required(f"{where}.ready")
        int_field(e, item, "restartCount", where, minimum=0, required=True)
        bool_field(e, item, "started", where)
        for state_key in ("state", "lastState"):
            state = map_field(e, item, state_key, where)
            terminated = map_field(e, state, "terminated", f"{where}.{state_key}")
            if terminated:
                int_field(
                    e, terminated, "exitCode", f"{where}.{state_key}.terminated", required=True
                )
            for phase in ("running", "terminated"):
                timestamps(
                    e,
                    map_field(e, state, phase, f"{where}.{state_key}"),
                    f"{where}.{state_key}.{phase}",
                    ("startedAt", "finishedAt"),
                )


def validate_status(resource: ResourceType, obj: dict[str, Any]) -> None:
    """Type checks of ``.status`` as written through ``/status`` (the client decodes it)."""
    e = FieldErrors()
    status = obj.get("status")
    if status is not None and not isinstance(status, dict):
        e.type_invalid("status", status, "must be an object")
    elif status is not None and resource.builtin:
        if resource.key in (("apps", "deployments"), ("apps", "replicasets")):
            for key in _REPLICA_COUNTS:
                int_field(
                    e,
                    status,
                    key,
                    "status",
                    minimum=0,
                    required=key == "replicas" and resource.plural == "replicasets",
                )
            conditions(e, status, required=resource.plural == "replicasets")
        elif resource.key == ("", "pods"):
            str_field(
                e,
                status,
                "phase",
                "status",
                choices=["Failed", "Pending", "Running", "Succeeded", "Unknown"],
            )
            for key in ("podIP", "hostIP", "reason", "message", "qosClass", "nominatedNodeName"):
                str_field(e, status, key, "status")
            timestamps(e, status, "status", ("startTime",))
            for key in ("podIPs", "hostIPs"):
                for where, item in items(e, status, key, "status"):
                    str_field(e, item, "ip", where, required=True)
            conditions(e, status, required=True)
            _container_statuses(e, status, "containerStatuses")
            _container_statuses(e, status, "initContainerStatuses")
        elif resource.key == ("autoscaling", "horizontalpodautoscalers"):
            int_field(e, status, "desiredReplicas", "status", minimum=0, required=True)
            int_field(e, status, "currentReplicas", "status", minimum=0)
            int_field(e, status, "observedGeneration", "status", minimum=0)
            timestamps(e, status, "status", ("lastScaleTime",))
            conditions(e, status, required=True)
            for where, metric in items(e, status, "currentMetrics", "status"):
                str_field(e, metric, "type", where, required=True, choices=list(METRIC_SOURCES))
        elif resource.key == ("", "namespaces"):
            str_field(e, status, "phase", "status", choices=["Active", "Terminating"])
            conditions(e, status, required=True)
        elif resource.key == ("", "services"):
            map_field(e, status, "loadBalancer", "status")
            conditions(e, status, required=True)
    name = (obj.get("metadata") or {}).get("name") or ""
    e.raise_if_any(resource.kind, resource.group, name)
