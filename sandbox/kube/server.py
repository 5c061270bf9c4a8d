"""``KubeApiServer``: the Kubernetes REST API over HTTP on loopback, for the client and kubectl.

Why it is built this way:
- ``ThreadingHTTPServer`` with daemon threads, a listen backlog of 128 (the default 5 drops
  SYNs when many clients reconnect at once: 1 s stalls), ``TCP_NODELAY`` on every connection
  (or each answer waits ~40 ms for a delayed ACK), HTTP/1.1 keep-alive with ``Content-Length``,
  and ``Transfer-Encoding: chunked`` with one JSON event per line for watches;
- all state lives in :class:`~sandbox.kube.store.Store` behind one lock; watch handlers block
  on their own queue, never on the lock, so a slow watcher slows nobody else;
- :meth:`KubeApiServer.stop` ends every watch, closes keep-alive connections and joins the
  request threads, leaving no thread and no listening port behind; start-up is a few
  milliseconds (the ``kubernetes`` package is not imported);
- faults are checked before a request touches the store, so an injected 500 on a PATCH leaves
  the object as it was.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox.kube.faults import FaultInjector
from sandbox.kube.handler import ApiHandler
from sandbox.kube.store import Store

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class KubeApiServer:
    """``with KubeApiServer() as api: api.url``; see the module docstring of sandbox.kube.

    Attributes other components use: ``url``, ``host``, ``port``; ``faults`` (a
    :class:`~sandbox.kube.faults.FaultInjector`); ``store`` (in-process access to the objects,
    e.g. ``store.compact()`` to expire old resourceVersions); ``requests`` (the last 1,000
    ``(method, path, status)`` answered, for tests). ``token``: when set, every API request
    needs ``Authorization: Bearer <token>`` (401 otherwise) and the kubeconfig carries it.
    ``graceful_pod_deletion``: pods on a node stay, terminating, until the kubelet deletes them
    with grace 0 (see :mod:`sandbox.kube.store`); off by default for now.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        bookmark_interval: float = 5.0,
        history: int = 10_000,
        graceful_pod_deletion: bool = False,
    ):
        if not _is_loopback(host):
            raise ValueError(f"the sandbox API server binds loopback addresses only, not {host}")
        self.store = Store(history=history, graceful_pod_deletion=graceful_pod_deletion)
        self.faults = FaultInjector()
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=1000)
        self._stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._httpd = _Server((host, port), _handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kube-api-{self.port}",
            daemon=True,
        )
        self._started = False

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_stopping(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when the server is stopping."""
        return self._stopping.wait(seconds)

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> KubeApiServer:
        self._thread.start()
        self._started = True
        return self

    def stop(self) -> None:
        """End watches and hung requests, close every connection and the port; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.store.close()
        if self._started:
            self._httpd.shutdown()
        self._httpd.server_close()
        with self._connections_lock:
            connections = dict(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        for thread in connections.values():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._started:
            self._thread.join(timeout=5)

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(
        self, path: str | os.PathLike[str], context: str = "sandbox", namespace: str = "default"
    ) -> Path:
        """Write a kubeconfig (current context ``context``) for this server; returns its path."""
        user = f"{{token: {json.dumps(self.token)}}}" if self.token else "{}"
        text = (
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            f"- name: {context}\n"
            "  cluster:\n"
            f"    server: {self.url}\n"
            "contexts:\n"
            f"- name: {context}\n"
            "  context:\n"
            f"    cluster: {context}\n"
            f"    user: {context}\n"
            f"    namespace: {namespace}\n"
            f"current-context: {context}\n"
            "preferences: {}\n"
            "users:\n"
            f"- name: {context}\n"
            f"  user: {user}\n"
        )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        return target

    # -- connection bookkeeping (so stop() can close keep-alive connections) -------------------

    def _track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections[connection] = threading.current_thread()

    def _untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.pop(connection, None)


def _handler(server: KubeApiServer) -> type[ApiHandler]:
    class Handler(ApiHandler):
        api = server

    return Handler


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
