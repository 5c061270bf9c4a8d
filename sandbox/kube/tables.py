"""Server-side printing: ``meta.k8s.io/v1`` ``Table`` answers for ``kubectl get``.

kubectl (1.20 and 1.32 alike) asks lists for ``Accept: application/json;as=Table;v=v1;
g=meta.k8s.io, ...`` and prints whatever columns the server returns; without a Table it can only
show NAME and AGE. The columns here are the real server's (``pkg/printers/internalversion``):
``kubectl get deploy`` shows READY / UP-TO-DATE / AVAILABLE, ``get svc`` TYPE / CLUSTER-IP /
PORT(S) with the nodePorts, ``get pods`` READY / STATUS / RESTARTS. Custom resources get NAME,
the CRD's ``additionalPrinterColumns`` (simple ``.a.b`` paths) and AGE.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.kube.resources import ResourceType
from sandbox.kube.selectors import selector_from_object

Obj = dict[str, Any]
Column = tuple[str, str, int]  # name, type, priority (1 = only with -o wide)


def human_age(timestamp: str | None, now: datetime | None = None) -> str:
    """``duration.HumanDuration`` of the time since ``timestamp`` (e.g. 45s, 3m12s, 5h, 2d3h)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d"


def _age(obj: Obj) -> str:
    return human_age((obj.get("metadata") or {}).get("creationTimestamp"))


def _spec(obj: Obj) -> dict[str, Any]:
    return obj.get("spec") or {}


def _status(obj: Obj) -> dict[str, Any]:
    return obj.get("status") or {}


def _containers(obj: Obj) -> list[dict[str, Any]]:
    template = _spec(obj).get("template") or {}
    return (template.get("spec") or {}).get("containers") or []


def _selector_text(obj: Obj) -> str:
    try:
        return str(selector_from_object(_spec(obj).get("selector"))) or "<none>"
    except ValueError:
        return "<invalid>"


def _deployment(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    containers = _containers(obj)
    return [
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _selector_text(obj),
    ]


def _replica_set(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    containers = _containers(obj)
    return [
        spec.get("replicas", 0),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _age(obj),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _selector_text(obj),
    ]


def _pod(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        terminated = (container.get("state") or {}).get("terminated") or {}
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated.get("reason") and not container.get("ready"):
            reason = terminated["reason"]
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return [
        f"{ready}/{len(containers)}",
        reason,
        restarts,
        _age(obj),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _ports(spec: dict[str, Any]) -> str:
    parts = []
    for port in spec.get("ports") or []:
        text = str(port.get("port"))
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        parts.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _service(obj: Obj) -> list[Any]:
    spec = _spec(obj)
    selector = spec.get("selector") or {}
    external = spec.get("externalName") or ",".join(spec.get("externalIPs") or []) or "<none>"
    return [
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        external,
        _ports(spec),
        _age(obj),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


def _hpa(obj: Obj) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    ref = spec.get("scaleTargetRef") or {}
    targets = []
    current = {
        (m.get("resource") or {}).get("name"): (m.get("resource") or {}).get("current") or {}
        for m in status.get("currentMetrics") or []
        if m.get("type") == "Resource"
    }
    for metric in spec.get("metrics") or []:
        if metric.get("type") == "Resource":
            source = metric.get("resource") or {}
            target = source.get("target") or {}
            have = current.get(source.get("name"), {})
            if target.get("type") == "Utilization":
                now = have.get("averageUtilization")
                now_text = f"{now}%" if now is not None else "<unknown>"
                targets.append(
                    f"{source.get('name')}: {now_text}/{target.get('averageUtilization')}%"
                )
            else:
                want = target.get("averageValue") or target.get("value")
                targets.append(f"{source.get('name')}: <unknown>/{want}")
        else:
            targets.append(f"<{metric.get('type', '?').lower()}>")
    return [
        f"{ref.get('kind')}/{ref.get('name')}",
        ", ".join(targets) or "<none>",
        spec.get("minReplicas", 1),
        spec.get("maxReplicas"),
        status.get("currentReplicas", 0),
        _age(obj),
    ]


def _event(obj: Obj) -> list[Any]:
    involved = obj.get("involvedObject") or {}
    last = (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or (obj.get("metadata") or {}).get("creationTimestamp")
    )
    return [
        human_age(last[:19] + "Z" if isinstance(last, str) and len(last) >= 19 else None),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message", ""),
    ]


def _simple(*paths: Callable[[Obj], Any]) -> Callable[[Obj], list[Any]]:
    return lambda obj: [path(obj) for path in paths]


_COLUMNS: dict[tuple[str, str], tuple[list[Column], Callable[[Obj], list[Any]]]] = {
    ("apps", "deployments"): (
        [("Ready", "string", 0), ("Up-to-date", "string", 0), ("Available", "string", 0),
         ("Age", "string", 0), ("Containers", "string", 1), ("Images", "string", 1),
         ("Selector", "string", 1)],
        _deployment,
    ),
    ("apps", "replicasets"): (
        [("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0),
         ("Age", "string", 0), ("Containers", "string", 1), ("Images", "string", 1),
         ("Selector", "string", 1)],
        _replica_set,
    ),
    ("", "pods"): (
        [("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0),
         ("Age", "string", 0), ("IP", "string", 1), ("Node", "string", 1),
         ("Nominated Node", "string", 1), ("Readiness Gates", "string", 1)],
        _pod,
    ),
    ("", "services"): (
        [("Type", "string", 0), ("Cluster-IP", "string", 0), ("External-IP", "string", 0),
         ("Port(s)", "string", 0), ("Age", "string", 0), ("Selector", "string", 1)],
        _service,
    ),
    ("", "namespaces"): (
        [("Status", "string", 0), ("Age", "string", 0)],
        _simple(lambda o: _status(o).get("phase", ""), _age),
    ),
    ("", "configmaps"): (
        [("Data", "integer", 0), ("Age", "string", 0)],
        _simple(lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age),
    ),
    ("", "secrets"): (
        [("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
        _simple(lambda o: o.get("type", ""), lambda o: len(o.get("data") or {}), _age),
    ),
    ("", "events"): (
        [("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
         ("Object", "string", 0), ("Message", "string", 0)],
        _event,
    ),
    ("autoscaling", "horizontalpodautoscalers"): (
        [("Reference", "string", 0), ("Targets", "string", 0), ("MinPods", "string", 0),
         ("MaxPods", "integer", 0), ("Replicas", "integer", 0), ("Age", "string", 0)],
        _hpa,
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [("Created At", "date", 0)],
        _simple(lambda o: (o.get("metadata") or {}).get("creationTimestamp", "")),
    ),
}  # fmt: skip


def _json_path(obj: Obj, path: str) -> Any:
    current: Any = obj
    for part in path.strip().lstrip(".").split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def _custom(resource: ResourceType) -> tuple[list[Column], Callable[[Obj], list[Any]]]:
    columns = [c for c in resource.printer_columns if isinstance(c, dict) and c.get("jsonPath")]
    definitions = [
        (c.get("name", ""), c.get("type", "string"), c.get("priority", 0)) for c in columns
    ]

    def cells(obj: Obj) -> list[Any]:
        values = [_json_path(obj, c["jsonPath"]) for c in columns]
        return [v if v is not None else "" for v in values] + [_age(obj)]

    return [*definitions, ("Age", "date", 0)], cells


def _partial(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def to_table(
    resource: ResourceType,
    items: list[Obj],
    *,
    resource_version: str,
    include_object: str = "Metadata",
    api_version: str = "meta.k8s.io/v1",
    continue_token: str | None = None,
) -> Obj:
    """A ``Table`` of ``items``; rows carry the object, its metadata only, or nothing."""
    columns, cells = _COLUMNS.get(resource.key) or _custom(resource)
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "Name must be unique within a namespace.",
            "priority": 0,
        }
    ] + [
        {"name": name, "type": kind, "format": "", "description": name, "priority": priority}
        for name, kind, priority in columns
    ]
    rows = []
    for item in items:
        row: Obj = {"cells": [(item.get("metadata") or {}).get("name", ""), *cells(item)]}
        if include_object == "Object":
            row["object"] = {"kind": resource.kind, "apiVersion": resource.api_version, **item}
        elif include_object != "None":
            row["object"] = _partial(item)
        rows.append(row)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    }
