"""A Kubernetes API server emulator on loopback: the official client and kubectl work unchanged.

    from sandbox.kube import KubeApiServer

    with KubeApiServer() as api:                      # port 0: a free port
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
        api.faults.inject(method="PATCH", path=r"/deployments/web$", status=500)
        ...                                           # kubernetes.client / kubectl against api.url

Served: discovery, Namespaces, Pods, Services, ConfigMaps, Secrets, Events (core/v1),
Deployments and ReplicaSets (apps/v1, with ``/status`` and ``/scale``), HorizontalPodAutoscalers
(autoscaling/v2), CustomResourceDefinitions and the custom resources they define; GET, LIST,
WATCH, POST, PUT, PATCH (JSON, merge, strategic merge, apply), DELETE and deletecollection.
Semantics the runbooks rely on are the real server's: resourceVersion conflicts, generation,
status subresources, selectors, Status error bodies, validation (422 naming the field) and
defaulting. Every Service port gets a ``nodePort`` that is free on 127.0.0.1 for the sandbox's
service proxy.

Layout: pure parts (``selectors``, ``patch``, ``validation`` with ``fields``, ``podspec``,
``statuses`` and ``schema``, ``defaults``, ``resources``, ``tables``, ``routes``, ``protobuf``)
separate from state (``store``, ``allocation``, ``faults``), watch serving (``watch``) and the
HTTP layer (``handler``, ``server``). ``python -m sandbox.kube`` runs it alone.
"""

from sandbox.kube.faults import Fault, FaultInjector
from sandbox.kube.server import KubeApiServer

__all__ = ["Fault", "FaultInjector", "KubeApiServer"]
