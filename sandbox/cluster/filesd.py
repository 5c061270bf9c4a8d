"""Prometheus ``file_sd`` targets for every Ready pod, kept current and written atomically.

Why a file and not Prometheus' Kubernetes discovery: ``kubernetes_sd_configs`` would find pods
at ``status.podIP`` (127.0.0.1 for all of them) and their *declared* ports, not the real ones
the runner picked. The file lists ``127.0.0.1:<real port>`` with the labels a
``kubernetes_sd`` relabelling would give (``namespace``, ``pod``, ``app``, ``version``,
``role``, ``deployment``, ``container``), so PromQL written for a real cluster reads the same.

Rules: only Ready, non-terminating pods (a pod leaving is dropped before its process gets
SIGTERM); ``prometheus.io/scrape: "false"`` opts out, ``prometheus.io/port`` picks the
container port to scrape and ``prometheus.io/path`` sets ``__metrics_path__``; the file is
rewritten only when its content changes, via a temporary file and ``rename`` (Prometheus
never reads half a file).
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from sandbox.cluster.api import Store
from sandbox.cluster.objects import (
    LOOPBACK,
    Obj,
    annotations,
    controller_of,
    is_ready,
    key,
    labels,
    resolve_target_port,
    split_image,
)

_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def targets(pods: list[Obj]) -> list[dict[str, Any]]:
    """The file's content for these pods (sorted, deterministic)."""
    out = []
    for pod in pods:
        if not is_ready(pod):
            continue
        notes = annotations(pod)
        if notes.get("prometheus.io/scrape", "").lower() == "false":
            continue
        wanted = notes.get("prometheus.io/port")
        port = resolve_target_port(pod, int(wanted) if wanted and wanted.isdigit() else None)
        if port is None:
            continue
        namespace, name = key(pod)
        pod_labels = labels(pod)
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        first = containers[0]
        _, tag = split_image(str(first.get("image") or ""))
        env = {e.get("name"): e.get("value") for e in first.get("env") or [] if "value" in e}
        owner = controller_of(pod) or {}
        found = {
            "namespace": namespace,
            "pod": name,
            "container": first.get("name"),
            "app": pod_labels.get("app") or pod_labels.get("app.kubernetes.io/name"),
            "version": pod_labels.get("version") or tag,
            "image_tag": tag,
            "role": env.get("SHOP_ROLE") or pod_labels.get("role") or pod_labels.get("component"),
            "deployment": owner.get("name") if owner.get("kind") == "Deployment" else None,
            "node": (pod.get("spec") or {}).get("nodeName"),
            "__metrics_path__": notes.get("prometheus.io/path"),
        }
        for label, value in pod_labels.items():
            found.setdefault(f"label_{_LABEL.sub('_', label)}", value)
        out.append(
            {
                "targets": [f"{LOOPBACK}:{port}"],
                "labels": {k: str(v) for k, v in sorted(found.items()) if v},
            }
        )
    out.sort(key=lambda t: (t["labels"].get("namespace", ""), t["labels"].get("pod", "")))
    return out


class FileSd:
    """Writes ``path`` whenever the Ready pods change; :meth:`on_event` is the pod handler."""

    def __init__(self, path: Path, pods: Store):
        self.path = path
        self._pods = pods
        self._lock = threading.Lock()
        self._last: str | None = None
        self.writes = 0

    def on_event(self, kind: str, obj: Obj, previous: Obj | None) -> None:
        self.write()

    def write(self) -> bool:
        with self._lock:
            text = json.dumps(targets(self._pods.list()), indent=1, sort_keys=True) + "\n"
            if text == self._last:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)
            self._last = text
            self.writes += 1
            return True
