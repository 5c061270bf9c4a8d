"""core/v1 Events, as the kubelet and the deployment controller write them.

Why: ``kubectl describe`` and ``kubectl get events`` are what an SRE reads first when a rollout
stalls ("Back-off restarting failed container"), and the runbooks collect them as evidence.
Best effort, like upstream's recorder: an event that cannot be written is logged at debug
level and dropped; it never fails, slows or retries the work it describes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

from kubernetes.client import CoreV1Event

from sandbox.cluster.api import Kube
from sandbox.cluster.objects import rfc3339

logger = logging.getLogger("sandbox.cluster")


class EventRecorder:
    def __init__(self, kube: Kube, *, component: str, host: str, enabled: bool = True):
        self._kube = kube
        self._component = component
        self._host = host
        self._enabled = enabled

    def record(
        self,
        obj: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        field_path: str | None = None,
    ) -> None:
        if not self._enabled:
            return
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        stamp = rfc3339()
        kind = obj.get("kind") or "Pod"
        involved = {
            "apiVersion": obj.get("apiVersion") or ("apps/v1" if kind == "Deployment" else "v1"),
            "kind": kind,
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{secrets.token_hex(8)}",
                "namespace": namespace,
            },
            "involvedObject": {k: v for k, v in involved.items() if v is not None},
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": self._component, "host": self._host},
            "reportingComponent": self._component,
            "reportingInstance": self._host,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self._kube.call(
                f"create Event {reason} for {involved['kind']} {namespace}/{meta.get('name')}",
                self._kube.core.create_namespaced_event,
                namespace,
                CoreV1Event.model_validate(body),
                idempotent=False,
            )
        except Exception as exc:
            logger.debug("event %s dropped: %s", reason, exc)
