"""The object store: every write of the emulator goes through here, under one lock.

It owns what the real API server keeps in etcd and its registries: objects by (group, resource,
namespace, name); one global ``resourceVersion`` counter (served as a string); ``uid``,
``creationTimestamp`` and ``generation`` (1 on create, +1 only when ``.spec`` changes, or for
custom resources anything but metadata/status); optimistic concurrency (a stale
``resourceVersion`` on update or patch is a 409 Conflict); status-subresource semantics (writes
to the main resource keep ``.status``, writes to ``/status`` change only ``.status``); no-op
updates that change nothing keep the ``resourceVersion`` and emit no event; deletion with
finalizers (``deletionTimestamp``, removed when the last finalizer goes), owner-reference
garbage collection (background, synchronous here) and namespace deletion of everything inside.
With ``graceful_pod_deletion`` a pod bound to a node (``spec.nodeName``) is deleted the real
way: ``deletionTimestamp`` = now + grace period, and it stays until the kubelet deletes it with
grace 0 once its containers stopped; without it (the default for now) pods go at once, as
unscheduled pods do on a real cluster.

Watches: each mutation is appended to a bounded history and fanned out to per-watch queues, under
the lock, so a watch started from ``resourceVersion`` N replays exactly the events after N and
then continues live with nothing lost or duplicated. A ``resourceVersion`` older than the
history is 410 Expired, as after an etcd compaction.

Stored objects are never mutated in place: each write stores a fresh dict, so readers may
serialise what they got outside the lock.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import copy
import json
import queue
import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.kube import errors
from sandbox.kube.allocation import ServiceAllocator
from sandbox.kube.defaults import apply_defaults, initial_status
from sandbox.kube.patch import APPLY_PATCH, apply_patch
from sandbox.kube.resources import Registry, ResourceType, types_from_crd
from sandbox.kube.selectors import (
    FieldSelector,
    LabelSelector,
    field_value,
    selector_from_object,
)
from sandbox.kube.statuses import validate_status
from sandbox.kube.validation import validate, validate_scale

Obj = dict[str, Any]
NAMESPACES = ("", "namespaces")
PODS = ("", "pods")
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
)
_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    """One change: ``new`` is the object after it (for DELETED, its last state)."""

    rv: int
    type: str
    key: tuple[str, str]
    namespace: str
    new: Obj
    old: Obj | None = None


@dataclass(eq=False)
class Watcher:
    key: tuple[str, str]
    namespace: str | None
    events: queue.SimpleQueue[Event | None] = field(default_factory=queue.SimpleQueue)
    start_rv: int = 0


def ordered(obj: Obj) -> Obj:
    """Keys in the order the real server writes them (kind, apiVersion, metadata, ..., status)."""
    head = {k: obj[k] for k in ("kind", "apiVersion", "metadata") if k in obj}
    rest = {k: v for k, v in obj.items() if k not in head and k != "status"}
    out = {**head, **rest}
    if "status" in obj:
        out["status"] = obj["status"]
    meta = out.get("metadata")
    if isinstance(meta, dict):
        ranked = {k: meta[k] for k in _META_ORDER if k in meta}
        ranked.update({k: v for k, v in meta.items() if k not in ranked})
        out["metadata"] = ranked
    return out


def matches(obj: Obj, resource: ResourceType, labels: LabelSelector, fields: FieldSelector) -> bool:
    meta = obj.get("metadata") or {}
    if not labels.matches(meta.get("labels") or {}):
        return False
    if not fields.requirements:
        return True
    values = {name: field_value(obj, resource.field_path(name)) for name in fields.fields()}
    return fields.matches(values)


class Store:
    def __init__(
        self,
        registry: Registry | None = None,
        *,
        history: int = 10_000,
        graceful_pod_deletion: bool = False,
    ):
        self.lock = threading.RLock()
        self.registry = registry or Registry()
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = collections.defaultdict(
            dict
        )
        self._rv = 0
        self._history: collections.deque[Event] = collections.deque()
        self._history_limit = history
        self._compacted = 0  # every event with rv <= this is gone from the history
        self._watchers: set[Watcher] = set()
        self._closed = False
        self.services = ServiceAllocator()
        self.graceful_pod_deletion = graceful_pod_deletion
        self._rng = random.Random()
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.resource("", "v1", "namespaces"), "", {"metadata": {"name": name}})

    # -- lookups -------------------------------------------------------------------------------

    def resource(self, group: str, version: str, plural: str) -> ResourceType:
        resource = self.registry.lookup(group, version, plural)
        if resource is None:
            raise errors.path_not_found()
        return resource

    @property
    def resource_version(self) -> int:
        return self._rv

    def _get(self, resource: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._objects[resource.key].get((namespace if resource.namespaced else "", name))
        if obj is None:
            raise errors.not_found(resource.plural, resource.group, name)
        return obj

    def get(self, resource: ResourceType, namespace: str, name: str) -> Obj:
        with self.lock:
            return self.view(resource, self._get(resource, namespace, name))

    def view(self, resource: ResourceType, obj: Obj) -> Obj:
        """The object as served through ``resource`` (custom resources: its apiVersion)."""
        if resource.builtin or obj.get("apiVersion") == resource.api_version:
            return obj
        return {**obj, "apiVersion": resource.api_version}

    def list(
        self,
        resource: ResourceType,
        namespace: str | None,
        labels: LabelSelector = LabelSelector(),  # noqa: B008
        fields: FieldSelector = FieldSelector(),  # noqa: B008
        *,
        limit: int = 0,
        token: str | None = None,
    ) -> tuple[list[Obj], str, str | None, int | None]:
        """(items, resourceVersion, continue token, remainingItemCount)."""
        with self.lock:
            start = _decode_continue(token) if token else None
            items = [
                self.view(resource, obj)
                for (ns, name), obj in sorted(self._objects[resource.key].items())
                if (namespace is None or ns == namespace)
                and (start is None or (ns, name) > start)
                and matches(obj, resource, labels, fields)
            ]
            rv = str(self._rv)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            following = _encode_continue(rv, last.get("namespace", ""), last["name"])
            return items[:limit], rv, following, len(items) - limit
        return items, rv, None, None

    # -- writes --------------------------------------------------------------------------------

    def _commit(self, resource: ResourceType, kind: str, obj: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        obj = ordered(obj)
        slot = (meta.get("namespace", "") if resource.namespaced else "", meta["name"])
        if kind == "DELETED":
            self._objects[resource.key].pop(slot, None)
        else:
            self._objects[resource.key][slot] = obj
        event = Event(self._rv, kind, resource.key, slot[0], obj, old)
        self._history.append(event)
        while len(self._history) > self._history_limit:
            self._compacted = self._history.popleft().rv
        for watcher in self._watchers:
            watcher.events.put(event)
        return obj

    def _normalise(self, resource: ResourceType, namespace: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        kind = obj.get("kind")
        if kind and kind != resource.kind:
            raise errors.bad_request(
                f"the object provided is unrecognized (must be of type {resource.kind}): "
                f"kind {kind!r} does not match the resource {resource.plural!r}"
            )
        version = obj.get("apiVersion")
        if version and version != resource.api_version:
            served = self.registry.group_versions().get(resource.group, [])
            if resource.builtin or version not in {f"{resource.group}/{v}" for v in served}:
                raise errors.bad_request(
                    f"the API version in the data ({version}) does not match the expected API "
                    f"version ({resource.api_version})"
                )
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        for key in ("managedFields", "selfLink"):
            meta.pop(key, None)
        if resource.namespaced:
            given = meta.get("namespace")
            if given and given != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def create(
        self, resource: ResourceType, namespace: str, body: Any, *, dry_run: bool = False
    ) -> Obj:
        with self.lock:
            obj = self._normalise(resource, namespace, body)
            meta = obj["metadata"]
            if meta.get("resourceVersion"):
                raise errors.bad_request(
                    "resourceVersion should not be set on objects to be created"
                )
            for key in _SYSTEM_META:
                meta.pop(key, None)
            if not meta.get("name") and isinstance(meta.get("generateName"), str):
                meta["name"] = self._generate_name(resource, namespace, meta["generateName"])
            if resource.namespaced and ("", namespace) not in self._objects[NAMESPACES]:
                raise errors.not_found("namespaces", "", namespace)
            status = initial_status(resource, obj)
            obj.pop("status", None)
            if status is not None:
                obj["status"] = status
            obj = apply_defaults(resource, obj)
            validate(resource, obj, None)
            name = obj["metadata"]["name"]
            if (namespace if resource.namespaced else "", name) in self._objects[resource.key]:
                raise errors.already_exists(resource.plural, resource.group, name)
            self._allocate(resource, obj, None, commit=not dry_run)
            meta = obj["metadata"]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if resource.generation:
                meta["generation"] = 1
            if resource.key == CRDS:
                self._stamp_conditions(obj)
            if dry_run:
                meta["resourceVersion"] = ""
                return ordered(obj)
            created = self._commit(resource, "ADDED", obj, None)
            if resource.key == CRDS:
                self.registry.set_crd(name, types_from_crd(created))
            return self.view(resource, created)

    def _generate_name(self, resource: ResourceType, namespace: str, prefix: str) -> str:
        taken = self._objects[resource.key]
        for _ in range(10):
            name = prefix[:58] + "".join(self._rng.choice(_NAME_CHARS) for _ in range(5))
            if (namespace if resource.namespaced else "", name) not in taken:
                return name
        raise errors.already_exists(resource.plural, resource.group, prefix)

    def _stamp_conditions(self, obj: Obj) -> None:
        for condition in (obj.get("status") or {}).get("conditions") or ():
            condition.setdefault("lastTransitionTime", now_rfc3339())

    def _allocate(self, resource: ResourceType, obj: Obj, old: Obj | None, *, commit: bool) -> None:
        if resource.key == ("", "services"):
            owner = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            self.services.assign(owner, obj, old, commit=commit)

    def update(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        with self.lock:
            old = self._get(resource, namespace, name)
            obj = self._normalise(resource, namespace, body)
            meta = obj["metadata"]
            if meta.get("name") != name:
                raise errors.bad_request(
                    f"the name of the object ({meta.get('name') or ''}) does not match the name "
                    f"on the URL ({name})"
                )
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(resource.plural, resource.group, name)
            if subresource == "status":
                new = copy.deepcopy(old)
                new["apiVersion"] = obj["apiVersion"]
                if "status" in obj:
                    new["status"] = obj["status"]
                else:
                    new.pop("status", None)
                validate_status(resource, new)
            else:
                new = obj
                for key in _SYSTEM_META:
                    new["metadata"].pop(key, None)
                    if key in old["metadata"]:
                        new["metadata"][key] = old["metadata"][key]
                if resource.has_status():
                    new.pop("status", None)
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                new = apply_defaults(resource, new)
                validate(resource, new, old)
                self._allocate(resource, new, old, commit=not dry_run)
                if resource.generation and _spec_changed(resource, old, new):
                    new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if ordered(new) == old or dry_run:
                return self.view(resource, ordered(new))
            old_meta = old["metadata"]
            if (
                old_meta.get("deletionTimestamp")
                and old_meta.get("deletionGracePeriodSeconds") == 0
                and not new["metadata"].get("finalizers")
            ):  # the last finalizer went: the deletion completes
                return self.view(resource, self._remove(resource, new))
            updated = self._commit(resource, "MODIFIED", new, old)
            if resource.key == CRDS:
                self.registry.set_crd(name, types_from_crd(updated))
            return self.view(resource, updated)

    def patch(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        with self.lock:
            if content_type == APPLY_PATCH and subresource is None:
                exists = (namespace if resource.namespaced else "", name) in self._objects[
                    resource.key
                ]
                if not exists:
                    if isinstance(patch, dict):
                        patch.setdefault("metadata", {}).setdefault("name", name)
                    return self.create(resource, namespace, patch, dry_run=dry_run)
            if subresource == "scale":
                current = self.get_scale(resource, namespace, name)
            else:
                current = copy.deepcopy(self.view(resource, self._get(resource, namespace, name)))
            patched = apply_patch(resource, content_type, current, patch)
            if subresource == "scale":
                return self.update_scale(resource, namespace, name, patched, dry_run=dry_run)
            return self.update(
                resource, namespace, name, patched, subresource=subresource, dry_run=dry_run
            )

    # -- scale ---------------------------------------------------------------------------------

    def get_scale(self, resource: ResourceType, namespace: str, name: str) -> Obj:
        with self.lock:
            obj = self._get(resource, namespace, name)
        meta = obj["metadata"]
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        try:
            selector = str(selector_from_object(spec.get("selector")))
        except ValueError:
            selector = ""
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": spec.get("replicas", 0)},
            "status": {"replicas": status.get("replicas", 0), "selector": selector},
        }

    def update_scale(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        scale: Any,
        *,
        dry_run: bool = False,
    ) -> Obj:
        with self.lock:
            old = self._get(resource, namespace, name)
            if not isinstance(scale, dict):
                raise errors.bad_request("the request body must be a Scale object")
            meta = scale.get("metadata") or {}
            if meta.get("name") and meta["name"] != name:
                raise errors.bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the URL "
                    f"({name})"
                )
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(resource.plural, resource.group, name)
            scale = {**scale, "metadata": {**meta, "name": name}}
            validate_scale(resource, scale)
            replicas = (scale.get("spec") or {}).get("replicas", 0)
            body = copy.deepcopy(old)
            body["spec"]["replicas"] = replicas
            self.update(resource, namespace, name, body, dry_run=dry_run)
            return self.get_scale(resource, namespace, name)

    # -- deletes -------------------------------------------------------------------------------

    def delete(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        options: Obj | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[int, Obj]:
        """(HTTP code, body): the object, or a ``Status`` for kinds that answer with one."""
        options = options or {}
        with self.lock:
            obj = self._get(resource, namespace, name)
            meta = obj["metadata"]
            preconditions = options.get("preconditions") or {}
            for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(key)
                if wanted and wanted != meta.get(key):
                    raise errors.conflict(
                        resource.plural,
                        resource.group,
                        name,
                        f"Precondition failed: {label} in precondition: {wanted}, {label} in "
                        f"object meta: {meta.get(key)}",
                    )
            if resource.key == NAMESPACES and name in PROTECTED_NAMESPACES:
                raise errors.forbidden("namespaces", "", name, "this namespace may not be deleted")
            if dry_run:
                return 200, self.view(resource, obj)
            graceful = resource.key == PODS and self.graceful_pod_deletion
            grace = _grace_seconds(obj, options) if graceful else 0
            if grace > 0 or (meta.get("finalizers") and resource.key != NAMESPACES):
                return 200, self.view(resource, self._mark_deleted(resource, obj, grace))
            orphan = options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents")
            gone = self._remove(resource, obj, orphan=bool(orphan))
        if resource.returns_deleted_object:
            return 200, self.view(resource, gone)
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                **({"group": resource.group} if resource.group else {}),
                "kind": resource.plural,
                "uid": gone["metadata"]["uid"],
            },
        }

    def _mark_deleted(self, resource: ResourceType, obj: Obj, grace: int) -> Obj:
        """Graceful deletion (a pod on a node) or finalizers pending: set deletionTimestamp.

        The object stays, ``deletionTimestamp`` = now + grace; a later delete can only shorten
        the grace period. The kubelet deletes a pod with grace 0 once its containers stopped;
        an object with finalizers goes when the last finalizer is removed.
        """
        meta = obj["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current is not None and current <= grace:
            return obj
        if grace == 0 and not meta.get("finalizers"):
            return self._remove(resource, obj)
        marked = copy.deepcopy(obj)
        stamp = datetime.now(UTC) + timedelta(seconds=grace)
        marked["metadata"]["deletionTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        marked["metadata"]["deletionGracePeriodSeconds"] = grace
        return self._commit(resource, "MODIFIED", marked, obj)

    def _remove(self, resource: ResourceType, obj: Obj, *, orphan: bool = False) -> Obj:
        meta = obj["metadata"]
        if resource.key == NAMESPACES:
            terminating = copy.deepcopy(obj)
            terminating["metadata"].setdefault("deletionTimestamp", now_rfc3339())
            terminating["status"] = {"phase": "Terminating"}
            for key in list(self._objects):
                for (ns, _), child in list(self._objects[key].items()):
                    if ns == meta["name"]:
                        self._remove(self._type_of(key), child, orphan=True)
            obj = terminating
        if resource.key == CRDS:
            types = self.registry.remove_crd(meta["name"])
            if types:
                for child in list(self._objects[types[0].key].values()):
                    self._remove(types[0], child, orphan=True)
        if resource.key == ("", "services"):
            self.services.release((meta.get("namespace", ""), meta["name"]))
        gone = self._commit(resource, "DELETED", copy.deepcopy(obj), obj)
        if not orphan:
            self._collect_dependents(meta.get("namespace", ""), meta["uid"])
        return gone

    def _collect_dependents(self, namespace: str, owner_uid: str) -> None:
        for key in list(self._objects):
            for (ns, _), child in list(self._objects[key].items()):
                refs = child["metadata"].get("ownerReferences") or ()
                if (not namespace or ns == namespace) and any(
                    r.get("uid") == owner_uid for r in refs
                ):
                    with contextlib.suppress(errors.ApiError):  # gone already: fine
                        self.delete(self._type_of(key), ns, child["metadata"]["name"])

    def _type_of(self, key: tuple[str, str]) -> ResourceType:
        for resource in self.registry.storage_types():
            if resource.key == key:
                return resource
        raise errors.internal(f"no served type for {key}")

    def delete_collection(
        self,
        resource: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        options: Obj | None = None,
        *,
        dry_run: bool = False,
    ) -> list[Obj]:
        with self.lock:
            items, _, _, _ = self.list(resource, namespace, labels, fields)
            deleted = []
            for item in items:
                meta = item["metadata"]
                if resource.key == NAMESPACES and meta["name"] in PROTECTED_NAMESPACES:
                    continue
                try:
                    _, body = self.delete(
                        resource, meta.get("namespace", ""), meta["name"], options, dry_run=dry_run
                    )
                except errors.ApiError as exc:
                    if exc.code == 404:
                        continue
                    raise
                deleted.append(body if body.get("kind") != "Status" else item)
            return deleted

    # -- watches -------------------------------------------------------------------------------

    def watch(self, resource: ResourceType, namespace: str | None, since: str | None) -> Watcher:
        """Register a watch; its queue starts with the events a client must see first."""
        with self.lock:
            if self._closed:
                raise errors.ApiError(503, "ServiceUnavailable", "the server is shutting down")
            watcher = Watcher(resource.key, namespace)
            if since in (None, "", "0"):
                for (ns, _), obj in sorted(self._objects[resource.key].items()):
                    if namespace is None or ns == namespace:
                        rv = int(obj["metadata"]["resourceVersion"])
                        watcher.events.put(Event(rv, "ADDED", resource.key, ns, obj))
                watcher.start_rv = self._rv
            else:
                try:
                    start = int(since)
                except ValueError:
                    raise errors.bad_request(f"invalid resource version: {since}") from None
                if start < self._compacted:
                    raise errors.expired(
                        f"too old resource version: {start} ({self._compacted + 1})"
                    )
                for event in self._history:
                    if event.rv > start:
                        watcher.events.put(event)
                watcher.start_rv = start
            self._watchers.add(watcher)
            return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self.lock:
            self._watchers.discard(watcher)

    def close(self) -> None:
        """End every watch (their queues get ``None``); further watches are refused."""
        with self.lock:
            self._closed = True
            for watcher in self._watchers:
                watcher.events.put(None)
            self._watchers.clear()

    def compact(self) -> None:
        """Forget the whole history (an etcd compaction): older resourceVersions expire."""
        with self.lock:
            self._history.clear()
            self._compacted = self._rv


def _grace_seconds(pod: Obj, options: Obj) -> int:
    """The graceful-deletion period of a pod: 0 (at once) when no node runs it or it ended."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    requested = options.get("gracePeriodSeconds")
    if requested is None:
        requested = spec.get("terminationGracePeriodSeconds", 30)
    try:
        return max(int(requested), 0)
    except (TypeError, ValueError):
        raise errors.bad_request(f"invalid gracePeriodSeconds: {requested!r}") from None


def _spec_changed(resource: ResourceType, old: Obj, new: Obj) -> bool:
    if resource.builtin:
        return old.get("spec") != new.get("spec")
    ignore = {"metadata", "status"} if resource.has_status() else {"metadata"}
    ignore |= {"apiVersion", "kind"}
    return {k: v for k, v in old.items() if k not in ignore} != {
        k: v for k, v in new.items() if k not in ignore
    }


def _encode_continue(rv: str, namespace: str, name: str) -> str:
    raw = json.dumps({"rv": rv, "start": [namespace, name]}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        namespace, name = data["start"]
        return str(namespace), str(name)
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request(f"continue key is not valid: {token}") from None
