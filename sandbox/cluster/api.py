"""The cluster's only door to the API server: the official client, our retry layer, informers.

Why this shape:

- every call goes through ``kubernetes.client`` with urllib3's hidden retries off
  (:func:`~runbooks.resilience.no_urllib3_retries`) and our layer on
  (:func:`~runbooks.resilience.call_kubernetes`): reads are retried a little, writes are not,
  errors arrive as the project's exception tree. The controller is level-triggered, so a failed
  write is simply tried again on the next pass; the layer is this cluster's own instance with a
  short breaker wait, so an emulator fault injected for a runbook test never stalls the
  sandbox's controller for long, nor shares a breaker with a runbook;
- an :class:`Informer` per kind does what client-go's does: LIST, then WATCH from the list's
  ``resourceVersion``, re-watch when the server ends the watch, re-LIST on ``410 Gone`` or any
  error (with a bounded, stop-aware back-off), and a full re-LIST every ``relist_seconds``.
  Objects are decoded by the client's strict models (the proof that the emulator sends what a
  real server sends) and stored as the wire-format dicts those models serialise to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.watch
from kubernetes.client.exceptions import ApiException

from decisions.backoff import Backoff
from decisions.breaker import BreakerSettings
from decisions.budget import RetryBudgetSettings
from runbooks.errors import NotFoundError, RunbookError
from runbooks.resilience import Resilience, ResiliencePolicy, call_kubernetes, no_urllib3_retries
from sandbox.cluster.objects import Obj, key

T = TypeVar("T")
logger = logging.getLogger("sandbox.cluster")

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "runbooks-sandbox-cluster/1.0"
"""Our requests say who they are, so an emulator fault can be aimed at a runbook, not at us."""

_LAYER = ResiliencePolicy(
    backoff=Backoff(base_seconds=0.05, cap_seconds=1.0, max_attempts=3, max_total_seconds=5.0),
    budget=RetryBudgetSettings(min_retries_per_window=20),
    breaker=BreakerSettings(failure_rate_percent=100.0, minimum_calls=20, open_seconds=1.0),
)


class _WireClient(kubernetes.client.ApiClient):
    """Serialises times as the API server writes them (``...Z``), not as ``isoformat()``.

    So a stored object's timestamps compare equal to the ones we generate, and what we send
    is what a Go client would send.
    """

    def sanitize_for_serialization(self, obj: Any) -> Any:
        if isinstance(obj, datetime):
            when = obj.astimezone(UTC) if obj.tzinfo else obj
            pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if when.microsecond else "%Y-%m-%dT%H:%M:%SZ"
            return when.strftime(pattern)
        return super().sanitize_for_serialization(obj)


class Kube:
    """Typed API groups on one ``ApiClient``, and :meth:`call` through the retry layer."""

    def __init__(self, url: str, *, timeout_seconds: float = 10.0):
        configuration = kubernetes.client.Configuration(host=url.rstrip("/"))
        no_urllib3_retries(configuration)
        configuration.connection_pool_maxsize = 64
        self.client = _WireClient(configuration)
        self.client.user_agent = USER_AGENT
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.apps = kubernetes.client.AppsV1Api(self.client)
        self.version = kubernetes.client.VersionApi(self.client)
        self.timeout = timeout_seconds
        self.resilience = Resilience(_LAYER)

    def call(
        self,
        action: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> T:
        """One API call, bounded and translated (``NotFoundError``, ``ConflictError``, ...)."""
        kwargs.setdefault("_request_timeout", self.timeout)
        return call_kubernetes(
            action,
            fn,
            *args,
            target="sandbox-cluster",
            idempotent=idempotent,
            resilience=self.resilience,
            **kwargs,
        )

    def to_dict(self, model: Any) -> Obj:
        return self.client.sanitize_for_serialization(model)

    def close(self) -> None:
        self.client.close()


def ignore_missing(action: Callable[[], T]) -> T | None:
    """Run ``action``; a 404 means the object is already gone, which is what we wanted."""
    try:
        return action()
    except NotFoundError:
        return None


Handler = Callable[[str, Obj, Obj | None], None]
"""``handler(event_type, object, previous)``; ``event_type`` is ADDED, MODIFIED or DELETED."""


class Store:
    """Thread-safe cache of one kind, keyed by (namespace, name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], Obj] = {}

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._items.get((namespace, name))

    def list(self, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            items = list(self._items.values())
        if namespace is None:
            return items
        return [o for o in items if (o.get("metadata") or {}).get("namespace") == namespace]

    def put(self, obj: Obj) -> Obj | None:
        with self._lock:
            previous = self._items.get(key(obj))
            self._items[key(obj)] = obj
            return previous

    def put_if_newer(self, obj: Obj) -> bool:
        """Store a write's response unless the watch already brought something newer."""
        with self._lock:
            current = self._items.get(key(obj))
            if current is not None and _rv(current) >= _rv(obj):
                return False
            self._items[key(obj)] = obj
            return True

    def pop(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._items.pop((namespace, name), None)

    def replace(self, objects: Iterable[Obj]) -> tuple[dict[tuple[str, str], Obj], dict]:
        with self._lock:
            previous = self._items
            self._items = {key(o): o for o in objects}
            return previous, dict(self._items)


def _rv(obj: Obj) -> int:
    value = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
    return int(value) if value.isdigit() else 0


class Informer:
    """LIST + WATCH of one kind in all namespaces, into a :class:`Store`, calling handlers.

    Handlers run on the informer's thread, in the order they were added, and must be quick
    (mark work, wake a worker): the service proxy is added before the pod runner, so a pod's
    endpoint is gone from the proxy before the runner sends its process SIGTERM.
    """

    def __init__(
        self,
        kube: Kube,
        kind: str,
        list_fn: Callable[..., Any],
        *,
        watch_timeout_seconds: int = 30,
        relist_seconds: float = 300.0,
    ):
        self.kube = kube
        self.kind = kind
        self.store = Store()
        self._list_fn = list_fn
        self._handlers: list[Handler] = []
        self._watch_timeout = watch_timeout_seconds
        self._relist = relist_seconds
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"informer-{kind}", daemon=True)
        self.errors = 0

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def start(self) -> None:
        self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 5.0
        while self._thread.is_alive() and time.monotonic() < deadline:
            watch = self._watch
            if watch is not None:
                watch.stop()  # shuts the watch's socket down, ending the blocking read
            self._thread.join(0.05)
        if self._thread.is_alive():
            logger.warning("the %s informer did not stop within 5s", self.kind)

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._list()
                self._synced.set()
                failures = 0
                relist_at = time.monotonic() + self._relist
                while not self._stop.is_set() and time.monotonic() < relist_at:
                    version = self._watch_once(version)
            except _Expired:
                continue
            except Exception as exc:
                if self._stop.is_set():
                    return
                failures += 1
                self.errors += 1
                wait = min(5.0, 0.1 * 2 ** min(failures, 6))
                logger.warning(
                    "%s informer: %s; listing again in %.1fs", self.kind, _describe(exc), wait
                )
                self._stop.wait(wait)

    def _list(self) -> str:
        listed = self.kube.call(f"list {self.kind}", self._list_fn)
        objects = [self.kube.to_dict(item) for item in listed.items or []]
        for obj in objects:
            obj.setdefault("kind", self.kind)
        previous, current = self.store.replace(objects)
        for k, obj in current.items():
            old = previous.get(k)
            if old is None:
                self._dispatch("ADDED", obj, None)
            elif _rv(old) != _rv(obj):
                self._dispatch("MODIFIED", obj, old)
        for k, old in previous.items():
            if k not in current:
                self._dispatch("DELETED", old, old)
        return str(listed.metadata.resource_version or "")

    def _watch_once(self, version: str) -> str:
        watch = kubernetes.watch.Watch()
        self._watch = watch
        if self._stop.is_set():
            return version
        try:
            for event in watch.stream(
                self._list_fn,
                resource_version=version,
                timeout_seconds=self._watch_timeout,
                _request_timeout=(5, self._watch_timeout + 10),
            ):
                kind = event.get("type")
                if kind == "BOOKMARK":
                    version = watch.resource_version or version
                    continue
                obj = self.kube.to_dict(event["object"])
                obj.setdefault("kind", self.kind)
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "DELETED":
                    previous = self.store.pop(*key(obj))
                    self._dispatch("DELETED", obj, previous)
                elif kind in ("ADDED", "MODIFIED"):
                    previous = self.store.put(obj)
                    self._dispatch("MODIFIED" if previous else "ADDED", obj, previous)
                if self._stop.is_set():
                    break
        except ApiException as exc:
            if exc.status == 410:
                raise _Expired from exc
            raise
        finally:
            self._watch = None
        return version

    def _dispatch(self, kind: str, obj: Obj, previous: Obj | None) -> None:
        for handler in self._handlers:
            try:
                handler(kind, obj, previous)
            except Exception:
                logger.exception("%s handler failed on %s %s/%s", self.kind, kind, *key(obj))


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): LIST again."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RunbookError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:300]}"
