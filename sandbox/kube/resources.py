"""What the emulator serves: resource types, and the discovery documents that describe them.

``kubectl`` and the dynamic client find resources through discovery (``/api``, ``/apis``,
``/api/v1``, ``/apis/<group>/<version>``), so each :class:`ResourceType` carries what an
``APIResource`` entry needs (kind, singular, short names, categories, verbs, subresources).
Built-in types are fixed; a CustomResourceDefinition adds one type per served version
(:func:`types_from_crd`), all sharing one storage, as the real server does (no conversion:
objects are stored as written and served with the requested ``apiVersion``).

Both kubectl 1.20 and 1.32 accept legacy discovery: 1.32 asks for the aggregated form first
(``Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList, ...,
application/json``) and falls back when the answer is a plain ``APIVersions`` / ``APIGroupList``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
METADATA_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    builtin: bool = True
    generation: bool = False
    returns_deleted_object: bool = False
    extra_fields: tuple[str, ...] = ()
    field_aliases: tuple[tuple[str, str], ...] = ()
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage identity: every version of a group's resource shares it."""
        return (self.group, self.plural)

    @property
    def selectable_fields(self) -> tuple[str, ...]:
        return METADATA_FIELDS + self.extra_fields

    def field_path(self, selector_field: str) -> str:
        """The object path a field-selector label reads (``source`` -> ``source.component``)."""
        return dict(self.field_aliases).get(selector_field, selector_field)

    def has_status(self) -> bool:
        return "status" in self.subresources

    def discovery(self) -> list[dict[str, Any]]:
        """The ``APIResource`` entries for this type and its subresources."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if "status" in self.subresources:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
        if "scale" in self.subresources:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
        return entries


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

BUILTIN: tuple[ResourceType, ...] = (
    ResourceType(
        "", "v1", "namespaces", "namespace", "Namespace", False, ("ns",),
        subresources=frozenset({"status"}), extra_fields=("status.phase",),
        returns_deleted_object=True,
    ),
    ResourceType(
        "", "v1", "pods", "pod", "Pod", True, ("po",), ("all",),
        subresources=frozenset({"status"}), extra_fields=_POD_FIELDS,
        returns_deleted_object=True, generation=True,
    ),
    ResourceType(
        "", "v1", "services", "service", "Service", True, ("svc",), ("all",),
        subresources=frozenset({"status"}), extra_fields=("spec.clusterIP", "spec.type"),
        returns_deleted_object=True,
    ),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "secrets", "secret", "Secret", True, extra_fields=("type",)),
    ResourceType(
        "", "v1", "events", "event", "Event", True, ("ev",), extra_fields=_EVENT_FIELDS,
        field_aliases=(("source", "source.component"),),
    ),
    ResourceType(
        "apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",), ("all",),
        subresources=frozenset({"status", "scale"}), generation=True,
    ),
    ResourceType(
        "apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ("rs",), ("all",),
        subresources=frozenset({"status", "scale"}), generation=True,
        extra_fields=("status.replicas",),
    ),
    ResourceType(
        "autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler",
        "HorizontalPodAutoscaler", True, ("hpa",), ("all",),
        subresources=frozenset({"status"}), generation=True,
    ),
    ResourceType(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition",
        "CustomResourceDefinition", False, ("crd", "crds"), ("api-extensions",),
        subresources=frozenset({"status"}), generation=True, returns_deleted_object=True,
    ),
)  # fmt: skip


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One :class:`ResourceType` per served version of a (validated) CRD."""
    spec = crd["spec"]
    names = spec["names"]
    types = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        types.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=frozenset(k for k in ("status", "scale") if k in subresources),
                builtin=False,
                generation=True,
                returns_deleted_object=True,
                extra_fields=tuple(
                    f["jsonPath"].lstrip(".") for f in version.get("selectableFields") or ()
                ),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                schema=schema,
            )
        )
    return types


class Registry:
    """The served types; replaced copy-on-write so readers never need the store lock."""

    def __init__(self, types: Iterable[ResourceType] = BUILTIN):
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crds: dict[str, list[ResourceType]] = {}
        for resource in types:
            self._types[(resource.group, resource.version, resource.plural)] = resource

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for resource in self._types.values():
            if resource.api_version == api_version and resource.kind == kind:
                return resource
        return None

    def storage_types(self) -> list[ResourceType]:
        """One type per storage key (the first served version)."""
        seen: dict[tuple[str, str], ResourceType] = {}
        for resource in self._types.values():
            seen.setdefault(resource.key, resource)
        return list(seen.values())

    def set_crd(self, name: str, types: list[ResourceType]) -> None:
        table = {k: v for k, v in self._types.items() if v not in self._crds.get(name, [])}
        for resource in types:
            table[(resource.group, resource.version, resource.plural)] = resource
        crds = dict(self._crds)
        crds[name] = types
        self._types, self._crds = table, crds

    def remove_crd(self, name: str) -> list[ResourceType]:
        crds = dict(self._crds)
        removed = crds.pop(name, [])
        self._types = {k: v for k, v in self._types.items() if v not in removed}
        self._crds = crds
        return removed

    def group_versions(self) -> dict[str, list[str]]:
        """Group -> served versions, in preference order (first is preferred)."""
        groups: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            versions = groups.setdefault(group, [])
            if version not in versions:
                versions.append(version)
        for versions in groups.values():
            versions.sort(key=_version_priority)
        return groups

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return [r for (g, v, _), r in self._types.items() if g == group and v == version]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA before beta before alpha, higher numbers first."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)
    stage = {"alpha": 2, "beta": 1, None: 0}[match.group(2)]
    return (stage, -int(match.group(1)), -int(match.group(3) or 0))


# -- discovery documents -----------------------------------------------------------------------


def version_info() -> dict[str, str]:
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0",
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(group)
    if not versions or not group:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = []
    for group in registry.group_versions():
        document = api_group(registry, group)
        if document:
            del document["kind"], document["apiVersion"]
            groups.append(document)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.resources(group, version)
    if not types:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for resource in types for entry in resource.discovery()],
    }
