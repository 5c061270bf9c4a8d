"""The sandbox cluster: a Deployment controller, a pod runner and a service proxy.

Real enough for the runbooks: Deployments roll (RollingUpdate and Recreate) and report status
that ``kubectl rollout status`` trusts; every Pod is a local process of the image's program,
probed for readiness and restarted with back-off; every Service port answers on
``127.0.0.1:<nodePort>`` and routes each HTTP request to a Ready pod; a Prometheus ``file_sd``
file lists the Ready pods. It speaks to the API server only through the official client.

Contracts for images, tools and runbooks (the why is in each module):

- a container's process gets ``PORT`` (its real loopback port), ``SHOP_IMAGE``, ``POD_NAME``,
  ``POD_NAMESPACE``, ``POD_IP``, ``HOSTNAME`` and its ``env`` / ``envFrom`` resolved (ConfigMap
  and Secret keys, ``fieldRef``, ``$(VAR)``); an env value that is, or starts with, a
  ``volumeMounts`` path is rewritten to the real directory, also listed in ``SANDBOX_MOUNTS``
  (JSON) and ``SANDBOX_MOUNT_<PATH>`` (:mod:`sandbox.cluster.podenv`);
- a pod's real port is on the Pod: annotation ``sandbox.runbooks.dev/port`` (first container)
  and ``sandbox.runbooks.dev/ports`` (JSON by container); ``status.podIP`` is 127.0.0.1;
- logs: ``<state_dir>/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>.log``;
- no ReplicaSets: Pods are owned by their Deployment and grouped by ``pod-template-hash``
  (:mod:`sandbox.cluster.rollout` says why).

Public API::

    Cluster(kube_url, state_dir, *, file_sd_path=None, settings=None)
        .start(timeout_seconds=15.0) -> Cluster / .stop() / context manager
        .service_url(ns, name, port=None) -> str      .pod_url(ns, name, container=None) -> str
        .endpoints(ns, name, port=None) -> list[str]  (the pods the proxy routes to now)
        .wait_for_service(ns, name, *, port=None, endpoints=1, timeout_seconds=30.0) -> str
        .pod_pids() -> dict[str, int]                 .log_path(ns, name, container=None)
        .kill_pod_process(ns, name, *, container=None, signum=SIGKILL) -> int
        .set_service_fault(ns, service, Fault(...)) / .clear_service_fault(ns, service)
        .set_pod_fault(ns, pod, Fault(...) | None)
        .measure_proxy_latency(ns, service, *, requests=300, path="/ready") -> ProxyLatency
    ClusterSettings(...)        timings and limits (see sandbox.cluster.settings)
    measure_proxy_latency(service_url, pod_url, ...) -> ProxyLatency
"""

from sandbox.cluster.cluster import Cluster
from sandbox.cluster.faults import Fault
from sandbox.cluster.latency import ProxyLatency, measure_proxy_latency
from sandbox.cluster.objects import PORT_ANNOTATION, PORTS_ANNOTATION
from sandbox.cluster.settings import ClusterSettings

__all__ = [
    "PORTS_ANNOTATION",
    "PORT_ANNOTATION",
    "Cluster",
    "ClusterSettings",
    "Fault",
    "ProxyLatency",
    "measure_proxy_latency",
]
