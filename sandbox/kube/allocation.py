"""Service address allocation: a made-up ``clusterIP`` and a real, bindable ``nodePort`` per port.

The sandbox exposes every Service the way a NodePort Service is exposed on a node: the service
proxy (another component) listens on ``127.0.0.1:<nodePort>`` for each port of each Service,
whatever the Service ``type``. So a ``nodePort`` is only handed out when it is free to bind on
127.0.0.1 right now (tested with ``SO_REUSEADDR``, as the proxy's listener sets it), chosen at
random in 30000-32767 like the real allocator (random keeps two sandboxes on one machine from
racing for the same ports). A nodePort the user asks for is kept when it is free, refused with
a 422 otherwise. On update, ports keep the nodePort they had (matched by port+protocol, then by
name), as the real server does. ``clusterIP`` is a unique 10.96.x.y string for display and
client compatibility only; nothing routes to it.

Not thread-safe on its own: the store calls it under its lock.
"""

from __future__ import annotations

import random
import socket
from typing import Any

from sandbox.kube.errors import FieldErrors
from sandbox.kube.fields import is_int
from sandbox.kube.validation import NODE_PORT_RANGE

Owner = tuple[str, str]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class ServiceAllocator:
    def __init__(self, rng: random.Random | None = None):
        self._rng = rng or random.Random()
        self._node_ports: dict[int, Owner] = {}
        self._cluster_ips: dict[str, Owner] = {}

    def assign(
        self, owner: Owner, service: dict[str, Any], old: dict[str, Any] | None, *, commit: bool
    ) -> None:
        """Fill ``clusterIP(s)`` and every port's ``nodePort`` in ``service`` (in place).

        Raises a 422 when a requested nodePort or clusterIP cannot be had. With ``commit`` the
        allocations are recorded (and the old Service's leftovers released).
        """
        spec = service["spec"]
        old_spec = (old or {}).get("spec") or {}
        e = FieldErrors()
        ip = self._cluster_ip(owner, spec, old_spec, e)
        ports = self._node_ports_for(owner, spec, old_spec, e)
        e.raise_if_any("Service", "", owner[1])
        if ip is not None:
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        else:
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        for port, node_port in zip(spec.get("ports") or [], ports, strict=True):
            port["nodePort"] = node_port
        if commit:
            self.release(owner)
            for node_port in ports:
                self._node_ports[node_port] = owner
            if ip not in (None, "None"):
                self._cluster_ips[ip] = owner

    def release(self, owner: Owner) -> None:
        self._node_ports = {p: o for p, o in self._node_ports.items() if o != owner}
        self._cluster_ips = {ip: o for ip, o in self._cluster_ips.items() if o != owner}

    def node_ports(self) -> dict[int, Owner]:
        return dict(self._node_ports)

    def _cluster_ip(
        self, owner: Owner, spec: dict[str, Any], old_spec: dict[str, Any], e: FieldErrors
    ) -> str | None:
        if spec.get("type") == "ExternalName":
            return None
        wanted = spec.get("clusterIP") or old_spec.get("clusterIP")
        if wanted == "None":
            return "None"
        if wanted:
            holder = self._cluster_ips.get(wanted)
            if holder is not None and holder != owner:
                e.invalid("spec.clusterIP", wanted, "provided IP is already allocated")
            return wanted
        for _ in range(1000):
            candidate = f"10.96.{self._rng.randrange(0, 256)}.{self._rng.randrange(2, 255)}"
            if candidate not in self._cluster_ips:
                return candidate
        e.forbidden("spec.clusterIP", "no free cluster IP left")
        return None

    def _node_ports_for(
        self, owner: Owner, spec: dict[str, Any], old_spec: dict[str, Any], e: FieldErrors
    ) -> list[int]:
        old_ports = [p for p in old_spec.get("ports") or () if isinstance(p, dict)]
        chosen: list[int] = []
        for i, port in enumerate(spec.get("ports") or ()):
            requested = port.get("nodePort") if isinstance(port, dict) else None
            if not requested:
                requested = _previous(port, old_ports)
                if requested is not None and requested in chosen:
                    requested = None
                if requested is None:
                    free = self._free_port(set(chosen))
                    if free is None:
                        e.forbidden(f"spec.ports[{i}].nodePort", "no free node port left")
                    else:
                        chosen.append(free)
                    continue
            if not is_int(requested):
                continue  # validation reported it
            holder = self._node_ports.get(requested)
            if requested in chosen or (holder is not None and holder != owner):
                e.invalid(
                    f"spec.ports[{i}].nodePort", requested, "provided port is already allocated"
                )
            elif holder is None and not port_is_free(requested):
                e.invalid(
                    f"spec.ports[{i}].nodePort",
                    requested,
                    "provided port is not free on 127.0.0.1 (another process uses it)",
                )
            chosen.append(requested)
        return chosen

    def _free_port(self, exclude: set[int]) -> int | None:
        low, high = NODE_PORT_RANGE
        for _ in range(200):
            candidate = self._rng.randint(low, high)
            if candidate in self._node_ports or candidate in exclude:
                continue
            if port_is_free(candidate):
                return candidate
        return None


def _previous(port: Any, old_ports: list[dict[str, Any]]) -> int | None:
    if not isinstance(port, dict):
        return None
    for old in old_ports:
        if old.get("port") == port.get("port") and old.get("protocol", "TCP") == port.get(
            "protocol", "TCP"
        ):
            return old.get("nodePort")
    for old in old_ports:
        if port.get("name") and old.get("name") == port.get("name"):
            return old.get("nodePort")
    return None
