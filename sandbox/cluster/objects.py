"""Small pure helpers on Kubernetes objects as the API sends them (camelCase JSON dicts).

Why dicts and not the client's models: the controller reads paths exactly as the API reference
writes them (``spec.template.metadata.labels``), hashes templates as data, and builds patches;
the informers still decode every object with the official client's strict models first, so a
field the emulator gets wrong fails loudly there, not silently here.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

POD_TEMPLATE_HASH = "pod-template-hash"
PORT_ANNOTATION = "sandbox.runbooks.dev/port"
"""The real loopback port of the pod's first container (``status.podIP`` stays 127.0.0.1)."""
PORTS_ANNOTATION = "sandbox.runbooks.dev/ports"
"""JSON ``{container name: real port}`` for every container of the pod."""
LOOPBACK = "127.0.0.1"

# Kubernetes' "safe" alphabet for generated names: no vowels, no 0/1/3 (apimachinery rand).
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return meta(obj).get("labels") or {}


def annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return meta(obj).get("annotations") or {}


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(when: datetime | None = None) -> str:
    """Seconds-resolution UTC time as the API server writes it (``2026-01-02T03:04:05Z``)."""
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def safe_encode(text: str) -> str:
    """apimachinery's ``rand.SafeEncodeString``: every rune mapped into the safe alphabet."""
    return "".join(_ALPHANUMS[ord(char) % len(_ALPHANUMS)] for char in text)


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_ALPHANUMS) for _ in range(length))


def _pruned(value: Any) -> Any:
    """Drop nulls and empty containers, so an absent field and ``null`` hash the same."""
    if isinstance(value, Mapping):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def template_hash(template: Mapping[str, Any], collision_count: int = 0) -> str:
    """A stable ``pod-template-hash``: FNV-1a 32 of the canonical JSON, safe-encoded.

    Like the real controller (FNV-32a of the template, then ``SafeEncodeString`` of its decimal
    value), so the labels look familiar (``5d59d67564``); the bytes hashed are canonical JSON
    rather than Go's spew dump, so the values differ from a real cluster's, and are stable
    across processes and runs. ``creationTimestamp`` is left out: it is not part of the spec.
    """
    template = dict(template)
    template_meta = dict(template.get("metadata") or {})
    template_meta.pop("creationTimestamp", None)
    template["metadata"] = template_meta
    data = json.dumps(_pruned(template), sort_keys=True, separators=(",", ":")).encode()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    if collision_count:
        value = ((value ^ collision_count) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(value))


def image_id(image: str) -> str:
    """A digest-shaped ``imageID`` for an image reference (we pull nothing, so we make one)."""
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: -(len(last) - last.index(":"))]
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{repository}@sha256:{digest}"


def split_image(image: str) -> tuple[str, str]:
    """``registry/demo/shop:v1`` -> (``registry/demo/shop``, ``v1``); tag ``latest`` if none."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    head, _, last = image.rpartition("/")
    if ":" in last:
        name, tag = last.split(":", 1)
    else:
        name, tag = last, "latest"
    return (f"{head}/{name}" if head else name), tag


# -- selectors ----------------------------------------------------------------------------------


def matches_labels(selector: Mapping[str, str] | None, target: Mapping[str, str]) -> bool:
    """Equality selector (a Service's ``spec.selector``); an empty selector selects nothing."""
    if not selector:
        return False
    return all(target.get(k) == v for k, v in selector.items())


def matches_selector(selector: Mapping[str, Any] | None, target: Mapping[str, str]) -> bool:
    """A ``LabelSelector`` (``matchLabels`` + ``matchExpressions``); empty selects nothing."""
    if not selector:
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(target.get(k) != v for k, v in match_labels.items()):
        return False
    for expression in expressions:
        name, operator = expression.get("key", ""), expression.get("operator", "")
        values = expression.get("values") or []
        present = name in target
        if operator == "In" and not (present and target[name] in values):
            return False
        if operator == "NotIn" and present and target[name] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def selector_text(selector: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items())) or "<none>"


# -- pods ---------------------------------------------------------------------------------------


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return item
    return None


def is_terminating(pod: Mapping[str, Any]) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Ready condition True, running, not being deleted: what an endpoint needs."""
    if is_terminating(pod) or is_terminal(pod):
        return False
    ready = condition(pod, "Ready")
    return bool(ready and ready.get("status") == "True")


def is_available(pod: Mapping[str, Any], min_ready_seconds: int, at: datetime) -> bool:
    """Ready for at least ``minReadySeconds`` (the Deployment's notion of available)."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    ready = condition(pod, "Ready") or {}
    since = parse_time(ready.get("lastTransitionTime"))
    return since is not None and (at - since).total_seconds() >= min_ready_seconds


def controller_of(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def real_ports(pod: Mapping[str, Any]) -> dict[str, int]:
    """``{container: real port}`` from the runner's annotations (empty before it ran)."""
    notes = annotations(pod)
    try:
        ports = json.loads(notes.get(PORTS_ANNOTATION) or "{}")
    except ValueError:
        ports = {}
    out = {str(k): int(v) for k, v in ports.items() if str(v).isdigit()}
    if not out and str(notes.get(PORT_ANNOTATION, "")).isdigit():
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        out[containers[0].get("name", "")] = int(notes[PORT_ANNOTATION])
    return out


def resolve_target_port(pod: Mapping[str, Any], target: int | str | None) -> int | None:
    """The real port that serves a Service's ``targetPort`` on this pod, or ``None``.

    Every container listens on one real port (its ``PORT``), so each declared container port
    maps to its container's real port. A number nobody declares goes to the first container (a
    real pod may listen on undeclared ports); a name nobody declares matches nothing, as in
    Kubernetes, and the pod is no endpoint for that Service port.
    """
    ports = real_ports(pod)
    if not ports:
        return None
    containers = (pod.get("spec") or {}).get("containers") or []
    for container in containers:
        for declared in container.get("ports") or []:
            hit = (
                declared.get("name") == target
                if isinstance(target, str)
                else declared.get("containerPort") == target
            )
            if hit and container.get("name") in ports:
                return ports[container["name"]]
    if isinstance(target, str) and not target.isdigit():
        return None
    first = containers[0].get("name") if containers else next(iter(ports))
    return ports.get(first) or next(iter(ports.values()))


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool, default: str) -> int:
    """``maxSurge`` / ``maxUnavailable``: an int, or a percentage of ``total`` rounded."""
    if value is None:
        value = default
    if isinstance(value, int):
        return max(0, value)
    text = str(value).strip()
    if text.endswith("%"):
        share = float(text[:-1]) * total / 100.0
        return max(0, math.ceil(share - 1e-9) if round_up else math.floor(share + 1e-9))
    return max(0, int(text))
