"""The three patch formats of the Kubernetes API: JSON patch, JSON merge patch, strategic merge.

- JSON patch (RFC 6902, ``application/json-patch+json``): a list of operations; a failing
  ``test`` or a path that does not exist is a :class:`PatchError` (the server answers 422, as
  the real one does with evanphx/json-patch errors).
- JSON merge patch (RFC 7386, ``application/merge-patch+json``): maps merge recursively,
  ``null`` deletes, lists are replaced whole.
- Strategic merge patch (``application/strategic-merge-patch+json``, built-in kinds only): like
  a merge patch, except that lists of objects with a *merge key* (containers by ``name``,
  container ports by ``containerPort``, Service ports by ``port``, ...) are merged item by item,
  so ``{"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "v2"}]}}}}``
  changes one image and keeps the container's env and ports. Directives: ``$patch: delete`` /
  ``replace`` / ``merge`` on maps and list items, ``$retainKeys``,
  ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>`` (what kubectl apply
  sends).

The merge keys come from the Go struct tags (``patchMergeKey``) of the real types; they depend
on where a list sits (container ``ports`` vs Service ``ports``), so :func:`merge_key` looks at
the path of field names. :func:`apply_patch` picks the format from the request's media type
(strategic merge is refused with 415 for custom resources, as the real server does; server-side
apply is approximated by a strategic merge, without field managers). Pure: no I/O, inputs are
never mutated.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from sandbox.kube import errors
from sandbox.kube.resources import ResourceType

Json = Any

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "readinessGates": "conditionType",
}
# lists of scalars that strategic merge treats as sets (patchStrategy:"merge")
_MERGED_PRIMITIVE_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """The patch cannot be applied to this document; ``str()`` is the message for the client."""


def merge_key(path: Sequence[str]) -> str | None:
    """The strategic-merge key of the list at ``path`` (field names, no indices), if any."""
    if not path:
        return None
    field = path[-1]
    if field == "ports":
        if len(path) >= 2 and path[-2] in _CONTAINER_LISTS:
            return "containerPort"
        if len(path) >= 2 and path[-2] == "spec":
            return "port"
        return None
    return _MERGE_KEYS.get(field)


# -- JSON merge patch (RFC 7386) ---------------------------------------------------------------


def json_merge_patch(target: Json, patch: Json) -> Json:
    """Apply an RFC 7386 merge patch; returns a new document."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


# -- JSON patch (RFC 6902) ---------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer must be empty or start with a "/": {path!r}')
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    limit = len(container) if for_add else len(container) - 1
    if index > limit:
        raise PatchError(f"array index {index} out of bounds")
    return index


def _parent(doc: Json, tokens: list[str], op: str, path: str) -> Json:
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list):
            try:
                current = current[_index(current, token, for_add=False)]
            except PatchError:
                raise PatchError(
                    f"{op} operation does not apply: doc is missing path: {path}"
                ) from None
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
    return current


def _get(doc: Json, path: str, op: str) -> Json:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        try:
            return parent[_index(parent, last, for_add=False)]
        except PatchError:
            pass
    raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")


def _add(doc: Json, path: str, value: Json, op: str = "add") -> Json:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        try:
            parent.insert(_index(parent, last, for_add=True), value)
        except PatchError as exc:
            raise PatchError(f"{op} operation does not apply: {exc}: {path}") from None
    else:
        raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
    return doc


def _remove(doc: Json, path: str, op: str = "remove") -> tuple[Json, Json]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError(f"{op} operation does not apply: cannot remove the document root")
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(_index(parent, last, for_add=False))
        except PatchError:
            pass
    raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")


def json_patch(target: Json, operations: Json) -> Json:
    """Apply an RFC 6902 patch; returns a new document or raises :class:`PatchError`."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict):
            raise PatchError(f"invalid JSON patch operation {operation!r}")
        op = operation.get("op")
        path = operation.get("path")
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"{op} operation missing value")
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(operation["value"]))
        elif op == "remove":
            doc, _ = _remove(doc, path)
        elif op == "replace":
            _get(doc, path, "replace")
            if _pointer(path):
                doc, _ = _remove(doc, path, "replace")
            doc = _add(doc, path, copy.deepcopy(operation["value"]), "replace")
        elif op in ("move", "copy"):
            source = operation.get("from")
            if source is None:
                raise PatchError(f"{op} operation missing from")
            if op == "move":
                if isinstance(path, str) and path.startswith(f"{source}/"):
                    raise PatchError("move operation cannot move a value into one of its children")
                doc, value = _remove(doc, source, "move")
            else:
                value = copy.deepcopy(_get(doc, source, "copy"))
            doc = _add(doc, path, value, op)
        elif op == "test":
            try:
                current = _get(doc, path, "test")
            except PatchError:
                current = _MISSING
            if current != operation["value"] or type(current) is not type(operation["value"]):
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"unexpected kind of JSON patch operation: {op!r}")
    return doc


_MISSING = object()


# -- strategic merge patch ---------------------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_ORDER = "$setElementOrder/"


def strategic_merge_patch(target: Json, patch: Json, path: Sequence[str] = ()) -> Json:
    """Apply a strategic merge patch to a built-in object; returns a new document."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _merge_map(target if isinstance(target, dict) else {}, patch, tuple(path))


def _merge_map(original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]) -> Json:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != _DIRECTIVE}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive!r} in map")
    result = copy.deepcopy(original)
    orders: dict[str, list[Any]] = {}
    deletions: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER) :]] = value if isinstance(value, list) else []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            deletions[key[len(_DELETE_PRIMITIVE) :]] = value if isinstance(value, list) else []
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        child = (*path, key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(current if isinstance(current, list) else [], value, child)
        else:
            result[key] = copy.deepcopy(value)
    for field, values in deletions.items():
        if isinstance(result.get(field), list):
            result[field] = [item for item in result[field] if item not in values]
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, merge_key((*path, field)))
    retain = patch.get(_RETAIN)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: list[Any], patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    key = merge_key(path)
    if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
        return [
            copy.deepcopy(item)
            for item in patch
            if not (isinstance(item, dict) and item.get(_DIRECTIVE) == "replace")
        ]
    if key is None:
        if path and path[-1] in _MERGED_PRIMITIVE_LISTS:
            merged = list(original)
            merged.extend(item for item in patch if item not in merged)
            return merged
        return copy.deepcopy(patch)
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"{'.'.join(path)}: list items must be objects with key {key!r}")
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        position = next(
            (i for i, existing in enumerate(result) if _same_key(existing, item, key)), None
        )
        if item.get(_DIRECTIVE) == "delete":
            if position is not None:
                result.pop(position)
            continue
        if position is None:
            clean = _merge_map({}, item, path)
            if clean is not None:
                result.append(clean)
        else:
            merged = _merge_map(result[position], item, path)
            if merged is None:
                result.pop(position)
            else:
                result[position] = merged
    return result


def _same_key(existing: Any, item: dict[str, Any], key: str) -> bool:
    return isinstance(existing, dict) and existing.get(key) == item.get(key)


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def identity(item: Any) -> Any:
        if key and isinstance(item, dict):
            return item.get(key)
        return item

    wanted = [identity(entry) if isinstance(entry, dict) else entry for entry in order]
    ranked = {value: rank for rank, value in enumerate(wanted) if _hashable(value)}
    listed = [item for item in items if _hashable(identity(item)) and identity(item) in ranked]
    rest = [item for item in items if not (_hashable(identity(item)) and identity(item) in ranked)]
    listed.sort(key=lambda item: ranked[identity(item)])
    return listed + rest


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# -- by media type (the PATCH request's Content-Type) ----------------------------------------


def apply_patch(resource: ResourceType, content_type: str, current: Json, patch: Json) -> Json:
    """Apply a patch body of ``content_type`` to ``current``; 4xx ``ApiError`` on failure."""
    try:
        if content_type == JSON_PATCH:
            return json_patch(current, patch)
        if content_type == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            return json_merge_patch(current, patch)
        if content_type in (STRATEGIC_PATCH, APPLY_PATCH):
            if content_type == STRATEGIC_PATCH and not resource.builtin:
                raise unsupported_patch(content_type, resource)
            if not isinstance(patch, dict):
                raise errors.bad_request("a strategic merge patch must be a JSON object")
            if resource.builtin:
                return strategic_merge_patch(current, patch)
            return json_merge_patch(current, patch)
    except PatchError as exc:
        raise errors.unprocessable(str(exc)) from None
    raise unsupported_patch(content_type, resource)


def patch_types(resource: ResourceType) -> list[str]:
    if resource.builtin:
        return [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH]
    return [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]


def unsupported_patch(content_type: str, resource: ResourceType) -> errors.ApiError:
    return errors.unsupported_media_type(content_type, patch_types(resource))
