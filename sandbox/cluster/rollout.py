"""The Deployment controller's decisions, pure: which pods to create or delete, and the status.

Why pods directly and no ReplicaSets: the emulator serves no ReplicaSets and nothing in the
runbooks reads them (``kubectl rollout status`` and the blue-green runbook read the
Deployment's status). The controller owns Pods directly (``ownerReferences`` -> Deployment),
groups them by ``pod-template-hash`` exactly as ReplicaSets would group them, and applies the
upstream algorithm (``pkg/controller/deployment``) to those groups:

- RollingUpdate: scale the new group up while the total stays within ``replicas + maxSurge``;
  remove old pods first when they are unhealthy, then while the available pods stay at least
  ``replicas - maxUnavailable``; one kind of step per pass, like ``rolloutRolling``;
- Recreate: delete every old pod, wait until none is left (terminating included), then create;
- status: counts, ``Available`` and ``Progressing`` with upstream's reasons, messages and
  timestamp rules (``lastUpdateTime`` moves on progress, ``lastTransitionTime`` on a status
  change), ``ProgressDeadlineExceeded`` once ``progressDeadlineSeconds`` pass without progress.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sandbox.cluster.objects import parse_time, resolve_int_or_percent, rfc3339

NEW_RS_CREATED = "NewReplicaSetCreated"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the planner needs to know about one live (not terminating) pod."""

    name: str
    hash: str
    ready: bool
    available: bool
    running: bool
    created: str  # creationTimestamp: RFC 3339 sorts as time


@dataclass(frozen=True, slots=True)
class Step:
    create: int = 0
    delete: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    replicas: int
    surge: int
    unavailable: int
    recreate: bool


def limits(spec: Mapping[str, Any]) -> Limits:
    """Replicas and the resolved ``maxSurge`` / ``maxUnavailable`` (25 % / 25 % by default)."""
    replicas = spec.get("replicas")
    replicas = 1 if replicas is None else int(replicas)
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return Limits(replicas, 0, replicas, recreate=True)
    rolling = strategy.get("rollingUpdate") or {}
    surge = resolve_int_or_percent(rolling.get("maxSurge"), replicas, round_up=True, default="25%")
    unavailable = resolve_int_or_percent(
        rolling.get("maxUnavailable"), replicas, round_up=False, default="25%"
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1  # upstream: both zero would deadlock, so one may be unavailable
    return Limits(replicas, surge, min(unavailable, replicas), recreate=False)


def _deletion_order(pods: Sequence[PodFacts]) -> list[PodFacts]:
    """Upstream's ranking for scale-down: not running, then not ready, then newest first."""
    newest_first = sorted(pods, key=lambda p: p.created, reverse=True)
    return sorted(newest_first, key=lambda p: (p.running, p.ready, p.available))


def plan(
    limits_: Limits,
    new_hash: str,
    pods: Sequence[PodFacts],
    *,
    old_terminating: int = 0,
    paused: bool = False,
) -> Step:
    """The next step towards ``replicas`` pods of template ``new_hash``."""
    new = [p for p in pods if p.hash == new_hash]
    old = [p for p in pods if p.hash != new_hash]
    replicas = limits_.replicas
    if paused:
        # a paused rollout still scales (proportionally upstream; here: the new group only)
        return _scale(new, replicas) if not old else Step()
    if limits_.recreate:
        if old:
            return Step(delete=tuple(p.name for p in _deletion_order(old)))
        if old_terminating:
            return Step()  # Recreate: new pods only once every old one is gone
        return _scale(new, replicas)
    if not old:
        return _scale(new, replicas)
    if len(new) > replicas:
        return Step(delete=tuple(p.name for p in _deletion_order(new)[: len(new) - replicas]))
    # 1. scale the new group up within maxSurge
    if len(new) < replicas:
        room = replicas + limits_.surge - len(pods)
        create = min(room, replicas - len(new))
        if create > 0:
            return Step(create=create)
    # 2. scale the old groups down: unhealthy pods first, then while availability allows
    min_available = replicas - limits_.unavailable
    new_unavailable = sum(not p.available for p in new)
    max_cleanup = len(pods) - min_available - new_unavailable
    if max_cleanup <= 0:
        return Step()  # upstream returns here: the new pods must become available first
    unhealthy = [p for p in _deletion_order(old) if not p.available]
    doomed = [p.name for p in unhealthy[:max_cleanup]]
    available_total = sum(p.available for p in pods)
    scale_down = available_total - min_available
    if scale_down > 0:
        healthy_old = sorted((p for p in old if p.available), key=lambda p: p.created)
        doomed += [p.name for p in healthy_old[:scale_down]]
    return Step(delete=tuple(doomed))


def _scale(new: Sequence[PodFacts], replicas: int) -> Step:
    if len(new) < replicas:
        return Step(create=replicas - len(new))
    if len(new) > replicas:
        return Step(delete=tuple(p.name for p in _deletion_order(new)[: len(new) - replicas]))
    return Step()


# -- status ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    replicas: int
    updated: int
    ready: int
    available: int


def counts(pods: Sequence[PodFacts], new_hash: str) -> Counts:
    return Counts(
        replicas=len(pods),
        updated=sum(p.hash == new_hash for p in pods),
        ready=sum(p.ready for p in pods),
        available=sum(p.available for p in pods),
    )


def status(
    deployment: Mapping[str, Any],
    now_counts: Counts,
    *,
    group_name: str,
    created_group: bool,
    at: datetime,
) -> dict[str, Any]:
    """The Deployment's next ``status`` (upstream's ``calculateStatus`` + ``syncRolloutStatus``).

    Zero counts are left out, as the API server's ``omitempty`` does.
    """
    spec = deployment.get("spec") or {}
    previous = deployment.get("status") or {}
    limits_ = limits(spec)
    replicas = limits_.replicas
    unavailable = max(0, max(now_counts.replicas, replicas) - now_counts.available)
    out: dict[str, Any] = {
        "observedGeneration": int((deployment.get("metadata") or {}).get("generation") or 1)
    }
    for name, value in (
        ("replicas", now_counts.replicas),
        ("updatedReplicas", now_counts.updated),
        ("readyReplicas", now_counts.ready),
        ("availableReplicas", now_counts.available),
        ("unavailableReplicas", unavailable),
    ):
        if value:
            out[name] = value
    if previous.get("collisionCount"):
        out["collisionCount"] = previous["collisionCount"]
    conditions = {c.get("type"): dict(c) for c in previous.get("conditions") or []}
    stamp = rfc3339(at)

    def put(kind: str, state: str, reason: str, message: str, *, touch: bool = False) -> None:
        """Upstream's SetDeploymentCondition; ``touch`` moves lastUpdateTime on progress."""
        current = conditions.get(kind)
        if current and current.get("status") == state and current.get("reason") == reason:
            if not touch:
                return
            conditions[kind] = current | {"lastUpdateTime": stamp, "message": message}
            return
        transition = (
            current["lastTransitionTime"]
            if current and current.get("status") == state and current.get("lastTransitionTime")
            else stamp
        )
        conditions[kind] = {
            "type": kind,
            "status": state,
            "lastUpdateTime": stamp,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }

    if now_counts.available >= replicas - limits_.unavailable:
        put("Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.")
    else:
        put("Available", "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.")

    what = f'ReplicaSet "{group_name}"'
    complete = (
        now_counts.updated == replicas
        and now_counts.replicas == replicas
        and now_counts.available == replicas
    )
    if spec.get("paused"):
        put("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
    elif created_group:
        put("Progressing", "True", NEW_RS_CREATED, f'Created new replica set "{group_name}"')
    elif complete:
        put("Progressing", "True", NEW_RS_AVAILABLE, f"{what} has successfully progressed.")
    elif _progressed(previous, now_counts):
        put("Progressing", "True", RS_UPDATED, f"{what} is progressing.", touch=True)
    elif _timed_out(conditions.get("Progressing"), spec, at):
        put("Progressing", "False", TIMED_OUT, f"{what} has timed out progressing.")
    out["conditions"] = [conditions[k] for k in ("Available", "Progressing") if k in conditions]
    out["conditions"] += [c for k, c in conditions.items() if k not in ("Available", "Progressing")]
    return out


def _progressed(previous: Mapping[str, Any], now_counts: Counts) -> bool:
    """Upstream's ``DeploymentProgressing``: more updated/ready/available, or fewer old pods."""
    before_old = int(previous.get("replicas") or 0) - int(previous.get("updatedReplicas") or 0)
    now_old = now_counts.replicas - now_counts.updated
    return (
        now_counts.updated > int(previous.get("updatedReplicas") or 0)
        or now_old < before_old
        or now_counts.ready > int(previous.get("readyReplicas") or 0)
        or now_counts.available > int(previous.get("availableReplicas") or 0)
    )


def _timed_out(
    progressing: Mapping[str, Any] | None, spec: Mapping[str, Any], at: datetime
) -> bool:
    """Upstream's ``DeploymentTimedOut``, against the condition's ``lastUpdateTime``."""
    if progressing is None:
        return False
    if progressing.get("reason") == NEW_RS_AVAILABLE:
        return False
    if progressing.get("reason") == TIMED_OUT:
        return True
    deadline = spec.get("progressDeadlineSeconds")
    deadline = 600 if deadline is None else int(deadline)
    since = parse_time(progressing.get("lastUpdateTime"))
    return since is not None and since + timedelta(seconds=deadline) < at
