"""The pod runner's bookkeeping: one :class:`~sandbox.cluster.kubelet.PodWorker` per Pod.

The Pod informer's handler (:meth:`PodRunner.on_pod`) starts a worker for every Pod bound to
this node (``spec.nodeName`` = the node's name, or empty: the sandbox has one node, so the
runner schedules too), forwards updates to it, and retires it when the Pod is deleted or
replaced by a new one of the same name (another uid). Retired workers keep running until their
processes have stopped, and :meth:`PodRunner.workers` lists them too, so "no process left"
can be waited for. A terminating Pod that no worker runs (e.g. from before a restart) gets a
short-lived worker that only finishes its deletion.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from runbooks.errors import NotFoundError
from sandbox.cluster.api import Kube, Store
from sandbox.cluster.events import EventRecorder
from sandbox.cluster.kubelet import PodWorker
from sandbox.cluster.objects import Obj, is_terminal, is_terminating, key, meta
from sandbox.cluster.settings import ClusterSettings

logger = logging.getLogger("sandbox.cluster")


class PodRunner:
    """Creates, updates and retires :class:`PodWorker` s from the Pod informer's events."""

    def __init__(
        self,
        kube: Kube,
        settings: ClusterSettings,
        state_dir: Path,
        events: EventRecorder,
        configmaps: Store,
    ):
        self.kube = kube
        self.settings = settings
        self.state_dir = state_dir
        self.events = events
        self.configmaps = configmaps
        self._lock = threading.Lock()
        self._workers: dict[tuple[str, str], PodWorker] = {}
        self._retiring: list[PodWorker] = []
        self._finalized: set[str] = set()  # uids whose containers were stopped for deletion
        self._stopped = False

    def ours(self, pod: Obj) -> bool:
        node = (pod.get("spec") or {}).get("nodeName")
        return node in (None, "", self.settings.node_name)

    def on_pod(self, kind: str, pod: Obj, previous: Obj | None) -> None:
        if self._stopped or not self.ours(pod):
            return
        k, uid = key(pod), str(meta(pod).get("uid") or "")
        with self._lock:
            worker = self._workers.get(k)
            if worker is not None and (kind == "DELETED" or worker.uid != uid):
                worker.deleted()
                self._retiring.append(self._workers.pop(k))
                worker = None
            if kind == "DELETED":
                self._finalized.discard(uid)
                return
            if worker is not None:
                worker.update(pod)
                return
            if is_terminating(pod):
                if uid not in self._finalized:
                    # a terminating pod we do not run (e.g. from before a restart): finish
                    # its deletion as the kubelet would once its containers are gone
                    self._finalized.add(uid)
                    worker = PodWorker(self, pod)
                    self._retiring.append(worker)
                    worker.start()
                return  # (or done already: a finalizer keeps the object, nothing left to do)
            if is_terminal(pod):
                return
            worker = PodWorker(self, pod)
            self._workers[k] = worker
        worker.start()

    def on_configmap(self, kind: str, configmap: Obj, previous: Obj | None) -> None:
        namespace, name = key(configmap)
        with self._lock:
            workers = [w for (ns, _), w in self._workers.items() if ns == namespace]
        for worker in workers:
            worker.configmap_changed(name)

    def _forget(self, worker: PodWorker) -> None:
        with self._lock:
            if worker.finalized:
                self._finalized.add(worker.uid)
            if self._workers.get((worker.namespace, worker.name)) is worker:
                del self._workers[(worker.namespace, worker.name)]
            if worker in self._retiring:
                self._retiring.remove(worker)

    def worker(self, namespace: str, name: str) -> PodWorker | None:
        with self._lock:
            return self._workers.get((namespace, name))

    def workers(self) -> list[PodWorker]:
        """Every worker still alive: running pods, and deleted ones still stopping."""
        with self._lock:
            return list(self._workers.values()) + list(self._retiring)

    def fetch_configmap(self, namespace: str, name: str) -> Obj | None:
        return self.configmaps.get(namespace, name)

    def fetch_secret(self, namespace: str, name: str) -> Obj | None:
        try:
            secret = self.kube.call(
                f"read Secret {namespace}/{name}",
                self.kube.core.read_namespaced_secret,
                name,
                namespace,
            )
        except NotFoundError:
            return None
        return self.kube.to_dict(secret)

    def stop(self) -> None:
        """End every pod process (SIGTERM all at once, then wait), leave the API alone."""
        self._stopped = True
        with self._lock:
            workers = list(self._workers.values()) + list(self._retiring)
        for worker in workers:
            worker.shutdown()
        deadline = time.monotonic() + self.settings.max_grace_seconds + 10
        for worker in workers:
            worker.join(max(0.1, deadline - time.monotonic()))
            if worker.alive():
                logger.error("pod worker %s/%s did not stop", worker.namespace, worker.name)
