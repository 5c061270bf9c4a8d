"""The service proxy: every Service port listens on ``127.0.0.1:<nodePort>`` and forwards HTTP.

Why HTTP-aware (not a TCP splice like kube-proxy): a TCP proxy picks the pod when a connection
opens, so a keep-alive client would stay on the old Deployment after a selector switch. Here
each *request* is routed on its own, against the route table of that instant:

- the table (nodePort -> ready endpoints) is rebuilt from the informers' caches on every
  Service or Pod event and swapped in with one assignment, so a selector change switches new
  requests atomically while requests in flight finish on the pod they started on;
- endpoints are the pods matching the selector that are Ready and not terminating; the pod's
  real port comes from the runner's annotation, mapped from the Service's ``targetPort``
  (number or container port name);
- round robin per Service port; connections to pods are pooled and reused;
- a request that could not reach a pod *before anything was sent or received* (connection
  refused, a pooled connection the pod had closed) is tried on another endpoint or a fresh
  connection, if its body is buffered (bodies up to ``proxy_replay_limit_bytes``; larger and
  chunked bodies are streamed and not retried). This is what makes a switch or a rollout show
  no error: the pod being deleted may close its listener between our routing decision and the
  connect;
- ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` are added; hop-by-hop headers are dropped;
  bodies stream both ways; 503 with a body naming the Service and selector when no endpoint is
  ready, 502 when none could be reached, 504 on a pod's timeout.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.cluster.api import Store
from sandbox.cluster.forward import Endpoint, Pool, Route, handler_for
from sandbox.cluster.objects import (
    LOOPBACK,
    Obj,
    is_ready,
    key,
    labels,
    matches_labels,
    resolve_target_port,
    selector_text,
)
from sandbox.cluster.settings import ClusterSettings

logger = logging.getLogger("sandbox.cluster")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request are normal for a proxy; anything else is logged."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        logger.warning("service proxy: a request from %s failed", client_address, exc_info=True)

    def close_all(self) -> None:
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class ServiceProxy:
    """Listeners and the route table; :meth:`on_event` is the informers' handler."""

    def __init__(self, settings: ClusterSettings, services: Store, pods: Store):
        self.settings = settings
        self._services = services
        self._pods = pods
        self._routes: dict[int, Route] = {}
        self._listeners: dict[int, tuple[_Server, threading.Thread]] = {}
        self.pool = Pool(settings.proxy_backend_timeout_seconds)
        self._lock = threading.Lock()
        self._failed_binds: dict[int, float] = {}
        self._stopped = False
        self.requests = 0
        self.errors = 0

    def on_event(self, kind: str, obj: Obj, previous: Obj | None) -> None:
        self.rebuild()

    # -- the route table ----------------------------------------------------------------------

    def rebuild(self) -> None:
        """Recompute every route from the caches and open/close listeners to match.

        Serialised, and reading the caches inside the lock, so the last rebuild always reflects
        the newest state whichever informer thread calls it.
        """
        with self._lock:
            if self._stopped:
                return
            routes = self._compute(self._services.list(), self._pods.list())
            self._routes = routes  # the atomic switch
            self._sync_listeners(set(routes))
        self.pool.retain({e.port for r in routes.values() for e in r.endpoints})

    def _compute(self, services: Iterable[Obj], pods: Iterable[Obj]) -> dict[int, Route]:
        pods_by_namespace: dict[str, list[Obj]] = {}
        for pod in pods:
            if is_ready(pod):
                pods_by_namespace.setdefault(key(pod)[0], []).append(pod)
        routes: dict[int, Route] = {}
        for service in services:
            namespace, name = key(service)
            spec = service.get("spec") or {}
            selector = spec.get("selector") or {}
            members = [
                p
                for p in pods_by_namespace.get(namespace, [])
                if matches_labels(selector, labels(p))
            ]
            members.sort(key=lambda p: key(p)[1])
            for port in spec.get("ports") or []:
                node_port = port.get("nodePort")
                if not node_port or (port.get("protocol") or "TCP") != "TCP":
                    continue
                target = port.get("targetPort") or port.get("port")
                if isinstance(target, str) and target.isdigit():
                    target = int(target)
                endpoints = []
                for pod in members:
                    real = resolve_target_port(pod, target)
                    if real is not None:
                        endpoints.append(Endpoint(key(pod)[1], real))
                route = Route(
                    f"{namespace}/{name}",
                    port.get("name") or port.get("port"),
                    selector_text(selector),
                    tuple(endpoints),
                )
                previous = self._routes.get(int(node_port))
                if previous is not None and previous.service == route.service:
                    route.counter = previous.counter  # round robin continues across rebuilds
                routes[int(node_port)] = route
        return routes

    def route(self, node_port: int) -> Route | None:
        return self._routes.get(node_port)

    def listening(self) -> list[int]:
        with self._lock:
            return sorted(self._listeners)

    def _sync_listeners(self, wanted: set[int]) -> None:
        for node_port in set(self._listeners) - wanted:
            self._close(node_port)
        for node_port in wanted - set(self._listeners):
            failed_at = self._failed_binds.get(node_port)
            if failed_at is not None and time.monotonic() - failed_at < 2.0:
                continue
            try:
                server = _Server((LOOPBACK, node_port), handler_for(self, node_port))
            except OSError as exc:
                self._failed_binds[node_port] = time.monotonic()
                logger.error(
                    "service proxy: cannot listen on %s:%s for %s: %s",
                    LOOPBACK,
                    node_port,
                    self._routes[node_port].service,
                    exc,
                )
                continue
            self._failed_binds.pop(node_port, None)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"proxy-{node_port}",
                daemon=True,
            )
            thread.start()
            self._listeners[node_port] = (server, thread)

    def _close(self, node_port: int) -> None:
        server, thread = self._listeners.pop(node_port)
        server.shutdown()
        server.server_close()
        server.close_all()
        thread.join(5)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for node_port in list(self._listeners):
                self._close(node_port)
            self._routes = {}
        self.pool.retain(set())
