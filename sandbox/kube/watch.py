"""Serving one watch: which events a watcher sees, bookmarks, timeouts, and the stream's end.

The real server filters watch events per watcher, and a selector turns changes into
appearances and disappearances: an object modified so that it *starts* matching is ``ADDED``
for that watcher, one modified so that it *stops* matching is ``DELETED`` (with its new state),
as in the apiserver's cacher (``watchCacheEvent`` with ``PrevObject``).

A watch ends after ``timeoutSeconds`` (the client then re-lists or resumes from the last
``resourceVersion`` it saw), when the client hangs up, or when the server stops. With
``allowWatchBookmarks`` it sends ``BOOKMARK`` events carrying only the current
``resourceVersion`` (every ``bookmark_interval`` seconds while idle, and the
``k8s.io/initial-events-end`` one after the initial events of ``sendInitialEvents``). A
``resourceVersion`` older than the store's history is one ``ERROR`` event (410 Expired).
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sandbox.kube import tables
from sandbox.kube.errors import ApiError
from sandbox.kube.resources import ResourceType
from sandbox.kube.selectors import FieldSelector, LabelSelector
from sandbox.kube.store import Event, Store, matches

_POLL_SECONDS = 0.1


class Stream(Protocol):
    """Where the events go: the HTTP handler's chunked response."""

    def start(self) -> None: ...
    def send(self, event: dict[str, Any]) -> None: ...
    def end(self) -> None: ...
    def gone(self) -> bool:
        """The client hung up or the server is stopping."""
        ...


@dataclass(frozen=True)
class WatchOptions:
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    timeout_seconds: float
    since: str | None = None
    bookmarks: bool = False
    initial_events_end: bool = False
    bookmark_interval: float = 5.0
    table: bool = False
    include_object: str = "Metadata"


def translate(
    event: Event,
    resource: ResourceType,
    namespace: str | None,
    labels: LabelSelector,
    fields: FieldSelector,
) -> tuple[str, dict[str, Any]] | None:
    """(type, object) to send for ``event``, or None when this watcher must not see it."""
    if event.key != resource.key or (namespace is not None and event.namespace != namespace):
        return None
    now = matches(event.new, resource, labels, fields)
    if event.type == "MODIFIED":
        before = event.old is not None and matches(event.old, resource, labels, fields)
        if now and before:
            return "MODIFIED", event.new
        if now:
            return "ADDED", event.new
        if before:
            return "DELETED", event.new
        return None
    return (event.type, event.new) if now else None


def bookmark(resource: ResourceType, resource_version: int, *, initial_end: bool = False) -> dict:
    """A BOOKMARK object: only ``kind``, ``apiVersion`` and ``metadata.resourceVersion``."""
    metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if initial_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": metadata}


def serve(store: Store, resource: ResourceType, options: WatchOptions, stream: Stream) -> None:
    """Stream the events of one watch until it times out, the client leaves or the server stops.

    Raises ``ApiError`` before anything is sent when the watch cannot start (except 410, which
    is sent as an ``ERROR`` event, as the real server does).
    """
    try:
        watcher = store.watch(resource, options.namespace, options.since)
    except ApiError as exc:
        if exc.code != 410:
            raise
        stream.start()
        stream.send({"type": "ERROR", "object": exc.status()})
        stream.end()
        return
    try:
        stream.start()
        if _pump(store, resource, options, stream, watcher):
            stream.end()
    finally:
        store.unwatch(watcher)


def _pump(
    store: Store, resource: ResourceType, options: WatchOptions, stream: Stream, watcher: Any
) -> bool:
    """Send events until the deadline; False when the client or the server went away."""
    deadline = time.monotonic() + options.timeout_seconds
    last_rv = watcher.start_rv
    initial_pending = options.initial_events_end
    last_bookmark = time.monotonic()
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            event = watcher.events.get(timeout=min(remaining, _POLL_SECONDS))
        except queue.Empty:
            if stream.gone():
                return False
            if initial_pending:
                stream.send(
                    {"type": "BOOKMARK", "object": bookmark(resource, last_rv, initial_end=True)}
                )
                initial_pending = False
            if options.bookmarks and time.monotonic() - last_bookmark >= options.bookmark_interval:
                stream.send({"type": "BOOKMARK", "object": bookmark(resource, last_rv)})
                last_bookmark = time.monotonic()
            continue
        if event is None:  # the store closed: the server is stopping
            return True
        last_rv = max(last_rv, event.rv)
        out = translate(event, resource, options.namespace, options.labels, options.fields)
        if out is None:
            continue
        kind, obj = out
        obj = store.view(resource, obj)
        if options.table:
            obj = tables.to_table(
                resource,
                [obj],
                resource_version=str(event.rv),
                include_object=options.include_object,
            )
        stream.send({"type": kind, "object": obj})
    return True
