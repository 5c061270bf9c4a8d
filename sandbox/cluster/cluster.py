"""The sandbox cluster: one node's controller, kubelet and service proxy, wired to an API server.

:class:`Cluster` is what the sandbox orchestrator starts after the API emulator:

    cluster = Cluster(kube.url, state / "cluster", file_sd_path=state / "targets.json")
    cluster.start()      # returns once the caches are filled and the proxy listens
    ...
    cluster.stop()       # watches, threads, pod processes, listeners: nothing left behind

It talks to the API server only through the official client (see :mod:`sandbox.cluster.api`),
so it works against any faithful server, and proves the emulator faithful in turn. Four
informers (Deployments, Pods, Services, ConfigMaps) feed the components; the Pod informer's
handlers run in the order proxy, file_sd, controller, runner, so a pod being deleted leaves
the routes and the scrape targets before its process is told to stop.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from runbooks.errors import NotFoundError, UnavailableError
from sandbox.cluster import faults
from sandbox.cluster.api import Informer, Kube
from sandbox.cluster.deployments import DeploymentController
from sandbox.cluster.events import EventRecorder
from sandbox.cluster.filesd import FileSd
from sandbox.cluster.latency import ProxyLatency, measure_proxy_latency
from sandbox.cluster.objects import LOOPBACK, real_ports
from sandbox.cluster.process import kill_leftovers
from sandbox.cluster.proxy import ServiceProxy
from sandbox.cluster.runner import PodRunner
from sandbox.cluster.settings import ClusterSettings

logger = logging.getLogger("sandbox.cluster")


class Cluster:
    """Controller + pod runner + service proxy (+ Prometheus file_sd) for one API server."""

    def __init__(
        self,
        kube_url: str,
        state_dir: Path,
        *,
        file_sd_path: Path | None = None,
        settings: ClusterSettings | None = None,
    ):
        self.kube_url = kube_url
        self.state_dir = Path(state_dir)
        self.settings = settings or ClusterSettings()
        self.kube = Kube(kube_url, timeout_seconds=self.settings.api_timeout_seconds)
        s = self.settings
        informer_options = {
            "watch_timeout_seconds": s.watch_timeout_seconds,
            "relist_seconds": s.relist_seconds,
        }
        core, apps = self.kube.core, self.kube.apps
        self._deployments = Informer(
            self.kube, "Deployment", apps.list_deployment_for_all_namespaces, **informer_options
        )
        self._pods = Informer(
            self.kube, "Pod", core.list_pod_for_all_namespaces, **informer_options
        )
        self._services = Informer(
            self.kube, "Service", core.list_service_for_all_namespaces, **informer_options
        )
        self._configmaps = Informer(
            self.kube, "ConfigMap", core.list_config_map_for_all_namespaces, **informer_options
        )
        self.deployments = self._deployments.store
        self.pods = self._pods.store
        self.services = self._services.store
        self.configmaps = self._configmaps.store
        kubelet_events = EventRecorder(
            self.kube, component="kubelet", host=s.node_name, enabled=s.record_events
        )
        controller_events = EventRecorder(
            self.kube, component="deployment-controller", host=s.node_name, enabled=s.record_events
        )
        self.proxy = ServiceProxy(s, self.services, self.pods)
        self.file_sd = FileSd(file_sd_path, self.pods) if file_sd_path is not None else None
        self.controller = DeploymentController(
            self.kube, s, self.deployments, self.pods, controller_events
        )
        self.runner = PodRunner(self.kube, s, self.state_dir, kubelet_events, self.configmaps)
        self._pods.add_handler(self.proxy.on_event)
        if self.file_sd is not None:
            self._pods.add_handler(self.file_sd.on_event)
        self._pods.add_handler(self.controller.on_pod)
        self._pods.add_handler(self.runner.on_pod)
        self._services.add_handler(self.proxy.on_event)
        self._deployments.add_handler(self.controller.on_deployment)
        self._configmaps.add_handler(self.runner.on_configmap)
        self._informers = [self._configmaps, self._services, self._deployments, self._pods]
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout_seconds: float = 15.0) -> Cluster:
        """Start everything; returns once every cache holds the server's state.

        Raises ``UnavailableError`` (and leaves nothing running) when the API server does not
        answer or the caches cannot be filled within ``timeout_seconds``.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        kill_leftovers(self.state_dir)
        self._started = True
        try:
            self.kube.call("read the API server's version", self.kube.version.get_code)
            if self.file_sd is not None:
                self.file_sd.write()  # an empty list at once, so Prometheus finds the file
            deadline = time.monotonic() + timeout_seconds
            for informer in self._informers:  # in order: a pod's ConfigMaps are known first
                informer.start()
                if not informer.wait_synced(max(0.0, deadline - time.monotonic())):
                    raise UnavailableError(
                        f"the sandbox cluster could not list {informer.kind}s from "
                        f"{self.kube_url} within {timeout_seconds:g}s; see the log for why",
                        target=self.kube_url,
                    )
            self.controller.start()
        except BaseException:
            self.stop()
            raise
        logger.info("sandbox cluster up against %s", self.kube_url)
        return self

    def stop(self) -> None:
        """Stop watches, threads, pod processes and listeners; leaves the API objects alone."""
        if not self._started:
            self.kube.close()
            return
        self._started = False
        for informer in reversed(self._informers):
            informer.stop()
        self.controller.stop()
        self.proxy.stop()
        self.runner.stop()
        self.kube.close()
        logger.info("sandbox cluster stopped")

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where things are -------------------------------------------------------------------

    def service_url(self, namespace: str, name: str, port: int | str | None = None) -> str:
        """``http://127.0.0.1:<nodePort>`` of a Service port (the first one by default).

        From the cache, or from the API when the cache has not seen the Service yet (the
        nodePort is allocated when the Service is created). The proxy opens the port within
        milliseconds of the Service's watch event; :meth:`wait_for_service` waits for that.
        """
        service = self.services.get(namespace, name)
        if service is None:
            found = self.kube.call(
                f"read Service {namespace}/{name}",
                self.kube.core.read_namespaced_service,
                name,
                namespace,
            )
            service = self.kube.to_dict(found)
        for item in (service.get("spec") or {}).get("ports") or []:
            wanted = port is None or port in (item.get("port"), item.get("name"))
            if wanted and item.get("nodePort"):
                return f"http://{LOOPBACK}:{item['nodePort']}"
        raise NotFoundError(f"service {namespace}/{name} has no nodePort for port {port}")

    def endpoints(self, namespace: str, name: str, port: int | str | None = None) -> list[str]:
        """The pods the proxy routes a Service port to right now (empty if none or unknown)."""
        service = self.services.get(namespace, name)
        if service is None:
            return []
        try:
            node_port = int(self.service_url(namespace, name, port).rsplit(":", 1)[1])
        except NotFoundError:
            return []
        route = self.proxy.route(node_port)
        if route is None or node_port not in self.proxy.listening():
            return []
        return [e.pod for e in route.endpoints]

    def wait_for_service(
        self,
        namespace: str,
        name: str,
        *,
        port: int | str | None = None,
        endpoints: int = 1,
        timeout_seconds: float = 30.0,
    ) -> str:
        """The Service port's URL once the proxy listens and routes to ``endpoints`` ready pods.

        Raises ``UnavailableError`` naming what is missing at the deadline (polls, bounded).
        """
        deadline = time.monotonic() + timeout_seconds
        while True:
            ready = self.endpoints(namespace, name, port)
            if len(ready) >= endpoints:
                return self.service_url(namespace, name, port)
            if time.monotonic() >= deadline:
                raise UnavailableError(
                    f"service {namespace}/{name} has {len(ready)} ready endpoint(s) in the "
                    f"sandbox proxy after {timeout_seconds:g}s, wanted {endpoints}",
                    target=f"{namespace}/{name}",
                )
            time.sleep(0.05)

    def pod_url(self, namespace: str, name: str, container: str | None = None) -> str:
        """``http://127.0.0.1:<real port>`` of a pod's container (the first by default)."""
        pod = self.pods.get(namespace, name)
        ports = real_ports(pod) if pod is not None else {}
        if not ports:
            raise NotFoundError(f"pod {namespace}/{name} has no port yet")
        port = ports.get(container) if container else next(iter(ports.values()))
        if port is None:
            raise NotFoundError(f"pod {namespace}/{name} has no container {container}")
        return f"http://{LOOPBACK}:{port}"

    def pod_pids(self) -> dict[str, int]:
        """``{"namespace/pod/container": pid}`` of every running pod process."""
        out = {}
        for worker in self.runner.workers():
            for c in worker.containers:
                if c.process is not None and c.process.running() and c.process.pid:
                    out[f"{worker.namespace}/{worker.name}/{c.name}"] = c.process.pid
        return out

    def log_path(self, namespace: str, name: str, container: str | None = None) -> Path | None:
        """The current log file of a pod's container (``None`` before it first started)."""
        worker = self.runner.worker(namespace, name)
        found = worker.container(container) if worker is not None else None
        return found.process.log_path if found is not None and found.process else None

    # -- faults and measurements --------------------------------------------------------------

    def kill_pod_process(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None = None,
        signum: int = signal.SIGKILL,
    ) -> int:
        return faults.kill_pod(self, namespace, name, container=container, signum=signum)

    def set_service_fault(self, namespace: str, service: str, fault: faults.Fault) -> list[str]:
        return faults.set_service_fault(self, namespace, service, fault)

    def clear_service_fault(self, namespace: str, service: str) -> list[str]:
        return faults.clear_service_fault(self, namespace, service)

    def set_pod_fault(self, namespace: str, pod: str, fault: faults.Fault | None) -> None:
        """Slow or break one pod (``None`` heals it)."""
        faults.set_pod_fault(self, namespace, pod, fault)

    def measure_proxy_latency(
        self, namespace: str, service: str, *, requests: int = 300, path: str = "/ready"
    ) -> ProxyLatency:
        """The proxy's added latency vs a direct call to one of the Service's ready pods."""
        url = self.service_url(namespace, service)
        route = self.proxy.route(int(url.rsplit(":", 1)[1]))
        if route is None or not route.endpoints:
            raise NotFoundError(f"service {namespace}/{service} has no ready endpoint")
        pod_url = f"http://{LOOPBACK}:{route.endpoints[0].port}"
        return measure_proxy_latency(url, pod_url, requests=requests, path=path)
