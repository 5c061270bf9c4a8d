"""Custom resources against their CRD's ``openAPIV3Schema``: prune, default, validate.

The real server treats a structural schema in three steps, in this order, and so do we:
unknown fields are *pruned* (dropped silently, unless ``x-kubernetes-preserve-unknown-fields``),
``default`` values are filled in, then the object is *validated* (``type``, ``required``,
``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``, ``minItems``/
``maxItems``, ``nullable``, ``x-kubernetes-int-or-string``). ``apiVersion``, ``kind`` and
``metadata`` at the root are never pruned. CEL rules (``x-kubernetes-validations``) are not
evaluated.

Pure: plain dicts in, a new dict out (prune/default) or field errors (validate).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from sandbox.kube.errors import FieldErrors

_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def prune_and_default(obj: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``obj`` with unknown fields removed and schema defaults applied."""
    if not schema:
        return copy.deepcopy(obj)
    result = _prune(copy.deepcopy(obj), schema, root=True)
    return _default(result, schema)


def _prune(value: Any, schema: dict[str, Any], root: bool = False) -> Any:
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or extra is True
        for key in list(value):
            if root and key in _ROOT_FIELDS:
                continue
            if key in properties:
                value[key] = _prune(value[key], properties[key])
            elif isinstance(extra, dict):
                value[key] = _prune(value[key], extra)
            elif not keep_unknown:
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"]) for item in value]
    return value


def _default(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        for key, child in (schema.get("properties") or {}).items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                value[key] = _default(value[key], child)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in (schema.get("properties") or {}):
                    value[key] = _default(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_default(item, schema["items"]) for item in value]
    return value


def validate_custom(e: FieldErrors, obj: dict[str, Any], schema: dict[str, Any]) -> None:
    """Record a field error for every place ``obj`` breaks ``schema``."""
    properties = schema.get("properties") or {}
    for key, value in obj.items():
        if key in _ROOT_FIELDS:
            continue
        if key in properties:
            _validate(e, value, properties[key], key)
    for key in schema.get("required") or ():
        if key not in obj and key not in _ROOT_FIELDS:
            e.required(key)


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = _TYPES.get(kind)
    return expected is None or isinstance(value, expected)


def _validate(e: FieldErrors, value: Any, schema: dict[str, Any], path: str) -> None:
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            e.type_invalid(path, value, f"{path} in body must be of type {schema['type']}")
        return
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not (_type_ok(value, "integer") or isinstance(value, str)):
            e.type_invalid(path, value, f"{path} in body must be of type integer or string")
            return
    elif kind and not _type_ok(value, kind):
        e.type_invalid(path, value, f"{path} in body must be of type {kind}: {_type_name(value)}")
        return
    if "enum" in schema and value not in schema["enum"]:
        e.not_supported(path, value, [str(option) for option in schema["enum"]])
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            e.invalid(
                path,
                value,
                f"{path} in body should be greater than or equal to {schema['minimum']}",
            )
        if "maximum" in schema and value > schema["maximum"]:
            e.invalid(
                path, value, f"{path} in body should be less than or equal to {schema['maximum']}"
            )
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            e.invalid(
                path, value, f"{path} in body should be at least {schema['minLength']} chars long"
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            e.too_long(path, schema["maxLength"])
        if "pattern" in schema and not re.search(schema["pattern"], value):
            e.invalid(path, value, f"{path} in body should match '{schema['pattern']}'")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            e.invalid(
                path, len(value), f"{path} in body should have at least {schema['minItems']} items"
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            e.invalid(
                path, len(value), f"{path} in body should have at most {schema['maxItems']} items"
            )
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _validate(e, item, items, f"{path}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            if key in properties:
                _validate(e, child, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                _validate(e, child, extra, f"{path}.{key}")
        for key in schema.get("required") or ():
            if key not in value:
                e.required(f"{path}.{key}")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
