"""Write validation for the served kinds: a rejected write is a 422 naming every bad field.

Two jobs, one pass. First the checks the real API server makes (``k8s.io/kubernetes/pkg/apis/
*/validation``) that runbooks and newcomers actually hit: names are DNS-1123, Deployment
``replicas`` is a non-negative integer, ``spec.selector`` is required and must match the
template labels, containers need a name and an image, Service ports are in range and named
when there are several, HPA bounds are ordered, and so on. Second, the *type* of every field
the official Python client decodes strictly (``StrictInt``, ``StrictStr``, required fields of
nested models): the server stores what it accepts and serves it back, so anything the client
could not decode must be refused here, at write time, naming the field.

Values the real server would reject while decoding JSON (``"replicas": "three"``, a 400 there)
are reported as 422 field errors here, which is what a caller wants to read. Field paths use
the real server's notation: ``spec.template.spec.containers[0].image``.

Layout: typed field helpers in :mod:`sandbox.kube.fields`, pod templates and selectors in
:mod:`sandbox.kube.podspec`, ``/status`` writes in :mod:`sandbox.kube.statuses`, custom
resources against their schema in :mod:`sandbox.kube.schema`; the kinds and the dispatch here.
Pure: works on plain dicts, raises :class:`~sandbox.kube.errors.ApiError` via
:class:`~sandbox.kube.errors.FieldErrors`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from sandbox.kube.errors import FieldErrors
from sandbox.kube.fields import (
    RFC3339,
    bool_field,
    dns1035_error,
    dns_name,
    int_field,
    is_int,
    items,
    label_error,
    map_field,
    quantity,
    str_field,
    string_list,
    string_map,
    subdomain_error,
    validate_labels,
    validate_metadata,
)
from sandbox.kube.podspec import (
    PROTOCOLS,
    port_ref,
    validate_pod_spec,
    validate_template,
    workload_selector,
)
from sandbox.kube.resources import ResourceType

SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
NODE_PORT_RANGE = (30000, 32767)
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_PERCENT = re.compile(r"^\d+%$")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$")
METRIC_SOURCES = {
    "Resource": "resource",
    "Pods": "pods",
    "Object": "object",
    "External": "external",
    "ContainerResource": "containerResource",
}


# -- kinds -------------------------------------------------------------------------------------


def _deployment(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        e.required("spec")
        return
    int_field(e, spec, "replicas", "spec", minimum=0)
    int_field(e, spec, "minReadySeconds", "spec", minimum=0)
    int_field(e, spec, "revisionHistoryLimit", "spec", minimum=0)
    int_field(e, spec, "progressDeadlineSeconds", "spec", minimum=0)
    bool_field(e, spec, "paused", "spec")
    deadline, ready = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds", 0)
    if is_int(deadline) and is_int(ready) and deadline <= ready:
        e.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
    workload_selector(e, spec, obj.get("kind", "Deployment").lower())
    validate_template(e, spec.get("template"), "spec.template", ["Always"])
    strategy = map_field(e, spec, "strategy", "spec")
    kind = str_field(e, strategy, "type", "spec.strategy", choices=["Recreate", "RollingUpdate"])
    rolling = map_field(e, strategy, "rollingUpdate", "spec.strategy")
    if kind == "Recreate" and rolling:
        e.forbidden(
            "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
        )
    values = {}
    for key in ("maxSurge", "maxUnavailable"):
        value = rolling.get(key)
        where = f"spec.strategy.rollingUpdate.{key}"
        if value is None:
            continue
        if is_int(value):
            if value < 0:
                e.invalid(where, value, "must be greater than or equal to 0")
        elif isinstance(value, str) and _PERCENT.match(value):
            if key == "maxUnavailable" and int(value[:-1]) > 100:
                e.invalid(where, value, "must not be greater than 100%")
        else:
            e.invalid(
                where,
                value,
                "a valid percent string must be a numeric string followed "
                "by an ending '%' (e.g. '1%',  or '93%')",
            )
        values[key] = value
    if values and all(
        str(values.get(k, "")) in ("0", "0%") for k in ("maxSurge", "maxUnavailable")
    ):
        e.invalid(
            "spec.strategy.rollingUpdate.maxUnavailable",
            values.get("maxUnavailable"),
            "may not be 0 when `maxSurge` is 0",
        )
    _immutable_selector(e, obj, old)


def _replica_set(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        e.required("spec")
        return
    int_field(e, spec, "replicas", "spec", minimum=0)
    int_field(e, spec, "minReadySeconds", "spec", minimum=0)
    workload_selector(e, spec, "replicaset")
    validate_template(e, spec.get("template"), "spec.template", ["Always"])
    _immutable_selector(e, obj, old)


def _immutable_selector(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    if old is not None and (old.get("spec") or {}).get("selector") != obj["spec"].get("selector"):
        e.invalid("spec.selector", obj["spec"].get("selector"), "field is immutable")


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _pod(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    validate_pod_spec(e, obj.get("spec"), "spec")
    if old is None or e:
        return

    def frozen(spec: dict[str, Any]) -> dict[str, Any]:
        spec = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
        for key in ("containers", "initContainers"):
            if isinstance(spec.get(key), list):
                spec[key] = [
                    {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                    for c in spec[key]
                ]
        return spec

    if frozen(obj.get("spec") or {}) != frozen(old.get("spec") or {}):
        e.forbidden(
            "spec",
            "pod updates may not change fields other than "
            "`spec.containers[*].image`, `spec.initContainers[*].image`, "
            "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to "
            "existing tolerations), `spec.terminationGracePeriodSeconds`",
        )


def _service(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        e.required("spec")
        return
    kind = str_field(e, spec, "type", "spec", choices=SERVICE_TYPES) or "ClusterIP"
    cluster_ip = str_field(e, spec, "clusterIP", "spec")
    if cluster_ip and cluster_ip != "None" and not _IPV4.match(cluster_ip):
        e.invalid("spec.clusterIP", cluster_ip, "must be a valid IP address, (e.g. 10.9.8.7)")
    if old is not None:
        before = (old.get("spec") or {}).get("clusterIP")
        if cluster_ip and before and cluster_ip != before and kind != "ExternalName":
            e.invalid("spec.clusterIP", cluster_ip, "field is immutable")
    str_field(e, spec, "sessionAffinity", "spec", choices=["ClientIP", "None"])
    str_field(e, spec, "externalTrafficPolicy", "spec", choices=["Cluster", "Local"])
    str_field(e, spec, "internalTrafficPolicy", "spec", choices=["Cluster", "Local"])
    selector = spec.get("selector")
    validate_labels(e, selector, "spec.selector")
    if kind == "ExternalName":
        str_field(e, spec, "externalName", "spec", required=True)
    ports = items(e, spec, "ports", "spec")
    if not ports and kind != "ExternalName" and cluster_ip != "None":
        e.required("spec.ports")
    names: set[str] = set()
    identities: set[tuple[Any, str]] = set()
    for where, port in ports:
        int_field(e, port, "port", where, 1, 65535, required=True)
        protocol = str_field(e, port, "protocol", where, choices=PROTOCOLS) or "TCP"
        port_ref(e, port, "targetPort", where, required=False)
        str_field(e, port, "appProtocol", where)
        node_port = port.get("nodePort")
        if node_port is not None:
            low, high = NODE_PORT_RANGE
            if not is_int(node_port):
                e.type_invalid(f"{where}.nodePort", node_port, "must be an integer")
            elif not low <= node_port <= high and node_port != 0:
                e.invalid(
                    f"{where}.nodePort",
                    node_port,
                    f"provided port is not in the valid range. The range of valid ports "
                    f"is {low}-{high}",
                )
        name = str_field(e, port, "name", where, required=len(ports) > 1)
        if name is not None:
            problem = label_error(name)
            if problem:
                e.invalid(f"{where}.name", name, problem)
            if name in names:
                e.duplicate(f"{where}.name", name)
            names.add(name)
        identity = (port.get("port"), protocol)
        if identity in identities:
            e.duplicate(where, {"port": identity[0], "protocol": protocol})
        identities.add(identity)


def _config_map(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    data = string_map(e, obj, "data", "")
    binary = map_field(e, obj, "binaryData", "")
    bool_field(e, obj, "immutable", "")
    size = 0
    for key, value in data.items():
        _config_key(e, key, "data")
        size += len(key) + len(str(value))
    for key, value in binary.items():
        _config_key(e, key, "binaryData")
        _base64(e, value, f"binaryData[{key}]")
        if key in data:
            e.invalid(f"binaryData[{key}]", key, "duplicate of key present in data")
        size += len(key) + len(str(value))
    if size > 1024 * 1024:
        e.too_long("", 1024 * 1024)
    _immutable_data(e, obj, old)


def _secret(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    data = string_map(e, obj, "data", "")
    str_field(e, obj, "type", "")
    bool_field(e, obj, "immutable", "")
    for key, value in data.items():
        _config_key(e, key, "data")
        _base64(e, value, f"data[{key}]")
    for key in string_map(e, obj, "stringData", ""):
        _config_key(e, key, "stringData")
    if old is not None and old.get("type") and obj.get("type") != old.get("type"):
        e.invalid("type", obj.get("type"), "field is immutable")
    _immutable_data(e, obj, old)


def _immutable_data(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    if old is None or not old.get("immutable"):
        return
    for key in ("data", "binaryData"):
        if obj.get(key) != old.get(key):
            e.forbidden(key, "field is immutable when `immutable` is set")
    if not obj.get("immutable"):
        e.forbidden("immutable", "field is immutable when `immutable` is set")


def _config_key(e: FieldErrors, key: str, path: str) -> None:
    if len(key) > 253 or not _CONFIG_KEY.match(key):
        e.invalid(
            f"{path}[{key}]",
            key,
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
        )


def _base64(e: FieldErrors, value: Any, path: str) -> None:
    if not isinstance(value, str):
        e.type_invalid(path, value, "must be a base64-encoded string")
        return
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        e.invalid(path, "<value omitted>", "illegal base64 data")


def _namespace(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = map_field(e, obj, "spec", "")
    string_list(e, spec, "finalizers", "spec")


def _metric_target(e: FieldErrors, target: Any, path: str) -> None:
    if not isinstance(target, dict):
        e.required(path)
        return
    kind = str_field(
        e, target, "type", path, required=True, choices=["AverageValue", "Utilization", "Value"]
    )
    int_field(e, target, "averageUtilization", path, minimum=1)
    for key in ("value", "averageValue"):
        if target.get(key) is not None:
            quantity(e, target[key], f"{path}.{key}")
    wanted = {"Utilization": "averageUtilization", "Value": "value", "AverageValue": "averageValue"}
    if kind in wanted and target.get(wanted[kind]) is None:
        e.required(f"{path}.{wanted[kind]}", f"must be set when the type is {kind}")


def _hpa(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        e.required("spec")
        return
    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, dict):
        e.required("spec.scaleTargetRef")
    else:
        str_field(e, ref, "kind", "spec.scaleTargetRef", required=True)
        dns_name(e, ref, "name", "spec.scaleTargetRef", subdomain_error)
        str_field(e, ref, "apiVersion", "spec.scaleTargetRef")
    int_field(e, spec, "minReplicas", "spec", minimum=1)
    int_field(e, spec, "maxReplicas", "spec", minimum=1, required=True)
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if is_int(low) and is_int(high) and high < low:
        e.invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`")
    for where, metric in items(e, spec, "metrics", "spec"):
        kind = str_field(e, metric, "type", where, required=True, choices=list(METRIC_SOURCES))
        if kind not in METRIC_SOURCES:
            continue
        field = METRIC_SOURCES[kind]
        source = metric.get(field)
        if not isinstance(source, dict):
            e.required(f"{where}.{field}", "must populate information for the given metric source")
            continue
        if kind in ("Resource", "ContainerResource"):
            str_field(e, source, "name", f"{where}.{field}", required=True)
        if kind == "ContainerResource":
            str_field(e, source, "container", f"{where}.{field}", required=True)
        if kind in ("Pods", "Object", "External"):
            metric_id = source.get("metric")
            if not isinstance(metric_id, dict):
                e.required(f"{where}.{field}.metric")
            else:
                str_field(e, metric_id, "name", f"{where}.{field}.metric", required=True)
        if kind == "Object":
            described = source.get("describedObject")
            if not isinstance(described, dict):
                e.required(f"{where}.{field}.describedObject")
            else:
                str_field(e, described, "kind", f"{where}.{field}.describedObject", required=True)
                str_field(e, described, "name", f"{where}.{field}.describedObject", required=True)
        _metric_target(e, source.get("target"), f"{where}.{field}.target")
    behavior = map_field(e, spec, "behavior", "spec")
    for direction in ("scaleUp", "scaleDown"):
        rules = map_field(e, behavior, direction, "spec.behavior")
        path = f"spec.behavior.{direction}"
        int_field(e, rules, "stabilizationWindowSeconds", path, 0, 3600)
        str_field(e, rules, "selectPolicy", path, choices=["Disabled", "Max", "Min"])
        for where, policy in items(e, rules, "policies", path):
            str_field(e, policy, "type", where, required=True, choices=["Percent", "Pods"])
            int_field(e, policy, "value", where, minimum=1, required=True)
            int_field(e, policy, "periodSeconds", where, 1, 1800, required=True)


def _event(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    involved = obj.get("involvedObject")
    if not isinstance(involved, dict):
        e.required("involvedObject")
    else:
        for key in (
            "kind",
            "namespace",
            "name",
            "uid",
            "apiVersion",
            "resourceVersion",
            "fieldPath",
        ):
            str_field(e, involved, key, "involvedObject")
        namespace = (obj.get("metadata") or {}).get("namespace")
        if involved.get("namespace") and namespace and involved["namespace"] != namespace:
            e.invalid(
                "involvedObject.namespace", involved["namespace"], "does not match event.namespace"
            )
    # core/v1 (legacy) events take any type; Normal and Warning are the convention
    for key in ("type", "reason", "message", "action", "reportingComponent", "reportingInstance"):
        str_field(e, obj, key, "")
    int_field(e, obj, "count", "", minimum=0)
    for key in ("firstTimestamp", "lastTimestamp", "eventTime"):
        value = obj.get(key)
        if value is not None and (not isinstance(value, str) or not RFC3339.match(value)):
            e.invalid(key, value, "must be an RFC 3339 timestamp, e.g. 2006-01-02T15:04:05Z")
    source = map_field(e, obj, "source", "")
    str_field(e, source, "component", "source")
    str_field(e, source, "host", "source")


def _crd(e: FieldErrors, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        e.required("spec")
        return
    group = str_field(e, spec, "group", "spec", required=True)
    if group and (subdomain_error(group) or "." not in group):
        e.invalid("spec.group", group, "should be a domain with at least one dot")
    scope = str_field(e, spec, "scope", "spec", required=True, choices=["Cluster", "Namespaced"])
    names = spec.get("names")
    if not isinstance(names, dict):
        e.required("spec.names")
        names = {}
    plural = str_field(e, names, "plural", "spec.names", required=True)
    kind = str_field(e, names, "kind", "spec.names", required=True)
    for key in ("plural", "singular", "listKind"):
        value = names.get(key)
        if isinstance(value, str) and value and key != "listKind" and label_error(value):
            e.invalid(f"spec.names.{key}", value, label_error(value) or "")
    if kind and not re.match(r"^[A-Za-z][A-Za-z0-9]*$", kind):
        e.invalid("spec.names.kind", kind, "must be a valid kind name (e.g. MyKind)")
    string_list(e, names, "shortNames", "spec.names")
    string_list(e, names, "categories", "spec.names")
    name = (obj.get("metadata") or {}).get("name")
    if plural and group and name != f"{plural}.{group}":
        e.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    versions = items(e, spec, "versions", "spec")
    if not versions:
        e.required("spec.versions", "must have exactly one version marked as storage version")
    storage = 0
    seen: set[str] = set()
    for where, version in versions:
        version_name = str_field(e, version, "name", where, required=True)
        if version_name in seen:
            e.duplicate(f"{where}.name", version_name)
        seen.add(version_name or "")
        for key in ("served", "storage"):
            if not isinstance(version.get(key), bool):
                e.required(f"{where}.{key}")
        storage += version.get("storage") is True
        subresources = map_field(e, version, "subresources", where)
        scale = map_field(e, subresources, "scale", f"{where}.subresources")
        if scale:
            for key in ("specReplicasPath", "statusReplicasPath"):
                str_field(e, scale, key, f"{where}.subresources.scale", required=True)
        schema = map_field(e, version, "schema", where)
        map_field(e, schema, "openAPIV3Schema", f"{where}.schema")
    if versions and storage != 1:
        e.invalid(
            "spec.versions", storage, "must have exactly one version marked as storage version"
        )
    if old is not None:
        before = old.get("spec") or {}
        for key in ("group",):
            if before.get(key) != spec.get(key):
                e.invalid(f"spec.{key}", spec.get(key), "field is immutable")
        if scope and before.get("scope") != scope:
            e.invalid("spec.scope", scope, "field is immutable")


_KINDS: dict[tuple[str, str], tuple[Callable[[str], str | None], Callable[..., None]]] = {
    ("", "namespaces"): (label_error, _namespace),
    ("", "pods"): (subdomain_error, _pod),
    ("", "services"): (dns1035_error, _service),
    ("", "configmaps"): (subdomain_error, _config_map),
    ("", "secrets"): (subdomain_error, _secret),
    ("", "events"): (subdomain_error, _event),
    ("apps", "deployments"): (subdomain_error, _deployment),
    ("apps", "replicasets"): (subdomain_error, _replica_set),
    ("autoscaling", "horizontalpodautoscalers"): (subdomain_error, _hpa),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (subdomain_error, _crd),
}


def validate(resource: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Raise a 422 ``ApiError`` listing every invalid field of ``obj`` (``old`` on update)."""
    e = FieldErrors()
    name_rule, check = _KINDS.get(resource.key, (subdomain_error, None))
    validate_metadata(e, obj.get("metadata"), name_rule)
    if check is not None:
        check(e, obj, old)
    elif resource.schema is not None:
        from sandbox.kube.schema import validate_custom

        validate_custom(e, obj, resource.schema)
    name = (obj.get("metadata") or {}).get("name") or ""
    e.raise_if_any(resource.kind, resource.group, name if isinstance(name, str) else "")


def validate_scale(resource: ResourceType, scale: dict[str, Any]) -> None:
    """Checks of an ``autoscaling/v1`` ``Scale`` written to ``<resource>/<name>/scale``."""
    e = FieldErrors()
    spec = scale.get("spec")
    if not isinstance(spec, dict):
        e.required("spec")
    else:
        int_field(e, spec, "replicas", "spec", minimum=0)
    name = (scale.get("metadata") or {}).get("name") or ""
    e.raise_if_any("Scale", "autoscaling", name)
