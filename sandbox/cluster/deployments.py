"""The Deployment controller: keep each Deployment's pods and status true, through the API.

Level-triggered, like upstream: a work queue of Deployment keys fed by the Deployment and Pod
informers, plus a full pass every ``resync_seconds`` (progress deadlines and
``minReadySeconds`` are about time passing, which no event announces). Each pass reads the
informers' caches, asks :mod:`sandbox.cluster.rollout` for the next step, creates or deletes
Pods, and writes ``status`` when it changed. A failed write is logged and redone on the next
pass: no retry loop of its own, no state that a restart would lose.

Two details of real controllers that matter here:

- *expectations*: a pod we just created is put into the cache from the create response, and a
  pod we just deleted is remembered as deleted, so the next pass (often before the watch event
  arrives) neither creates it twice nor counts it as live;
- *garbage collection*: pods whose controller is a Deployment that no longer exists (checked
  with a read, not just the cache) are deleted, as the garbage collector would.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kubernetes.client import V1Pod

from runbooks.errors import ConflictError, NotFoundError, RunbookError
from sandbox.cluster import rollout
from sandbox.cluster.api import MERGE_PATCH, Kube, Store, ignore_missing
from sandbox.cluster.events import EventRecorder
from sandbox.cluster.objects import (
    POD_TEMPLATE_HASH,
    Obj,
    controller_of,
    is_available,
    is_ready,
    is_terminal,
    is_terminating,
    key,
    labels,
    meta,
    now,
    random_suffix,
    template_hash,
)
from sandbox.cluster.settings import ClusterSettings

logger = logging.getLogger("sandbox.cluster")


class DeploymentController:
    def __init__(
        self,
        kube: Kube,
        settings: ClusterSettings,
        deployments: Store,
        pods: Store,
        events: EventRecorder,
    ):
        self.kube = kube
        self.settings = settings
        self.deployments = deployments
        self.pods = pods
        self.events = events
        self._queue: set[tuple[str, str]] = set()
        self._cv = threading.Condition()
        self._stop = False
        self._deleted: dict[str, float] = {}  # pod uid -> when we asked for its deletion
        self._created: dict[str, tuple[float, Obj]] = {}  # pod uid -> (when, the pod we made)
        self._collect_now = False
        self._thread = threading.Thread(target=self._run, name="deployments", daemon=True)
        self.passes = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.ident is not None:  # started
            self._thread.join(10)

    def enqueue(self, namespace: str, name: str) -> None:
        with self._cv:
            self._queue.add((namespace, name))
            self._cv.notify_all()

    # -- informer handlers ---------------------------------------------------------------

    def on_deployment(self, kind: str, deployment: Obj, previous: Obj | None) -> None:
        if kind == "DELETED":
            self._collect_now = True
        self.enqueue(*key(deployment))

    def on_pod(self, kind: str, pod: Obj, previous: Obj | None) -> None:
        owner = controller_of(pod)
        if owner and owner.get("kind") == "Deployment":
            self.enqueue(meta(pod).get("namespace") or "", owner.get("name") or "")
        uid = str(meta(pod).get("uid"))
        self._created.pop(uid, None)  # observed (or gone): the cache knows it from now on
        if kind == "DELETED":
            self._deleted.pop(uid, None)

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        next_resync = time.monotonic()
        while True:
            with self._cv:
                while not self._stop and not self._queue:
                    wait = next_resync - time.monotonic()
                    if wait <= 0:
                        break
                    self._cv.wait(wait)
                if self._stop:
                    return
                batch, self._queue = self._queue, set()
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + self.settings.resync_seconds
                batch |= {key(d) for d in self.deployments.list()}
                self._collect_now = True
            if self._collect_now:
                self._collect_now = False
                self._collect_garbage()
            for namespace, name in sorted(batch):
                try:
                    self.reconcile(namespace, name)
                except Exception:
                    logger.exception("reconciling Deployment %s/%s failed", namespace, name)
            self.passes += 1

    def reconcile(self, namespace: str, name: str) -> None:
        deployment = self.deployments.get(namespace, name)
        if deployment is None or is_terminating(deployment):
            return
        uid = meta(deployment).get("uid")
        spec = deployment.get("spec") or {}
        template = spec.get("template") or {}
        collisions = int((deployment.get("status") or {}).get("collisionCount") or 0)
        new_hash = template_hash(template, collisions)
        group = f"{name}-{new_hash}"
        self._expire_expectations()
        owned = [p for p in self.pods.list(namespace) if (controller_of(p) or {}).get("uid") == uid]
        known = {meta(p).get("uid") for p in owned}
        owned += [  # created by us, not yet seen by the watch (e.g. lost from a re-LIST)
            p
            for pod_uid, (_, p) in list(self._created.items())
            if pod_uid not in known and (controller_of(p) or {}).get("uid") == uid
        ]
        live, old_terminating = [], 0
        for pod in owned:
            if is_terminating(pod) or str(meta(pod).get("uid")) in self._deleted:
                old_terminating += labels(pod).get(POD_TEMPLATE_HASH) != new_hash
            elif is_terminal(pod):
                self._delete(pod, "it finished")  # replaced like a failed pod of a ReplicaSet
            else:
                live.append(pod)
        at = now()
        min_ready = int(spec.get("minReadySeconds") or 0)
        facts = {p["metadata"]["name"]: _facts(p, min_ready, at) for p in live}
        had_group = any(f.hash == new_hash for f in facts.values())
        step = rollout.plan(
            rollout.limits(spec),
            new_hash,
            list(facts.values()),
            old_terminating=old_terminating,
            paused=bool(spec.get("paused")),
        )
        created = 0
        for _ in range(step.create):
            pod = self._create(deployment, template, new_hash)
            if pod is None:
                break
            created += 1
            facts[pod["metadata"]["name"]] = _facts(pod, min_ready, at)
        for pod_name in step.delete:
            pod = next(p for p in live if p["metadata"]["name"] == pod_name)
            if self._delete(pod, "the rollout scaled its group down"):
                facts.pop(pod_name, None)
        if created:
            size = sum(f.hash == new_hash for f in facts.values())
            self.events.record(
                deployment,
                "ScalingReplicaSet",
                f"Scaled up replica set {group} from {size - created} to {size}",
            )
        counts = rollout.counts(list(facts.values()), new_hash)
        status = rollout.status(
            deployment,
            counts,
            group_name=group,
            created_group=bool(created) and not had_group,
            at=at,
        )
        self._write_status(deployment, status)

    # -- effects --------------------------------------------------------------------------------

    def _create(self, deployment: Obj, template: dict[str, Any], new_hash: str) -> Obj | None:
        namespace, name = key(deployment)
        template_meta = template.get("metadata") or {}
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "namespace": namespace,
                "labels": dict(template_meta.get("labels") or {}) | {POD_TEMPLATE_HASH: new_hash},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": meta(deployment).get("uid"),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": dict(template.get("spec") or {}) | {"nodeName": self.settings.node_name},
        }
        if template_meta.get("annotations"):
            body["metadata"]["annotations"] = dict(template_meta["annotations"])
        for _ in range(3):
            body["metadata"]["name"] = f"{name}-{new_hash}-{random_suffix()}"
            try:
                created = self.kube.call(
                    f"create a Pod for Deployment {namespace}/{name}",
                    self.kube.core.create_namespaced_pod,
                    namespace,
                    V1Pod.model_validate(body),
                    idempotent=False,
                )
            except ConflictError:
                continue  # the random name was taken: draw another
            except NotFoundError:
                return None  # the namespace is being deleted with the Deployment in it
            except RunbookError as exc:
                logger.warning("Deployment %s/%s: %s", namespace, name, exc)
                self.events.record(deployment, "FailedCreate", str(exc), warning=True)
                return None
            pod = self.kube.to_dict(created)
            pod.setdefault("kind", "Pod")
            self._created[str(meta(pod).get("uid"))] = (time.monotonic(), pod)
            return pod
        return None

    def _delete(self, pod: Obj, why: str) -> bool:
        namespace, name = key(pod)
        uid = str(meta(pod).get("uid"))
        try:
            ignore_missing(
                lambda: self.kube.call(
                    f"delete Pod {namespace}/{name} ({why})",
                    self.kube.core.delete_namespaced_pod,
                    name,
                    namespace,
                    idempotent=True,
                )
            )
        except RunbookError as exc:
            logger.warning("%s", exc)
            return False
        self._deleted[uid] = time.monotonic()
        return True

    def _expire_expectations(self) -> None:
        """Forget expectations the watch never confirmed within a minute (upstream: 5 min)."""
        horizon = time.monotonic() - 60.0
        for uid, when in list(self._deleted.items()):
            if when < horizon:
                self._deleted.pop(uid, None)
        for uid, (when, _) in list(self._created.items()):
            if when < horizon:
                self._created.pop(uid, None)

    def _write_status(self, deployment: Obj, status: dict[str, Any]) -> None:
        current = deployment.get("status") or {}
        if current == status:
            return
        namespace, name = key(deployment)
        patch: dict[str, Any] = {k: None for k in current if k not in status} | status
        body = {
            "metadata": {"resourceVersion": meta(deployment).get("resourceVersion")},
            "status": patch,
        }
        try:
            updated = self.kube.call(
                f"update the status of Deployment {namespace}/{name}",
                self.kube.apps.patch_namespaced_deployment_status,
                name,
                namespace,
                body,
                _content_type=MERGE_PATCH,
                idempotent=False,
            )
        except ConflictError:
            self.enqueue(namespace, name)  # the watch brings the newer object; redo the pass
            return
        except NotFoundError:
            return
        except RunbookError as exc:
            logger.warning("%s", exc)
            return
        fresh = self.kube.to_dict(updated)
        fresh.setdefault("kind", "Deployment")
        self.deployments.put_if_newer(fresh)

    def _collect_garbage(self) -> None:
        """Delete pods whose owning Deployment is gone (verified by a read, not the cache)."""
        live = {meta(d).get("uid") for d in self.deployments.list()}
        orphans: dict[tuple[str, str, str], list[Obj]] = {}
        for pod in self.pods.list():
            owner = controller_of(pod)
            if not owner or owner.get("kind") != "Deployment" or owner.get("uid") in live:
                continue
            if is_terminating(pod) or str(meta(pod).get("uid")) in self._deleted:
                continue
            ref = (meta(pod).get("namespace") or "", owner.get("name") or "", owner.get("uid"))
            orphans.setdefault(ref, []).append(pod)
        for (namespace, name, uid), pods in orphans.items():
            try:
                found = self.kube.call(
                    f"read Deployment {namespace}/{name}",
                    self.kube.apps.read_namespaced_deployment,
                    name,
                    namespace,
                )
                if found.metadata.uid == uid:
                    continue  # the cache lags; the owner is alive
            except NotFoundError:
                pass
            except RunbookError as exc:
                logger.warning("garbage collection: %s", exc)
                continue
            for pod in pods:
                self._delete(pod, f"its Deployment {name} was deleted")


def _facts(pod: Obj, min_ready_seconds: int, at: Any) -> rollout.PodFacts:
    return rollout.PodFacts(
        name=pod["metadata"]["name"],
        hash=labels(pod).get(POD_TEMPLATE_HASH, ""),
        ready=is_ready(pod),
        available=is_available(pod, min_ready_seconds, at),
        running=(pod.get("status") or {}).get("phase") == "Running",
        created=str(meta(pod).get("creationTimestamp") or ""),
    )
