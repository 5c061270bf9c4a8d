"""Decoding the Kubernetes protobuf wire format for the writes kubectl sends that way.

client-go 1.31+ typed clients send built-in objects as ``application/vnd.kubernetes.protobuf``
(kubernetes/kubernetes#125314), with no JSON fallback; kubectl 1.32 does so for its typed
``create`` commands (``kubectl create namespace|configmap|secret|deployment|service``). The
envelope is ``k8s\\x00`` + a ``runtime.Unknown`` (``typeMeta``=1 {apiVersion=1, kind=2},
``raw``=2); ``raw`` is the object in the field numbers of the types' ``generated.proto``.

Only the kinds and fields those commands produce are mapped (the tables below). Go encodes
non-pointer scalars even when empty, so empty strings, zeros and ``false`` are dropped unless
the field is a pointer (``?`` in the tables), which is what the JSON ``omitempty`` encoding of
the same object would have said. ``status`` is ignored (the store resets it on create). A
field missing from the tables with a non-empty value is refused (400) rather than lost. Pure.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

Schema = dict[int, tuple[str, Any]]


class ProtobufError(ValueError):
    """The body is not a protobuf object this decoder knows; ``str()`` is for the client."""


# -- field tables (numbers from k8s.io/api and apimachinery generated.proto) -------------------

OWNER_REFERENCE: Schema = {
    1: ("kind", "s"),
    3: ("name", "s"),
    4: ("uid", "s"),
    5: ("apiVersion", "s"),
    6: ("controller", "b?"),
    7: ("blockOwnerDeletion", "b?"),
}
OBJECT_META: Schema = {
    1: ("name", "s"),
    2: ("generateName", "s"),
    3: ("namespace", "s"),
    4: ("selfLink", "s"),
    5: ("uid", "s"),
    6: ("resourceVersion", "s"),
    7: ("generation", "i"),
    8: ("creationTimestamp", "time"),
    11: ("labels", ("map", "s")),
    12: ("annotations", ("map", "s")),
    13: ("ownerReferences", ("list", OWNER_REFERENCE)),
    14: ("finalizers", ("list", "s")),
}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", ("map", "s")),
    2: (
        "matchExpressions",
        ("list", {1: ("key", "s"), 2: ("operator", "s"), 3: ("values", ("list", "s"))}),
    ),
}
CONTAINER_PORT: Schema = {
    1: ("name", "s"),
    2: ("hostPort", "i"),
    3: ("containerPort", "i"),
    4: ("protocol", "s"),
    5: ("hostIP", "s"),
}
CONTAINER: Schema = {
    1: ("name", "s"),
    2: ("image", "s"),
    3: ("command", ("list", "s")),
    4: ("args", ("list", "s")),
    5: ("workingDir", "s"),
    6: ("ports", ("list", CONTAINER_PORT)),
    7: ("env", ("list", {1: ("name", "s"), 2: ("value", "s")})),
    8: ("resources", {1: ("limits", ("map", "q")), 2: ("requests", ("map", "q"))}),
    13: ("terminationMessagePath", "s"),
    14: ("imagePullPolicy", "s"),
    16: ("stdin", "b"),
    17: ("stdinOnce", "b"),
    18: ("tty", "b"),
    20: ("terminationMessagePolicy", "s"),
}
POD_SPEC: Schema = {
    2: ("containers", ("list", CONTAINER)),
    3: ("restartPolicy", "s"),
    4: ("terminationGracePeriodSeconds", "i?"),
    6: ("dnsPolicy", "s"),
    7: ("nodeSelector", ("map", "s")),
    8: ("serviceAccountName", "s"),
    9: ("serviceAccount", "s"),
    10: ("nodeName", "s"),
    11: ("hostNetwork", "b"),
    12: ("hostPID", "b"),
    13: ("hostIPC", "b"),
    16: ("hostname", "s"),
    17: ("subdomain", "s"),
    19: ("schedulerName", "s"),
    20: ("initContainers", ("list", CONTAINER)),
    24: ("priorityClassName", "s"),
}
POD_TEMPLATE: Schema = {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}
DEPLOYMENT_SPEC: Schema = {
    1: ("replicas", "i?"),
    2: ("selector", LABEL_SELECTOR),
    3: ("template", POD_TEMPLATE),
    4: (
        "strategy",
        {
            1: ("type", "s"),
            2: ("rollingUpdate", {1: ("maxUnavailable", "ios"), 2: ("maxSurge", "ios")}),
        },
    ),
    5: ("minReadySeconds", "i"),
    6: ("revisionHistoryLimit", "i?"),
    7: ("paused", "b"),
    9: ("progressDeadlineSeconds", "i?"),
}
SERVICE_PORT: Schema = {
    1: ("name", "s"),
    2: ("protocol", "s"),
    3: ("port", "i"),
    4: ("targetPort", "ios"),
    5: ("nodePort", "i"),
    6: ("appProtocol", "s"),
}
SERVICE_SPEC: Schema = {
    1: ("ports", ("list", SERVICE_PORT)),
    2: ("selector", ("map", "s")),
    3: ("clusterIP", "s"),
    4: ("type", "s"),
    5: ("externalIPs", ("list", "s")),
    7: ("sessionAffinity", "s"),
    10: ("externalName", "s"),
    11: ("externalTrafficPolicy", "s"),
    13: ("publishNotReadyAddresses", "b"),
}
_STATUS = ("status", "skip")
KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "Namespace"): {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("finalizers", ("list", "s"))}),
        3: _STATUS,
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", OBJECT_META),
        2: ("data", ("map", "s")),
        3: ("binaryData", ("map", "bytes")),
        4: ("immutable", "b?"),
    },
    ("v1", "Secret"): {
        1: ("metadata", OBJECT_META),
        2: ("data", ("map", "bytes")),
        3: ("type", "s"),
        4: ("stringData", ("map", "s")),
        5: ("immutable", "b?"),
    },
    ("v1", "Service"): {1: ("metadata", OBJECT_META), 2: ("spec", SERVICE_SPEC), 3: _STATUS},
    ("v1", "Pod"): {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC), 3: _STATUS},
    ("apps/v1", "Deployment"): {
        1: ("metadata", OBJECT_META),
        2: ("spec", DEPLOYMENT_SPEC),
        3: _STATUS,
    },
}


# -- wire format -------------------------------------------------------------------------------


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise ProtobufError("truncated protobuf varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs: an int for varints, bytes for length-delimited fields."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            out.append((number, value))
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise ProtobufError("truncated protobuf field")
            out.append((number, data[i : i + length]))
            i += length
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire}")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _bytes(value: int | bytes, path: str) -> bytes:
    if not isinstance(value, bytes):
        raise ProtobufError(f"{path}: expected a length-delimited field")
    return value


def _scalar(kind: str, value: int | bytes, path: str) -> Any:
    base = kind.rstrip("?")
    if base == "s":
        return _bytes(value, path).decode()
    if base == "bytes":
        return base64.b64encode(_bytes(value, path)).decode()
    if base == "q":  # resource.Quantity{string=1}
        return str(_message(_bytes(value, path), {1: ("string", "s")}, path).get("string", "0"))
    if base == "time":  # metav1.Time{seconds=1, nanos=2}
        stamp = _message(_bytes(value, path), {1: ("seconds", "i"), 2: ("nanos", "i")}, path)
        if not stamp.get("seconds"):
            return None
        return datetime.fromtimestamp(stamp["seconds"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if base == "ios":  # intstr.IntOrString{type=1, intVal=2, strVal=3}
        schema: Schema = {1: ("type", "i"), 2: ("intVal", "i"), 3: ("strVal", "s")}
        parsed = _message(_bytes(value, path), schema, path)
        return parsed.get("strVal", "") if parsed.get("type") == 1 else parsed.get("intVal", 0)
    if not isinstance(value, int):
        raise ProtobufError(f"{path}: expected a varint field")
    if base == "i":
        return _signed(value)
    if base == "b":
        return bool(value)
    raise ProtobufError(f"{path}: unknown field kind {kind!r}")


def _empty(value: Any) -> bool:
    return value in ("", 0, False, None) or value == {} or value == []


def _message(data: bytes, schema: Schema, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, value in fields(data):
        if number not in schema:
            if value in (b"", 0):
                continue
            raise ProtobufError(
                f"{path or 'object'}: protobuf field {number} is not supported by the sandbox; "
                "send JSON (application/json) instead"
            )
        name, kind = schema[number]
        where = f"{path}.{name}" if path else name
        if kind == "skip":
            continue
        if isinstance(kind, tuple) and kind[0] == "list":
            item = kind[1]
            if isinstance(item, dict):
                decoded = _message(_bytes(value, where), item, where)
            else:
                decoded = _scalar(item, value, where)
            out.setdefault(name, []).append(decoded)
        elif isinstance(kind, tuple) and kind[0] == "map":
            entry_schema: Schema = {1: ("key", "s"), 2: ("value", kind[1])}
            entry = _message(_bytes(value, where), entry_schema, where)
            out.setdefault(name, {})[entry.get("key", "")] = entry.get("value", "")
        elif isinstance(kind, dict):
            nested = _message(_bytes(value, where), kind, where)
            if nested:
                out[name] = nested
        else:
            scalar = _scalar(kind, value, where)
            if kind.endswith("?") or not _empty(scalar):
                out[name] = scalar
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON-shaped object of a ``application/vnd.kubernetes.protobuf`` request body."""
    if not body.startswith(MAGIC):
        raise ProtobufError("a protobuf body must start with the k8s\\x00 envelope")
    envelope = dict(fields(body[len(MAGIC) :]))
    type_meta = envelope.get(1, b"")
    raw = envelope.get(2, b"")
    if not isinstance(type_meta, bytes) or not isinstance(raw, bytes):
        raise ProtobufError("malformed runtime.Unknown envelope")
    meta = _message(type_meta, {1: ("apiVersion", "s"), 2: ("kind", "s")}, "typeMeta")
    key = (meta.get("apiVersion", ""), meta.get("kind", ""))
    schema = KINDS.get(key)
    if schema is None:
        raise ProtobufError(
            f"protobuf bodies are supported for {', '.join(k for _, k in KINDS)} only; "
            f"send {key[1] or 'this object'} as JSON (application/json)"
        )
    return {"apiVersion": key[0], "kind": key[1], **_message(raw, schema, "")}
