"""The sandbox node's kubelet, for one Pod: its containers become local processes.

One :class:`PodWorker` thread per Pod (managed by :mod:`sandbox.cluster.runner`), because a
pod's life is a sequence of blocking steps (set up volumes, start, probe, stop with a grace
period) that reads best as one loop, and a demo runs a dozen pods, not thousands. The worker:

1. picks a real loopback port per container and writes it on the Pod (annotations
   ``sandbox.runbooks.dev/port`` and ``sandbox.runbooks.dev/ports``; ``status.podIP`` stays
   127.0.0.1 as every pod shares the host's network);
2. materialises its volumes and environment (:mod:`sandbox.cluster.podenv`), then runs each
   container's state machine (:mod:`sandbox.cluster.container`);
3. writes ``status`` (JSON merge patch of the whole status, lists replaced) whenever it
   changes: phase, conditions with transition times, containerStatuses, IPs, startTime,
   qosClass, all in the shapes the strict client models require;
4. on deletion (``deletionTimestamp`` set, or the object gone): reports not-ready first, then
   SIGTERM, waits the grace period (bounded), SIGKILL, and finally deletes the Pod with grace
   0, as the kubelet does once its containers are gone.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubernetes.client import V1DeleteOptions, V1Preconditions

from runbooks.errors import NotFoundError, RunbookError
from sandbox.cluster.api import MERGE_PATCH, ignore_missing
from sandbox.cluster.container import Container, known_command
from sandbox.cluster.objects import (
    LOOPBACK,
    PORT_ANNOTATION,
    PORTS_ANNOTATION,
    Obj,
    annotations,
    is_terminating,
    key,
    meta,
    rfc3339,
)
from sandbox.cluster.podenv import MountError, Volumes, container_env
from sandbox.cluster.process import ContainerProcess, allocate_port, release_port

if TYPE_CHECKING:
    from sandbox.cluster.runner import PodRunner

logger = logging.getLogger("sandbox.cluster")

_CONDITIONS = (
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
)


class PodWorker:
    """Runs one Pod (by uid) until it is deleted or the runner stops."""

    def __init__(self, runner: PodRunner, pod: Obj):
        self.runner = runner
        self.pod = pod
        self.namespace, self.name = key(pod)
        self.uid = str(meta(pod).get("uid") or "")
        self.settings = runner.settings
        self.root = runner.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.volumes = Volumes(pod, self.root / "volumes")
        self.start_time = rfc3339()
        self.containers: list[Container] = []
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._configmaps_changed: set[str] = set()
        self._new_spec: Obj | None = None
        self._deleting = is_terminating(pod)
        self._gone = False  # the Pod object no longer exists: no more API writes
        self._shutdown = False  # the runner stops: processes end, the API is left alone
        self._sent: dict[str, Any] | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self._set_up = False
        self.finalized = False  # its containers were stopped because the Pod is deleted
        self._annotated = False
        self._mount_warned = False
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    # -- called from other threads ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def update(self, pod: Obj) -> None:
        with self._lock:
            old_images = [
                c.get("image") for c in (self.pod.get("spec") or {}).get("containers", [])
            ]
            self.pod = pod
            new_images = [c.get("image") for c in (pod.get("spec") or {}).get("containers", [])]
            if new_images != old_images:
                self._new_spec = pod
            if is_terminating(pod):
                self._deleting = True
        self._wake.set()

    def deleted(self) -> None:
        self._gone = self._deleting = True
        self._wake.set()

    def configmap_changed(self, name: str) -> None:
        if name in self.volumes.configmaps():
            with self._lock:
                self._configmaps_changed.add(name)
            self._wake.set()

    def shutdown(self) -> None:
        self._shutdown = self._deleting = True
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def container(self, name: str | None = None) -> Container | None:
        for c in self.containers:
            if name is None or c.name == name:
                return c
        return None

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if not self._deleting:
                self._setup()
            while not self._deleting:
                self._wake.clear()  # before looking: a wake-up during this pass is kept
                now = time.monotonic()
                self._apply_changes(now)
                if not self._annotated:
                    self._annotate()
                if self._annotated and not self._set_up:
                    self._try_volumes(now)
                deadline = min((c.step(now) for c in self.containers), default=now + 1)
                if not self._set_up:
                    deadline = min(deadline, now + 0.5)
                self._write_status()
                self._wake.wait(max(0.0, min(deadline, now + 1.0) - time.monotonic()))
        except Exception:
            logger.exception(
                "pod %s/%s: the runner failed; stopping its containers", *key(self.pod)
            )
        finally:
            self._terminate()
            self.runner._forget(self)

    def _setup(self) -> None:
        spec = self.pod.get("spec") or {}
        label = f"{self.name}_{self.namespace}({self.uid})"
        policy = spec.get("restartPolicy") or "Always"
        previous = {
            s.get("name"): int(s.get("restartCount") or 0)
            for s in (self.pod.get("status") or {}).get("containerStatuses") or []
        }
        for c_spec in spec.get("containers") or []:
            container = Container(
                c_spec, label, policy, self.settings, self._recorder(c_spec.get("name", ""))
            )
            container.restart_count = previous.get(container.name, 0)
            if container.command is not None:
                container.port = allocate_port()
            self.containers.append(container)
        self.runner.events.record(
            self.pod,
            "Scheduled",
            f"Successfully assigned {self.namespace}/{self.name} to {self.settings.node_name}",
        )
        self._write_status()

    def _annotate(self) -> None:
        """Write the real ports on the Pod, where the proxy and tools look them up."""
        ports = {c.name: c.port for c in self.containers if c.port is not None}
        if not ports:
            self._annotated = True
            return
        notes = {PORT_ANNOTATION: str(next(iter(ports.values()))), PORTS_ANNOTATION: _json(ports)}
        if all(annotations(self.pod).get(k) == v for k, v in notes.items()):
            self._annotated = True
            return
        try:
            self.runner.kube.call(
                f"annotate Pod {self.namespace}/{self.name} with its ports",
                self.runner.kube.core.patch_namespaced_pod,
                self.name,
                self.namespace,
                {"metadata": {"annotations": notes}},
                _content_type=MERGE_PATCH,
                idempotent=True,
            )
            self._annotated = True
        except NotFoundError:
            self._gone = self._deleting = True
        except RunbookError as exc:
            logger.warning("pod %s/%s: %s (retrying)", self.namespace, self.name, exc)

    def _try_volumes(self, now: float) -> None:
        try:
            self.volumes.setup(self.runner.fetch_configmap, self.runner.fetch_secret)
        except MountError as exc:
            if not self._mount_warned:
                self._mount_warned = True
                self.runner.events.record(self.pod, "FailedMount", str(exc), warning=True)
            return
        for container in self.containers:
            process = self._process_for(container)
            container.begin(process, now)
        self._set_up = True

    def _process_for(self, container: Container) -> ContainerProcess:
        mounts = self.volumes.mounts(container.spec)
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = container_env(
            self.pod,
            container.spec,
            port=container.port or 0,
            mounts=mounts,
            fetch_configmap=self.runner.fetch_configmap,
            fetch_secret=self.runner.fetch_secret,
            node_name=self.settings.node_name,
            home=home,
        )
        return ContainerProcess(
            container.command or ("false",),
            env,
            cwd=home,
            log_dir=self.root / container.name,
        )

    def _apply_changes(self, now: float) -> None:
        with self._lock:
            changed, self._configmaps_changed = self._configmaps_changed, set()
            new_spec, self._new_spec = self._new_spec, None
        if self._set_up:
            for name in changed:
                self.volumes.refresh(name, self.runner.fetch_configmap)
        if new_spec is not None and self._set_up:
            specs = {c.get("name"): c for c in (new_spec.get("spec") or {}).get("containers", [])}
            for container in self.containers:
                c_spec = specs.get(container.name)
                if c_spec is not None and c_spec.get("image") != container.image:
                    known = known_command(self.settings, str(c_spec.get("image") or ""))
                    if container.port is None and known is not None:
                        container.port = allocate_port()
                        self._annotated = False  # the new port goes on the Pod first
                    container.spec = c_spec  # the new process's env comes from the new spec
                    container.replace_spec(c_spec, self._process_for(container), now)

    def _recorder(self, container: str) -> Callable[[str, str, bool], None]:
        def record(reason: str, message: str, warning: bool) -> None:
            if not self._shutdown:
                self.runner.events.record(
                    self.pod,
                    reason,
                    message,
                    warning=warning,
                    field_path=f"spec.containers{{{container}}}",
                )

        return record

    # -- status -----------------------------------------------------------------------------

    def _status(self, *, stopping: bool = False, final: bool = False) -> dict[str, Any]:
        statuses = [c.status() for c in self.containers]
        if stopping:
            for item in statuses:
                item["ready"] = False
        spec = self.pod.get("spec") or {}
        policy = spec.get("restartPolicy") or "Always"
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        unready = [s["name"] for s in statuses if not s["ready"]]
        ever_started = any(
            "running" in s["state"] or s["lastState"] or "terminated" in s["state"]
            for s in statuses
        )
        finished = [s["state"].get("terminated") for s in statuses]
        if statuses and all(finished) and (policy != "Always" or final):
            phase = "Succeeded" if all(t["exitCode"] == 0 for t in finished if t) else "Failed"
        elif ever_started:
            phase = "Running"
        else:
            phase = "Pending"
        values = {
            "PodReadyToStartContainers": ("True", "", ""),
            "Initialized": ("True", "", ""),
            "Ready": ("True", "", "")
            if all_ready
            else (
                "False",
                "ContainersNotReady",
                f"containers with unready status: [{' '.join(unready)}]",
            ),
            "ContainersReady": ("True", "", "")
            if all_ready
            else (
                "False",
                "ContainersNotReady",
                f"containers with unready status: [{' '.join(unready)}]",
            ),
            "PodScheduled": ("True", "", ""),
        }
        if phase == "Succeeded":
            values["Ready"] = values["ContainersReady"] = ("False", "PodCompleted", "")
        conditions = []
        for kind in _CONDITIONS:
            state, reason, message = values[kind]
            previous = self._transitions.get(kind)
            if previous is None or previous[0] != state:
                self._transitions[kind] = (state, rfc3339())
            item = {
                "type": kind,
                "status": state,
                "lastProbeTime": None,
                "lastTransitionTime": self._transitions[kind][1],
            }
            if reason:
                item["reason"] = reason
            if message:
                item["message"] = message
            conditions.append(item)
        return {
            "phase": phase,
            "conditions": conditions,
            "hostIP": LOOPBACK,
            "hostIPs": [{"ip": LOOPBACK}],
            "podIP": LOOPBACK,
            "podIPs": [{"ip": LOOPBACK}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": qos_class(spec),
        }

    def _write_status(self, *, stopping: bool = False, final: bool = False) -> None:
        if self._gone or self._shutdown:
            return
        status = self._status(stopping=stopping, final=final)
        if status == self._sent:
            return
        try:
            self.runner.kube.call(
                f"update the status of Pod {self.namespace}/{self.name}",
                self.runner.kube.core.patch_namespaced_pod_status,
                self.name,
                self.namespace,
                {"status": status},
                _content_type=MERGE_PATCH,
                idempotent=True,
            )
            self._sent = status
        except NotFoundError:
            self._gone = self._deleting = True
        except RunbookError as exc:
            logger.warning("pod %s/%s: %s", self.namespace, self.name, exc)

    # -- termination ------------------------------------------------------------------------

    def _terminate(self) -> None:
        running = [c for c in self.containers if c.process is not None and c.process.running()]
        if not self._shutdown and self.containers:
            self._write_status(stopping=True)  # not ready first: endpoints drop the pod
            for c in running:
                c.record("Killing", f"Stopping container {c.name}", False)
        grace = self._grace()
        for c in running:
            c.process.signal(signal.SIGTERM)  # type: ignore[union-attr]
        began = time.monotonic()
        deadline = began + grace
        for c in running:
            left = max(0.0, deadline - time.monotonic())
            code = c.process.stop(left, terminate=False)  # type: ignore[union-attr]
            c.stopped(code)
            logger.debug(
                "pod %s/%s: container %s exited %s, %.2fs after SIGTERM",
                self.namespace, self.name, c.name, code, time.monotonic() - began,
            )  # fmt: skip
        for c in self.containers:
            if c.port is not None:
                release_port(c.port)
        if self._shutdown:
            return
        self.volumes.remove()
        self.finalized = True
        if not self._gone and self.containers:
            self._write_status(final=True)  # terminated containers, a terminal phase
            kube = self.runner.kube
            ignore_missing(
                lambda: kube.call(
                    f"delete Pod {self.namespace}/{self.name} once its containers stopped",
                    kube.core.delete_namespaced_pod,
                    self.name,
                    self.namespace,
                    body=V1DeleteOptions(
                        grace_period_seconds=0, preconditions=V1Preconditions(uid=self.uid)
                    ),
                    idempotent=True,
                )
            )

    def _grace(self) -> float:
        pod_meta = meta(self.pod)
        seconds = pod_meta.get("deletionGracePeriodSeconds")
        if seconds is None:
            seconds = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        seconds = 30 if seconds is None else float(seconds)
        # the kubelet's floor (minimumGracePeriodInSeconds): even "0" gets SIGTERM and 2 s
        return min(max(seconds, 2.0), self.settings.max_grace_seconds)


def qos_class(spec: dict[str, Any]) -> str:
    """BestEffort / Burstable / Guaranteed, from the containers' requests and limits."""
    containers = spec.get("containers") or []
    any_set = False
    guaranteed = True
    for c in containers:
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"))
