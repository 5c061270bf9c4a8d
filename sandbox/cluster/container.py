"""One container's life as the kubelet runs it: pull, start, probe, crash, back off, restart.

A :class:`Container` is a state machine driven by its pod worker's loop (:meth:`step`), with no
threads of its own, and it reports itself as the API's ``containerStatuses[]`` entry
(:meth:`status`). Semantics kept from the kubelet, timings scaled (see
:mod:`sandbox.cluster.settings`):

- an image the sandbox does not know is never started: ``ErrImagePull``, then
  ``ImagePullBackOff`` (pull retries logged as events with doubling waits);
- a process that exits is restarted per ``restartPolicy``: the first restart at once, then
  after a back-off that doubles up to a cap (``CrashLoopBackOff`` while waiting), reset after the
  container ran long enough; ``restartCount`` and ``lastState.terminated`` as the API shows them;
- readiness from ``readinessProbe`` (``httpGet`` or ``tcpSocket``; ``exec`` counts as
  passing): ``initialDelaySeconds``, ``periodSeconds``, ``timeoutSeconds``,
  ``successThreshold``, ``failureThreshold``; no probe means ready once running. A failing
  ``livenessProbe`` kills the process, which then restarts like a crash.
"""

from __future__ import annotations

import http.client
import logging
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.cluster.objects import image_id, rfc3339, split_image
from sandbox.cluster.process import ContainerProcess
from sandbox.cluster.settings import ClusterSettings

logger = logging.getLogger("sandbox.cluster")

Record = Callable[[str, str, bool], None]
"""``record(reason, message, warning)``: an Event about this container."""


def known_command(settings: ClusterSettings, image: str) -> tuple[str, ...] | None:
    repository, _ = split_image(image)
    for prefix in ("docker.io/library/", "docker.io/"):
        if repository.startswith(prefix):
            repository = repository[len(prefix) :]
    return settings.images.get(repository)


@dataclass
class Probe:
    """Counters of one probe; ``spec`` is the container's probe object (or ``None``)."""

    spec: Mapping[str, Any] | None
    scale: ClusterSettings
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0

    def reset(self, started: float) -> None:
        self.successes = self.failures = 0
        delay = float((self.spec or {}).get("initialDelaySeconds") or 0)
        self.next_at = started + self.scale.scaled_probe(delay)

    @property
    def period(self) -> float:
        period = float((self.spec or {}).get("periodSeconds") or 10)
        return max(self.scale.min_probe_period_seconds, self.scale.scaled_probe(period))

    def due(self, now: float) -> bool:
        return self.spec is not None and now >= self.next_at

    def run(self, port: int, now: float) -> bool:
        """Run the probe once against ``port``; returns whether it passed."""
        assert self.spec is not None
        self.next_at = now + self.period
        timeout = float(self.spec.get("timeoutSeconds") or 1)
        passed = probe_once(self.spec, port, timeout)
        if passed:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        return passed


def probe_once(spec: Mapping[str, Any], port: int, timeout: float) -> bool:
    if spec.get("httpGet") is not None:
        get = spec["httpGet"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            headers = {h["name"]: h.get("value", "") for h in get.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/1.34")
            headers.setdefault("Connection", "close")
            connection.request("GET", get.get("path") or "/", headers=headers)
            response = connection.getresponse()
            response.read()
            return 200 <= response.status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
    if spec.get("tcpSocket") is not None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True
        except OSError:
            return False
    return True  # exec / grpc probes are not run in the sandbox: they pass


@dataclass
class Container:
    spec: Mapping[str, Any]
    pod_label: str  # "<pod>_<namespace>(<uid>)", as kubelet messages name a pod
    restart_policy: str
    settings: ClusterSettings
    record: Record
    port: int | None = None
    process: ContainerProcess | None = None
    restart_count: int = 0
    ready: bool = False
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    running_since: str | None = None
    terminated: dict[str, Any] | None = None  # current state, when it will not restart
    last_terminated: dict[str, Any] | None = None
    next_start_at: float | None = None
    backoff: float = 0.0
    container_id: str = ""
    readiness: Probe = field(init=False)
    liveness: Probe = field(init=False)
    _pulled: bool = False

    def __post_init__(self) -> None:
        self.readiness = Probe(self.spec.get("readinessProbe"), self.settings)
        self.liveness = Probe(self.spec.get("livenessProbe"), self.settings)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or "")

    @property
    def image(self) -> str:
        return str(self.spec.get("image") or "")

    @property
    def command(self) -> tuple[str, ...] | None:
        return known_command(self.settings, self.image)

    # -- the loop -----------------------------------------------------------------------------

    def step(self, now: float) -> float:
        """Advance the state machine; returns the time of its next deadline (monotonic)."""
        if self.process is None or (self.next_start_at is None and self.terminated is not None):
            return now + 3600.0  # not set up yet, or finished for good
        if self.command is None:
            return self._image_pull_backoff(now)
        if not self.process.running():
            code = self.process.poll()
            if code is not None and self.running_since is not None:
                self._exited(code, now)
            if self.next_start_at is not None and now >= self.next_start_at:
                self._start(now)
            elif self.next_start_at is not None:
                return self.next_start_at
        if not self.process.running():
            return now + 3600.0 if self.next_start_at is None else self.next_start_at
        deadline = now + 0.1  # how often a running process is checked for an exit
        if self.readiness.spec is None:
            self.ready = True
        elif self.readiness.due(now):
            self.readiness.run(self._port(), now)
            threshold = int(self.readiness.spec.get("successThreshold") or 1)
            failure = int(self.readiness.spec.get("failureThreshold") or 3)
            if not self.ready and self.readiness.successes >= threshold:
                self.ready = True
            elif self.ready and self.readiness.failures >= failure:
                self.ready = False
                self.record("Unhealthy", f"Readiness probe failed: {self._probe_target()}", True)
        if self.readiness.spec is not None:
            deadline = min(deadline, self.readiness.next_at)
        if self.liveness.due(now):
            self.liveness.run(self._port(), now)
            if self.liveness.failures >= int(self.liveness.spec.get("failureThreshold") or 3):
                self.record(
                    "Killing",
                    f"Container {self.name} failed liveness probe, will be restarted",
                    False,
                )
                self.process.stop(self.settings.max_grace_seconds)
                return now
        if self.liveness.spec is not None:
            deadline = min(deadline, self.liveness.next_at)
        return deadline

    def begin(self, process: ContainerProcess, now: float) -> None:
        """Volumes and env are ready: start for the first time (or report the bad image)."""
        self.process = process
        self.next_start_at = now
        if self.command is None:
            self.waiting = (
                "ErrImagePull",
                f'failed to pull and unpack image "{self.image}": the sandbox knows only '
                f"{', '.join(sorted(self.settings.images))}",
            )
            self.record("Failed", f'Failed to pull image "{self.image}": {self.waiting[1]}', True)
            self.backoff = self.settings.crash_backoff_base_seconds
            self.next_start_at = now + self.backoff
            return
        self._start(now)

    def _image_pull_backoff(self, now: float) -> float:
        assert self.next_start_at is not None
        if now < self.next_start_at:
            return self.next_start_at
        self.waiting = ("ImagePullBackOff", f'Back-off pulling image "{self.image}"')
        self.record("BackOff", f'Back-off pulling image "{self.image}"', False)
        self.backoff = min(self.settings.crash_backoff_cap_seconds, self.backoff * 2)
        self.next_start_at = now + self.backoff
        return self.next_start_at

    def _start(self, now: float) -> None:
        assert self.process is not None
        first = self.running_since is None and self.last_terminated is None
        if not self._pulled:
            self._pulled = True
            self.record(
                "Pulled", f'Container image "{self.image}" already present on machine', False
            )
        if not first:
            self.restart_count += 1
        try:
            self.process.start(self.restart_count)
        except OSError as exc:
            self.waiting = ("RunContainerError", f"failed to start the process: {exc}")
            self.record("Failed", f"Error: {self.waiting[1]}", True)
            self.next_start_at = now + max(self.backoff, self.settings.crash_backoff_base_seconds)
            return
        self.record("Created", f"Created container {self.name}", False)
        self.record("Started", f"Started container {self.name}", False)
        self.container_id = f"sandbox://{self.process.pid:08x}{int(time.time() * 1000):x}"
        self.running_since = rfc3339()
        self.waiting = None
        self.terminated = None
        self.next_start_at = None
        self.ready = False
        self.readiness.reset(now)
        self.liveness.reset(now)

    def _exited(self, code: int, now: float) -> None:
        assert self.process is not None
        ran = now - self.process.started_at
        signalled = code < 0
        exit_code = 128 - code if signalled else code
        state = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": self.running_since,
            "finishedAt": rfc3339(),
            "containerID": self.container_id,
        }
        if signalled:
            state["signal"] = -code
        self.running_since = None
        self.ready = False
        restart = self.restart_policy == "Always" or (
            self.restart_policy == "OnFailure" and exit_code != 0
        )
        if not restart:
            self.terminated = state
            self.next_start_at = None
            return
        self.last_terminated = state
        if ran >= self.settings.crash_backoff_reset_seconds:
            self.backoff = 0.0
        delay = self.backoff
        self.backoff = min(
            self.settings.crash_backoff_cap_seconds,
            max(self.settings.crash_backoff_base_seconds, self.backoff * 2),
        )
        self.next_start_at = now + delay
        if delay > 0:
            self.waiting = (
                "CrashLoopBackOff",
                f"back-off {_duration(delay)} restarting failed container={self.name} "
                f"pod={self.pod_label}",
            )
            self.record(
                "BackOff",
                f"Back-off restarting failed container {self.name} in pod {self.pod_label}",
                True,
            )

    def replace_spec(self, spec: Mapping[str, Any], process: ContainerProcess, now: float) -> None:
        """The pod's image changed (``kubectl set image`` on a bare Pod): restart at once."""
        self.record(
            "Killing", f"Container {self.name} definition changed, will be restarted", False
        )
        if self.process is not None and self.process.running():
            self.process.stop(self.settings.max_grace_seconds)
            code = self.process.poll()
            if code is not None and self.running_since is not None:
                self._exited(code, now)
        self.spec = spec
        self.readiness = Probe(spec.get("readinessProbe"), self.settings)
        self.liveness = Probe(spec.get("livenessProbe"), self.settings)
        self._pulled = False
        self.terminated = None
        self.backoff = 0.0
        self.begin(process, now)

    def stopped(self, code: int | None) -> None:
        """The pod is going away and its process ended: terminated for good, no restart."""
        if self.running_since is None or code is None:
            return
        exit_code = 128 - code if code < 0 else code
        self.terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": self.running_since,
            "finishedAt": rfc3339(),
            "containerID": self.container_id,
        }
        self.running_since = None
        self.ready = False
        self.next_start_at = None

    def kill(self, signum: int = signal.SIGKILL) -> bool:
        """Fault injection: signal the process; the state machine restarts it as a crash."""
        return self.process is not None and self.process.signal(signum)

    def _port(self) -> int:
        assert self.port is not None
        return self.port

    def _probe_target(self) -> str:
        get = (self.readiness.spec or {}).get("httpGet") or {}
        return f"HTTP probe to {get.get('path', '/')} on port {self.port} failed"

    # -- the API's view --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        started = self.running_since is not None
        if started:
            state: dict[str, Any] = {"running": {"startedAt": self.running_since}}
        elif self.terminated is not None:
            state = {"terminated": dict(self.terminated)}
        else:
            reason, message = self.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason} | ({"message": message} if message else {})}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": image_id(self.image) if self._pulled else "",
            "ready": bool(self.ready and started),
            "started": started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": dict(self.last_terminated)} if self.last_terminated else {},
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def _duration(seconds: float) -> str:
    """Go's duration format for the common cases (``500ms``, ``10s``, ``1m20s``)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"
