"""Fault injection on the sandbox's workloads: kill a pod's process, slow or break a service.

Why through the real mechanisms: a killed process is a crash the runner sees and restarts with
back-off (``restartCount`` grows, the pod leaves its Services while it is down), exactly what a
runbook must cope with; a slow or broken service is set through the shop's own admin endpoint
(``POST /_sandbox/fault``, loopback only), on every running pod of the Service, so metrics,
health and traces all show it as the real thing would. The fault lives in the process: a pod
that restarts comes back healthy (set it again, or use the fault *file* through a ConfigMap for
a fault that survives restarts).
"""

from __future__ import annotations

import http.client
import json
import signal
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from runbooks.errors import NotFoundError, UnavailableError
from sandbox.cluster.objects import LOOPBACK, key, labels, matches_labels, real_ports

if TYPE_CHECKING:
    from sandbox.cluster.cluster import Cluster


@dataclass(frozen=True)
class Fault:
    """The shop's runtime fault (see :class:`sandbox.shop.behaviour.Fault`)."""

    error_rate: float = 0.0
    status: int = 503
    latency_ms: float = 0.0
    degrade_health: bool = False


def kill_pod(
    cluster: Cluster,
    namespace: str,
    pod: str,
    *,
    container: str | None = None,
    signum: int = signal.SIGKILL,
) -> int:
    """Signal the pod's process (SIGKILL: a crash); returns its pid. The runner restarts it."""
    worker = cluster.runner.worker(namespace, pod)
    target = worker.container(container) if worker is not None else None
    if target is None or target.process is None or not target.process.running():
        raise NotFoundError(f"pod {namespace}/{pod} has no running process to kill")
    pid = target.process.pid
    assert pid is not None
    target.kill(signum)
    return pid


def set_service_fault(cluster: Cluster, namespace: str, service: str, fault: Fault) -> list[str]:
    """Apply ``fault`` to every running pod selected by the Service; returns the pods."""
    return _each_pod(cluster, namespace, service, "POST", json.dumps(asdict(fault)).encode())


def clear_service_fault(cluster: Cluster, namespace: str, service: str) -> list[str]:
    return _each_pod(cluster, namespace, service, "DELETE", b"")


def set_pod_fault(cluster: Cluster, namespace: str, pod: str, fault: Fault | None) -> None:
    """Apply (or clear, with ``None``) a fault on one pod."""
    found = cluster.pods.get(namespace, pod)
    if found is None:
        raise NotFoundError(f"pod {namespace}/{pod} does not exist")
    body = json.dumps(asdict(fault)).encode() if fault is not None else b""
    _admin(found, "POST" if fault is not None else "DELETE", body)


def _each_pod(
    cluster: Cluster, namespace: str, service: str, method: str, body: bytes
) -> list[str]:
    found = cluster.services.get(namespace, service)
    if found is None:
        raise NotFoundError(f"service {namespace}/{service} does not exist")
    selector = (found.get("spec") or {}).get("selector") or {}
    done = []
    for pod in cluster.pods.list(namespace):
        if not matches_labels(selector, labels(pod)) or not real_ports(pod):
            continue
        worker = cluster.runner.worker(*key(pod))
        running = worker is not None and any(
            c.process is not None and c.process.running() for c in worker.containers
        )
        if running:
            _admin(pod, method, body)
            done.append(key(pod)[1])
    return done


def _admin(pod: dict, method: str, body: bytes) -> None:
    namespace, name = key(pod)
    ports = real_ports(pod)
    if not ports:
        raise NotFoundError(f"pod {namespace}/{name} has no port yet")
    connection = http.client.HTTPConnection(LOOPBACK, next(iter(ports.values())), timeout=5)
    try:
        connection.request(
            method,
            "/_sandbox/fault",
            body=body or None,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    except OSError as exc:
        raise UnavailableError(
            f"setting the fault on pod {namespace}/{name} failed: {exc}"
        ) from exc
    finally:
        connection.close()
    if response.status != 200:
        raise UnavailableError(
            f"pod {namespace}/{name} refused the fault (HTTP {response.status}): {text[:200]}",
            status=response.status,
        )
