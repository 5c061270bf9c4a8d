"""Server-side defaulting, so objects read back look like the real server's (and decode).

The real API server fills in defaults on every write (``pkg/apis/*/v1/defaults.go``) and resets
``.status`` on create (each registry's ``PrepareForCreate``). Clients and runbooks rely on both:
a Deployment read back has ``spec.strategy`` = RollingUpdate 25%/25%, ``revisionHistoryLimit``
10, ``progressDeadlineSeconds`` 600; its containers have ``imagePullPolicy`` and
``terminationMessagePath``; a new HPA has ``status.desiredReplicas`` (required by the strict
client model); a new Pod is ``Pending``. Quantities (``cpu: 0.5``) are normalised to the
canonical strings the client's models require (``"500m"``).

Defaulting never fails: it only touches fields whose container has the right shape and leaves
type errors for :mod:`sandbox.kube.validation` to report.

Pure; the allocations that need state (Service ``clusterIP`` and ``nodePort``) live in the store.
"""

from __future__ import annotations

import base64
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.kube.resources import ResourceType
from sandbox.kube.schema import prune_and_default


def _dict(parent: Any, key: str) -> dict[str, Any] | None:
    """``parent[key]`` when it is a dict (created empty when absent), else None."""
    if not isinstance(parent, dict):
        return None
    value = parent.setdefault(key, {})
    return value if isinstance(value, dict) else None


def _dicts(parent: Any, key: str) -> list[dict[str, Any]]:
    value = parent.get(key) if isinstance(parent, dict) else None
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def canonical_quantity(value: Any) -> Any:
    """``1`` -> ``"1"``, ``0.5`` / ``"0.5"`` -> ``"500m"``; other strings unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        return value
    try:
        number = Decimal(text)
    except InvalidOperation:
        return value
    if number == number.to_integral_value():
        return str(int(number))
    milli = number * 1000
    if milli == milli.to_integral_value():
        return f"{int(milli)}m"
    return text


def pull_policy(image: Any) -> str:
    if not isinstance(image, str):
        return "IfNotPresent"
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        probe.setdefault(key, value)
    http = probe.get("httpGet")
    if isinstance(http, dict):
        http.setdefault("scheme", "HTTP")
        http.setdefault("path", "/")


def _container(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", pull_policy(container.get("image")))
    resources = _dict(container, "resources")
    if resources is not None:
        for kind in ("limits", "requests"):
            amounts = resources.get(kind)
            if isinstance(amounts, dict):
                for name, value in amounts.items():
                    amounts[name] = canonical_quantity(value)
        limits, requests = resources.get("limits"), resources.get("requests")
        if isinstance(limits, dict) and limits and requests is None:
            resources["requests"] = dict(limits)  # requests default to limits
    for port in _dicts(container, "ports"):
        port.setdefault("protocol", "TCP")
    for env in _dicts(container, "env"):
        source = env.get("valueFrom")
        if isinstance(source, dict) and isinstance(source.get("fieldRef"), dict):
            source["fieldRef"].setdefault("apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(container.get(probe))


def pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("initContainers", "containers"):
        for container in _dicts(spec, key):
            _container(container)
    for volume in _dicts(spec, "volumes"):
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)


def _template(spec: dict[str, Any]) -> None:
    template = _dict(spec, "template")
    if template is None:
        return
    meta = _dict(template, "metadata")
    if meta is not None:
        meta.setdefault("creationTimestamp", None)
    pod_spec(template.get("spec"))


def _deployment(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = _dict(spec, "strategy")
    if strategy is not None:
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = _dict(strategy, "rollingUpdate")
            if rolling is not None:
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    _template(spec)


def _replica_set(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _template(spec)


def _pod(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    pod_spec(spec)
    if isinstance(spec, dict):
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")


def _service(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if kind != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if kind in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for port in _dicts(spec, "ports"):
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])


def _secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        if isinstance(data, dict):
            for key, value in string_data.items():
                if isinstance(value, str):
                    data[key] = base64.b64encode(value.encode()).decode()


def _namespace(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec is not None:
        spec.setdefault("finalizers", ["kubernetes"])
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        labels = _dict(meta, "labels")
        if labels is not None:
            labels["kubernetes.io/metadata.name"] = meta["name"]


def _scaling_rules(rules: dict[str, Any], up: bool) -> None:
    rules.setdefault("stabilizationWindowSeconds", 0 if up else 300)
    rules.setdefault("selectPolicy", "Max")
    if up:
        rules.setdefault(
            "policies",
            [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ],
        )
    else:
        rules.setdefault("policies", [{"type": "Percent", "value": 100, "periodSeconds": 15}])


def _hpa(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ]
    for metric in _dicts(spec, "metrics"):
        for source in metric.values():
            target = source.get("target") if isinstance(source, dict) else None
            if isinstance(target, dict):
                for key in ("value", "averageValue"):
                    if key in target:
                        target[key] = canonical_quantity(target[key])
    behavior = _dict(spec, "behavior")
    if behavior is not None:
        for direction, up in (("scaleUp", True), ("scaleDown", False)):
            rules = _dict(behavior, direction)
            if rules is not None:
                _scaling_rules(rules, up)


def _event(obj: dict[str, Any]) -> None:
    obj.setdefault("reportingComponent", "")
    obj.setdefault("reportingInstance", "")
    obj.setdefault("eventTime", None)


def _crd(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    conversion = _dict(spec, "conversion")
    if conversion is not None:
        conversion.setdefault("strategy", "None")


_DEFAULTERS = {
    ("", "namespaces"): _namespace,
    ("", "pods"): _pod,
    ("", "services"): _service,
    ("", "secrets"): _secret,
    ("", "events"): _event,
    ("apps", "deployments"): _deployment,
    ("apps", "replicasets"): _replica_set,
    ("autoscaling", "horizontalpodautoscalers"): _hpa,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd,
}


def apply_defaults(resource: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with defaults filled in (custom resources: pruned and defaulted by schema)."""
    if not resource.builtin:
        return prune_and_default(obj, resource.schema)
    defaulter = _DEFAULTERS.get(resource.key)
    if defaulter is not None:
        defaulter(obj)
    return obj


def _qos(spec: Any) -> str:
    containers = _dicts(spec, "containers")
    requests_any = limits_all = False
    guaranteed = bool(containers)
    for container in containers:
        resources = (
            container.get("resources") if isinstance(container.get("resources"), dict) else {}
        )
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        requests_any = requests_any or bool(limits) or bool(requests)
        limits_all = all(k in limits for k in ("cpu", "memory"))
        if not limits_all or any(requests.get(k, limits.get(k)) != limits.get(k) for k in limits):
            guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"


def initial_status(resource: ResourceType, obj: dict[str, Any]) -> Any:
    """The ``.status`` a new object starts with (what ``PrepareForCreate`` leaves)."""
    key = resource.key
    if key == ("apps", "deployments"):
        return {}
    if key == ("apps", "replicasets"):
        return {"replicas": 0}
    if key == ("", "pods"):
        return {"phase": "Pending", "qosClass": _qos(obj.get("spec"))}
    if key == ("", "services"):
        return {"loadBalancer": {}}
    if key == ("autoscaling", "horizontalpodautoscalers"):
        return {"currentReplicas": 0, "desiredReplicas": 0}
    if key == ("", "namespaces"):
        return {"phase": "Active"}
    if key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        return crd_status(obj)
    if not resource.builtin and resource.has_status():
        return None
    return obj.get("status")


def crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    storage = [v.get("name") for v in spec.get("versions") or () if v.get("storage")]
    conditions = [
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ]
    return {
        "conditions": [
            {"type": kind, "status": "True", "reason": reason, "message": message}
            for kind, reason, message in conditions
        ],
        "acceptedNames": names,
        "storedVersions": storage,
    }
