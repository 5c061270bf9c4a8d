"""Validation of pod templates and label selectors, shared by Pods, Deployments, ReplicaSets.

Containers need a DNS-1123 name and an image; ports, env, volume mounts (which must name a
declared volume), probes and resources are type-checked the way the strict client models
decode them; a workload's ``spec.selector`` must be non-empty and match its template's labels.
Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sandbox.kube.errors import FieldErrors
from sandbox.kube.fields import (
    IANA_SVC_NAME,
    bool_field,
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
)
from sandbox.kube.selectors import label_key_error, selector_from_object

RESTART_POLICIES = ["Always", "OnFailure", "Never"]
DNS_POLICIES = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]


# -- pods --------------------------------------------------------------------------------------


def _probe(e: FieldErrors, probe: Any, path: str) -> None:
    if probe is None:
        return
    if not isinstance(probe, dict):
        e.type_invalid(path, probe, "must be an object")
        return
    for key in (
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    ):
        int_field(e, probe, key, path, minimum=0)
    handlers = [k for k in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(k) is not None]
    if len(handlers) > 1:
        e.forbidden(path, "may not specify more than 1 handler type")
    http = map_field(e, probe, "httpGet", path)
    if http:
        port_ref(e, http, "port", f"{path}.httpGet", required=True)
        str_field(e, http, "path", f"{path}.httpGet")
        str_field(e, http, "scheme", f"{path}.httpGet", choices=["HTTP", "HTTPS"])
        for where, header in items(e, http, "httpHeaders", f"{path}.httpGet"):
            str_field(e, header, "name", where, required=True)
            if not isinstance(header.get("value"), str):
                e.required(f"{where}.value")
    tcp = map_field(e, probe, "tcpSocket", path)
    if tcp:
        port_ref(e, tcp, "port", f"{path}.tcpSocket", required=True)
    command = map_field(e, probe, "exec", path)
    if command:
        string_list(e, command, "command", f"{path}.exec")
    grpc = map_field(e, probe, "grpc", path)
    if grpc:
        int_field(e, grpc, "port", f"{path}.grpc", 1, 65535, required=True)


def port_ref(e: FieldErrors, obj: Mapping[str, Any], key: str, path: str, required: bool) -> None:
    value = obj.get(key)
    where = f"{path}.{key}"
    if value is None:
        if required:
            e.required(where)
    elif is_int(value):
        if not 1 <= value <= 65535:
            e.invalid(where, value, "must be between 1 and 65535, inclusive")
    elif isinstance(value, str):
        if len(value) > 15 or not IANA_SVC_NAME.match(value) or not re.search("[a-z]", value):
            e.invalid(
                where,
                value,
                "must contain only alpha-numeric characters (a-z, 0-9), "
                "and hyphens (-), at most 15 characters, and at least one letter",
            )
    else:
        e.type_invalid(where, value, "must be an integer or a string")


def _container(e: FieldErrors, c: dict[str, Any], path: str, volumes: set[str]) -> None:
    dns_name(e, c, "name", path, label_error)
    str_field(e, c, "image", path, required=True)
    str_field(e, c, "imagePullPolicy", path, choices=PULL_POLICIES)
    for key in ("workingDir", "terminationMessagePath", "terminationMessagePolicy"):
        str_field(e, c, key, path)
    string_list(e, c, "command", path)
    string_list(e, c, "args", path)
    for key in ("stdin", "stdinOnce", "tty"):
        bool_field(e, c, key, path)
    seen_ports: set[tuple[Any, Any]] = set()
    names: set[str] = set()
    for where, port in items(e, c, "ports", path):
        int_field(e, port, "containerPort", where, 1, 65535, required=True)
        int_field(e, port, "hostPort", where, 1, 65535)
        protocol = str_field(e, port, "protocol", where, choices=PROTOCOLS) or "TCP"
        name = str_field(e, port, "name", where)
        if name is not None:
            if len(name) > 15 or not IANA_SVC_NAME.match(name):
                e.invalid(
                    f"{where}.name",
                    name,
                    "must be no more than 15 characters and consist "
                    "of lower case alphanumeric characters or '-'",
                )
            if name in names:
                e.duplicate(f"{where}.name", name)
            names.add(name)
        identity = (port.get("containerPort"), protocol)
        if identity in seen_ports:
            e.duplicate(f"{where}", f"{identity[0]}/{protocol}")
        seen_ports.add(identity)
    for where, env in items(e, c, "env", path):
        name = str_field(e, env, "name", where, required=True)
        if name is not None and "=" in name:
            e.invalid(f"{where}.name", name, "must not contain '='")
        str_field(e, env, "value", where)
        source = map_field(e, env, "valueFrom", where)
        if source and env.get("value"):
            e.invalid(f"{where}.valueFrom", "", "may not be specified when `value` is not empty")
        for ref, keys in (
            ("configMapKeyRef", ("key",)),
            ("secretKeyRef", ("key",)),
            ("fieldRef", ("fieldPath",)),
            ("resourceFieldRef", ("resource",)),
        ):
            ref_obj = map_field(e, source, ref, f"{where}.valueFrom")
            for key in keys if ref_obj else ():
                str_field(e, ref_obj, key, f"{where}.valueFrom.{ref}", required=True)
    for where, source in items(e, c, "envFrom", path):
        str_field(e, source, "prefix", where)
    mounts: set[str] = set()
    for where, mount in items(e, c, "volumeMounts", path):
        name = str_field(e, mount, "name", where, required=True)
        mount_path = str_field(e, mount, "mountPath", where, required=True)
        bool_field(e, mount, "readOnly", where)
        str_field(e, mount, "subPath", where)
        if name is not None and name not in volumes:
            e.not_found(f"{where}.name", name)
        if mount_path is not None:
            if mount_path in mounts:
                e.invalid(f"{where}.mountPath", mount_path, "must be unique")
            mounts.add(mount_path)
    resources = map_field(e, c, "resources", path)
    for kind in ("limits", "requests"):
        for resource, value in map_field(e, resources, kind, f"{path}.resources").items():
            quantity(e, value, f"{path}.resources.{kind}[{resource}]")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(e, c.get(probe), f"{path}.{probe}")
    map_field(e, c, "securityContext", path)
    map_field(e, c, "lifecycle", path)


def _volume(e: FieldErrors, volume: dict[str, Any], path: str) -> None:
    dns_name(e, volume, "name", path, label_error)
    sources = [k for k, v in volume.items() if k != "name" and v is not None]
    if not sources:
        e.required(path, "must specify a volume type")
    elif len(sources) > 1:
        e.forbidden(f"{path}.{sources[1]}", "may not specify more than 1 volume type")
    for key in (
        "configMap",
        "secret",
        "emptyDir",
        "hostPath",
        "persistentVolumeClaim",
        "projected",
        "downwardAPI",
    ):
        map_field(e, volume, key, path)
    config_map = volume.get("configMap")
    if isinstance(config_map, dict):
        str_field(e, config_map, "name", f"{path}.configMap")
        int_field(e, config_map, "defaultMode", f"{path}.configMap", 0, 0o777)
        for where, item in items(e, config_map, "items", f"{path}.configMap"):
            str_field(e, item, "key", where, required=True)
            str_field(e, item, "path", where, required=True)
    secret = volume.get("secret")
    if isinstance(secret, dict):
        str_field(e, secret, "secretName", f"{path}.secret")
        int_field(e, secret, "defaultMode", f"{path}.secret", 0, 0o777)
    host_path = volume.get("hostPath")
    if isinstance(host_path, dict):
        str_field(e, host_path, "path", f"{path}.hostPath", required=True)
    claim = volume.get("persistentVolumeClaim")
    if isinstance(claim, dict):
        str_field(e, claim, "claimName", f"{path}.persistentVolumeClaim", required=True)


def validate_pod_spec(
    e: FieldErrors, spec: Any, path: str, restart_policies: list[str] | None = None
) -> None:
    if not isinstance(spec, dict):
        e.required(path)
        return
    volume_names: set[str] = set()
    for where, volume in items(e, spec, "volumes", path):
        _volume(e, volume, where)
        name = volume.get("name")
        if isinstance(name, str):
            if name in volume_names:
                e.duplicate(f"{where}.name", name)
            volume_names.add(name)
    containers = items(e, spec, "containers", path)
    if not containers and not spec.get("containers"):
        e.required(f"{path}.containers")
    names: set[str] = set()
    for where, container in items(e, spec, "initContainers", path) + containers:
        _container(e, container, where, volume_names)
        name = container.get("name")
        if isinstance(name, str):
            if name in names:
                e.duplicate(f"{where}.name", name)
            names.add(name)
    policy = str_field(e, spec, "restartPolicy", path, choices=RESTART_POLICIES)
    if (
        restart_policies
        and policy
        and policy in RESTART_POLICIES
        and policy not in restart_policies
    ):
        e.not_supported(f"{path}.restartPolicy", policy, restart_policies)
    str_field(e, spec, "dnsPolicy", path, choices=DNS_POLICIES)
    for key in (
        "schedulerName",
        "nodeName",
        "hostname",
        "subdomain",
        "priorityClassName",
        "preemptionPolicy",
        "runtimeClassName",
    ):
        str_field(e, spec, key, path)
    for key in ("serviceAccountName", "serviceAccount"):
        value = str_field(e, spec, key, path)
        if value and subdomain_error(value):
            e.invalid(f"{path}.{key}", value, subdomain_error(value) or "")
    int_field(e, spec, "terminationGracePeriodSeconds", path, minimum=0)
    int_field(e, spec, "activeDeadlineSeconds", path, minimum=1)
    int_field(e, spec, "priority", path)
    for key in (
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "shareProcessNamespace",
    ):
        bool_field(e, spec, key, path)
    string_map(e, spec, "nodeSelector", path)
    map_field(e, spec, "securityContext", path)
    map_field(e, spec, "affinity", path)
    for where, secret in items(e, spec, "imagePullSecrets", path):
        str_field(e, secret, "name", where)
    for where, toleration in items(e, spec, "tolerations", path):
        for key in ("key", "operator", "value", "effect"):
            str_field(e, toleration, key, where)
        int_field(e, toleration, "tolerationSeconds", where)


def validate_template(e: FieldErrors, template: Any, path: str, restart: list[str]) -> None:
    if not isinstance(template, dict):
        e.required(path)
        return
    meta = map_field(e, template, "metadata", path)
    validate_labels(e, meta.get("labels"), f"{path}.metadata.labels")
    string_map(e, meta, "annotations", f"{path}.metadata")
    validate_pod_spec(e, template.get("spec"), f"{path}.spec", restart)


def validate_label_selector(e: FieldErrors, selector: Any, path: str) -> bool:
    """Structural checks of a ``LabelSelector``; True when it can be compiled."""
    if not isinstance(selector, dict):
        e.type_invalid(path, selector, "must be an object")
        return False
    errors_before = len(e.causes)
    validate_labels(e, selector.get("matchLabels"), f"{path}.matchLabels")
    for where, expression in items(e, selector, "matchExpressions", path):
        key = str_field(e, expression, "key", where, required=True)
        if key and label_key_error(key):
            e.invalid(f"{where}.key", key, label_key_error(key) or "")
        operator = str_field(
            e,
            expression,
            "operator",
            where,
            required=True,
            choices=["DoesNotExist", "Exists", "In", "NotIn"],
        )
        values = string_list(e, expression, "values", where)
        if operator in ("In", "NotIn") and not values:
            e.required(f"{where}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        if operator in ("Exists", "DoesNotExist") and values:
            e.forbidden(
                f"{where}.values",
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )
    return len(e.causes) == errors_before


def workload_selector(e: FieldErrors, spec: dict[str, Any], kind: str) -> None:
    selector = spec.get("selector")
    if selector is None:
        e.required("spec.selector")
        return
    if not validate_label_selector(e, selector, "spec.selector"):
        return
    compiled = selector_from_object(selector)
    if compiled.empty():
        e.invalid("spec.selector", selector, f"empty selector is invalid for {kind}")
        return
    template = spec.get("template")
    if not isinstance(template, dict) or not isinstance(template.get("metadata") or {}, dict):
        return
    labels = (template.get("metadata") or {}).get("labels") or {}
    if isinstance(labels, dict) and not compiled.matches(labels):
        e.invalid(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        )
