"""The knobs of the sandbox cluster, in one frozen value.

Why a separate value: the orchestrator, the tests and the benchmark each want different
timings (a test wants crash back-off in half-seconds, a demo wants to watch it), and every
component reads the same instance, so one place says what "time in the sandbox" means:

- what the *API* promises (``progressDeadlineSeconds``, ``minReadySeconds``, the
  ``lastUpdateTime`` of conditions) stays in real seconds, because tools such as
  ``kubectl rollout status`` and the blue-green runbook compute with those numbers;
- what the *kubelet* does on its own schedule (probe periods and initial delays, crash and
  image-pull back-off, the grace period it waits after SIGTERM) is scaled down, so a sandbox
  pod becomes ready in about a second instead of ten, while keeping the semantics (thresholds,
  doubling, caps) of the real thing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

SHOP_IMAGE = "demo/shop"


def _default_images() -> dict[str, tuple[str, ...]]:
    return {SHOP_IMAGE: (sys.executable, "-m", "sandbox.shop")}


@dataclass(frozen=True)
class ClusterSettings:
    """Timings and limits of the controller, the pod runner and the service proxy."""

    node_name: str = "sandbox"
    """Pods whose ``spec.nodeName`` is this (or empty) run here; the controller sets it."""

    images: Mapping[str, tuple[str, ...]] = field(default_factory=_default_images)
    """Image repository (no tag) -> command line. Any other image fails with ErrImagePull."""

    probe_time_scale: float = 0.1
    """Factor on probe ``periodSeconds`` / ``initialDelaySeconds`` (10 s -> 1 s by default)."""

    min_probe_period_seconds: float = 0.05
    """Floor of a scaled probe period, so a scaled 1 s period is not a busy loop."""

    crash_backoff_base_seconds: float = 0.5
    """First CrashLoopBackOff wait (the kubelet's 10 s), doubled after every crash."""

    crash_backoff_cap_seconds: float = 10.0
    """Largest CrashLoopBackOff wait (the kubelet's 5 min)."""

    crash_backoff_reset_seconds: float = 20.0
    """A container that ran this long before exiting starts its back-off afresh (10 min)."""

    max_grace_seconds: float = 5.0
    """Bound on the SIGTERM -> SIGKILL wait, whatever ``terminationGracePeriodSeconds`` says."""

    resync_seconds: float = 1.0
    """Period of the controller's full pass (progress deadlines, minReadySeconds)."""

    watch_timeout_seconds: int = 30
    """Server-side timeout of one watch request; the informer re-watches from the last RV."""

    relist_seconds: float = 300.0
    """A full LIST this often, in case a watch event was ever lost."""

    api_timeout_seconds: float = 10.0
    """Per-request timeout of the controller's own API calls (reads and writes)."""

    proxy_backend_timeout_seconds: float = 60.0
    """How long the service proxy waits for a pod's response before answering 504."""

    proxy_idle_timeout_seconds: float = 120.0
    """A client keep-alive connection idle this long is closed by the proxy."""

    proxy_replay_limit_bytes: int = 1 << 20
    """Request bodies up to this size are buffered, so a stale pod connection can be retried."""

    record_events: bool = True
    """Write core/v1 Events (Scheduled, Pulled, Started, Killing, BackOff, ...)."""

    def scaled_probe(self, seconds: float) -> float:
        return max(0.0, seconds * self.probe_time_scale)
