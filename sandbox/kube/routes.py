"""URL paths and media types of the Kubernetes REST API, parsed without touching any state.

Resource paths::

    /api/v1/<plural>[/<name>[/<subresource>]]                           cluster-scoped, or all
    /api/v1/namespaces/<ns>/<plural>[/<name>[/<subresource>]]           namespaced
    /apis/<group>/<version>/...                                         same shapes
    /api/v1/watch/...                                                   legacy watch prefix

``/api/v1/namespaces/<name>[/status|/finalize]`` is the Namespace object itself; the parser
tells the two apart by asking whether the third segment is a namespaced resource of that
group/version (``is_namespaced``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch: bool = False


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")

    def int(self, name: str) -> int | None:
        value = self.query.get(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            return None


def split(target: str) -> Request:
    parts = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    path = re.sub(r"/+", "/", parts.path)
    if len(path) > 1:
        path = path.rstrip("/")
    return Request(path, query)


def parse_resource_path(path: str, is_namespaced: Callable[[str, str, str], bool]) -> Route | None:
    """The :class:`Route` of a resource path, or None when ``path`` is not one."""
    segments = [s for s in path.split("/") if s]
    if len(segments) >= 3 and segments[0] == "api" and segments[1] == "v1":
        group, version, rest = "", "v1", segments[2:]
    elif len(segments) >= 4 and segments[0] == "apis":
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        return None
    watch = False
    if rest and rest[0] == "watch":
        watch, rest = True, rest[1:]
    if not rest:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3 and is_namespaced(group, version, rest[2]):
        if len(rest) > 5:
            return None
        return Route(group, version, rest[2], rest[1], _at(rest, 3), _at(rest, 4), watch)
    if len(rest) > 3:
        return None
    return Route(group, version, rest[0], None, _at(rest, 1), _at(rest, 2), watch)


def _at(items: list[str], index: int) -> str | None:
    return items[index] if len(items) > index else None


def media_type(header: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (header or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Accept:
    table: bool
    table_version: str
    acceptable: bool


def parse_accept(header: str | None) -> Accept:
    """Does the client want a ``Table`` (kubectl get), and can it read JSON at all?"""
    if not header:
        return Accept(False, "meta.k8s.io/v1", True)
    table, version, acceptable = False, "meta.k8s.io/v1", False
    for clause in header.split(","):
        kind, *params = (p.strip() for p in clause.split(";"))
        options = dict(p.split("=", 1) for p in params if "=" in p)
        kind = kind.lower()
        if kind in ("application/json", "application/*", "*/*", "application/yaml"):
            if options.get("as") == "Table" and options.get("g") == "meta.k8s.io":
                if not table:
                    table, version = True, f"meta.k8s.io/{options.get('v', 'v1')}"
                acceptable = True
            elif "as" not in options:
                acceptable = True
    return Accept(table, version, acceptable)
