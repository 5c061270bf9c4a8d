"""Typed field checks shared by the validators: each records a field error and never raises.

The helpers read one key of one object and report, with the real server's field path, a
missing required value, a wrong JSON type (the official client's models are strict: a string
where an integer belongs would make every later read of the object fail), or a value out of
range. Names follow the real server's rules: DNS-1123 labels and subdomains, DNS-1035 labels,
label keys and values. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sandbox.kube.errors import FieldErrors
from sandbox.kube.selectors import label_key_error, label_value_error

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]i?|Ki|[mu]|)?$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


# -- typed fields -----------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_field(
    e: FieldErrors,
    obj: Mapping[str, Any],
    key: str,
    path: str,
    minimum: int | None = None,
    maximum: int | None = None,
    required: bool = False,
) -> None:
    where = f"{path}.{key}" if path else key
    if key not in obj or obj[key] is None:
        if required:
            e.required(where)
        return
    value = obj[key]
    if not is_int(value):
        e.type_invalid(where, value, "must be an integer")
    elif minimum is not None and value < minimum:
        e.invalid(where, value, f"must be greater than or equal to {minimum}")
    elif maximum is not None and value > maximum:
        e.invalid(where, value, f"must be less than or equal to {maximum}")


def str_field(
    e: FieldErrors,
    obj: Mapping[str, Any],
    key: str,
    path: str,
    *,
    required: bool = False,
    choices: list[str] | None = None,
) -> str | None:
    where = f"{path}.{key}" if path else key
    value = obj.get(key)
    if value is None or value == "":
        if required:
            e.required(where)
        return None
    if not isinstance(value, str):
        e.type_invalid(where, value, "must be a string")
        return None
    if choices is not None and value not in choices:
        e.not_supported(where, value, choices)
    return value


def bool_field(e: FieldErrors, obj: Mapping[str, Any], key: str, path: str) -> None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        e.type_invalid(f"{path}.{key}", value, "must be a boolean")


def map_field(e: FieldErrors, obj: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        e.type_invalid(f"{path}.{key}" if path else key, value, "must be an object")
        return {}
    return value


def list_field(e: FieldErrors, obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        e.type_invalid(f"{path}.{key}" if path else key, value, "must be an array")
        return []
    return value


def items(e: FieldErrors, obj: Mapping[str, Any], key: str, path: str) -> list[tuple[str, dict]]:
    """The object items of list ``key`` with their paths; non-objects are reported."""
    out = []
    for i, item in enumerate(list_field(e, obj, key, path)):
        where = f"{path}.{key}[{i}]" if path else f"{key}[{i}]"
        if isinstance(item, dict):
            out.append((where, item))
        else:
            e.type_invalid(where, item, "must be an object")
    return out


def string_map(e: FieldErrors, obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    value = map_field(e, obj, key, path)
    for k, v in value.items():
        if not isinstance(v, str):
            e.type_invalid(f"{path}.{key}.{k}" if path else f"{key}.{k}", v, "must be a string")
    return value


def string_list(e: FieldErrors, obj: Mapping[str, Any], key: str, path: str) -> list[str]:
    value = list_field(e, obj, key, path)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            e.type_invalid(f"{path}.{key}[{i}]", item, "must be a string")
    return value


def _name_error(value: str, pattern: re.Pattern[str], limit: int, what: str) -> str | None:
    if len(value) > limit:
        return f"must be no more than {limit} characters"
    if not pattern.match(value):
        return (
            f"a lowercase RFC {what} must consist of lower case alphanumeric characters"
            + (", '-' or '.'" if pattern is DNS1123_SUBDOMAIN else " or '-'")
            + (
                ", and must start with an alphabetic character and end with an alphanumeric one"
                if pattern is DNS1035_LABEL
                else ", and must start and end with an alphanumeric character"
            )
        )
    return None


def subdomain_error(value: str) -> str | None:
    return _name_error(value, DNS1123_SUBDOMAIN, 253, "1123 subdomain")


def label_error(value: str) -> str | None:
    return _name_error(value, DNS1123_LABEL, 63, "1123 label")


def dns1035_error(value: str) -> str | None:
    return _name_error(value, DNS1035_LABEL, 63, "1035 label")


def dns_name(e: FieldErrors, obj: Mapping[str, Any], key: str, path: str, rule: Callable) -> None:
    value = str_field(e, obj, key, path, required=True)
    if value is not None:
        problem = rule(value)
        if problem:
            e.invalid(f"{path}.{key}", value, problem)


def quantity(e: FieldErrors, value: Any, path: str) -> None:
    if is_int(value) or isinstance(value, float):
        return
    if not isinstance(value, str) or not QUANTITY.match(value):
        e.invalid(path, value, "must match the regular expression of a quantity, e.g. 500m or 1Gi")


# -- metadata ----------------------------------------------------------------------------------


def validate_labels(e: FieldErrors, labels: Any, path: str) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        e.type_invalid(path, labels, "must be an object of strings")
        return
    for key, value in labels.items():
        problem = label_key_error(key)
        if problem:
            e.invalid(path, key, problem)
        if not isinstance(value, str):
            e.type_invalid(f"{path}.{key}", value, "must be a string")
            continue
        problem = label_value_error(value)
        if problem:
            e.invalid(f"{path}.{key}", value, problem)


def validate_metadata(e: FieldErrors, meta: Any, name_rule: Callable[[str], str | None]) -> None:
    if not isinstance(meta, dict):
        e.required("metadata")
        return
    name = meta.get("name")
    if not name:
        e.required("metadata.name", "name or generateName is required")
    elif not isinstance(name, str):
        e.type_invalid("metadata.name", name, "must be a string")
    else:
        problem = name_rule(name)
        if problem:
            e.invalid("metadata.name", name, problem)
    for key in ("namespace", "generateName", "uid", "resourceVersion"):
        str_field(e, meta, key, "metadata")
    validate_labels(e, meta.get("labels"), "metadata.labels")
    annotations = string_map(e, meta, "annotations", "metadata")
    for key in annotations:
        problem = label_key_error(key)
        if problem:
            e.invalid("metadata.annotations", key, problem)
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > 256 * 1024:
        e.too_long("metadata.annotations", 256 * 1024)
    string_list(e, meta, "finalizers", "metadata")
    for where, ref in items(e, meta, "ownerReferences", "metadata"):
        for key in ("apiVersion", "kind", "name", "uid"):
            str_field(e, ref, key, where, required=True)
        bool_field(e, ref, "controller", where)
        bool_field(e, ref, "blockOwnerDeletion", where)


def timestamps(e: FieldErrors, obj: Mapping[str, Any], path: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = obj.get(key)
        if value is not None and (not isinstance(value, str) or not RFC3339.match(value)):
            e.invalid(f"{path}.{key}", value, "must be an RFC 3339 timestamp")
