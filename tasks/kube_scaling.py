"""Scaling tasks of ``apply-scaling`` on Kubernetes: find what scales a Deployment (an
autoscaling/v2 HPA or a KEDA ``ScaledObject``), and write the hour's plan into it.

The decisions (floor, clamp, cron triggers, the sentence for the report) are
:mod:`decisions.kube_scaling`'s; these tasks read, decide with them, and write. Why they look the
way they do:

- **optimistic concurrency**: each write is a merge patch carrying the ``resourceVersion`` that
  was read, so a concurrent change (a person editing the HPA, KEDA's admission) makes ours fail
  with 409 instead of being overwritten; we then read again and decide again, bounded by
  :data:`tasks.kubernetes.APPLY_ATTEMPTS` rounds;
- **a 500 is retried** by the resilience layer, on top of its usual statuses: the
  ``resourceVersion`` precondition means a stored first attempt makes the retry fail with 409,
  never apply twice; the round that follows sees our own value and reports the change it made;
- **idempotent**: a run that finds the object already as decided writes nothing (the
  ``resourceVersion`` does not move), so the hourly deployment may run any number of times;
- **KEDA's HPA is not ours to patch**: KEDA creates an HPA per ScaledObject and reverts edits
  to it, so :func:`find_hpa` skips HPAs owned by a ScaledObject, and a Deployment scaled by KEDA
  gets cron triggers instead (:func:`apply_keda_schedule`);
- **dry_run** reads and decides, and writes nothing.

``kubernetes`` is only used through the block's clients: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.kubernetes import KubernetesTarget
from decisions.kube_scaling import (
    HpaChange,
    KedaChange,
    floor_from_annotations,
    hpa_change,
    keda_change,
    keda_cron_triggers,
    planned_minimum,
)
from decisions.scaling import ScheduleWindow
from runbooks.errors import InvalidRequestError, NotFoundError
from runbooks.resilience import call_kubernetes
from tasks.kubernetes import _target, converge, guarded_merge_patch, read_or_none

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

KEDA_GROUP = "keda.sh"
KEDA_VERSION = "v1alpha1"
KEDA_PLURAL = "scaledobjects"
KEDA_DEFAULT_MAX_REPLICAS = 100
"""``maxReplicaCount`` when a ScaledObject sets none (KEDA's default)."""


@task(name="find-scaled-object", cache_policy=NO_CACHE)
def find_scaled_object(k8s: KubernetesTarget, namespace: str, deployment: str) -> dict | None:
    """The KEDA ScaledObject whose ``spec.scaleTargetRef`` is the Deployment, or ``None`` when
    none is, or KEDA's CRD is not installed (the group answers 404). An unknown namespace is a
    ``NotFoundError`` naming it; two ScaledObjects on one Deployment an ``InvalidRequestError``."""
    with k8s.get_api_client() as api:
        found = _find_scaled_object(k8s, api, namespace, deployment)
        if found is None:
            _require_namespace(k8s, api, namespace)
    return found


@task(name="find-hpa", cache_policy=NO_CACHE)
def find_hpa(k8s: KubernetesTarget, namespace: str, deployment: str) -> dict | None:
    """The autoscaling/v2 HPA whose ``scaleTargetRef`` is the Deployment (KEDA's own HPAs
    skipped), as the API's JSON, or ``None``. An unknown namespace is a ``NotFoundError`` naming
    it; two HPAs on one Deployment an ``InvalidRequestError`` (the HPA controller refuses too)."""
    with k8s.get_api_client() as api:
        found = _find_hpa(k8s, api, namespace, deployment)
        if found is None:
            _require_namespace(k8s, api, namespace)
    return found


@task(name="apply-hpa-minimum", cache_policy=NO_CACHE)
def apply_hpa_minimum(
    k8s: KubernetesTarget,
    namespace: str,
    deployment: str,
    windows: Sequence[ScheduleWindow],
    *,
    now: datetime,
    dry_run: bool,
) -> HpaChange:
    """Set the HPA's ``minReplicas`` to ``now``'s planned minimum (floor and maxReplicas
    respected, see :func:`decisions.kube_scaling.hpa_change`); returns what changed.

    The floor and the value set are recorded in annotations in the same patch. Refused
    (``InvalidRequestError``) when no HPA but a ScaledObject scales the Deployment, or neither.
    """
    try:
        planned = planned_minimum(windows, now)
    except ValueError as exc:
        raise InvalidRequestError(f"apply-scaling of {namespace}/{deployment}: {exc}") from exc
    with k8s.get_api_client() as api:
        autoscaling = k8s.autoscaling_v2(api)

        def decide(attempted: HpaChange | None) -> tuple[str, HpaChange, Callable[[], object]]:
            hpa = _find_hpa(k8s, api, namespace, deployment)
            if hpa is None:
                raise _nothing_scales(k8s, api, namespace, deployment, wanted="HPA")
            meta, spec = hpa["metadata"], hpa.get("spec") or {}
            where = f"HorizontalPodAutoscaler {namespace}/{meta['name']}"
            current = int(spec.get("minReplicas", 1))
            annotations = meta.get("annotations") or {}
            try:
                change = hpa_change(
                    namespace,
                    meta["name"],
                    current_min=current,
                    max_replicas=int(spec["maxReplicas"]),
                    floor=floor_from_annotations(annotations, current),
                    planned=planned,
                    hour=now,
                )
            except ValueError as exc:
                raise InvalidRequestError(f"{where}: {exc}") from exc
            if (
                attempted is not None
                and not change.changed
                and change.after == attempted.after
                and all(annotations.get(k) == v for k, v in attempted.annotations.items())
            ):
                change = attempted  # our own earlier attempt was stored (a retried 500)
            body = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": change.annotations,
                },
                "spec": {"minReplicas": change.after},
            }
            return (
                where,
                change,
                guarded_merge_patch(
                    f"patch minReplicas of {where}",
                    autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                    meta["name"],
                    namespace,
                    body=body,
                    api=api,
                ),
            )

        return converge(
            decide,
            dry_run=dry_run,
            what=f"setting minReplicas of the HPA of {namespace}/{deployment}",
            target=f"{namespace}/{deployment}",
        )


@task(name="apply-keda-schedule", cache_policy=NO_CACHE)
def apply_keda_schedule(
    k8s: KubernetesTarget,
    namespace: str,
    deployment: str,
    windows: Sequence[ScheduleWindow],
    *,
    dry_run: bool,
) -> KedaChange:
    """Write ``windows`` as KEDA cron triggers into the Deployment's ScaledObject, keeping its
    other triggers; returns what changed.

    The floor is the ScaledObject's ``minReplicaCount`` (KEDA's default 0), the ceiling its
    ``maxReplicaCount`` (default 100). Refused (``InvalidRequestError``) when no ScaledObject
    scales the Deployment, or when the ScaledObject would be left with no trigger at all (KEDA
    refuses that; add a metric trigger such as cpu).
    """
    with k8s.get_api_client() as api:
        custom = k8s.custom_objects(api)

        def decide(attempted: KedaChange | None) -> tuple[str, KedaChange, Callable[[], object]]:
            scaled = _find_scaled_object(k8s, api, namespace, deployment)
            if scaled is None:
                raise _nothing_scales(k8s, api, namespace, deployment, wanted="ScaledObject")
            meta, spec = scaled["metadata"], scaled.get("spec") or {}
            where = f"ScaledObject {namespace}/{meta['name']}"
            floor = _count(spec, "minReplicaCount", 0, where)
            ceiling = _count(spec, "maxReplicaCount", KEDA_DEFAULT_MAX_REPLICAS, where)
            try:
                ours = keda_cron_triggers(windows, floor=floor, max_replicas=ceiling)
            except ValueError as exc:
                raise InvalidRequestError(f"{where}: {exc}") from exc
            existing = list(spec.get("triggers") or [])
            change = keda_change(namespace, meta["name"], existing=existing, ours=ours, floor=floor)
            if (
                attempted is not None
                and not change.changed
                and change.triggers == attempted.triggers
            ):
                change = attempted  # our own earlier attempt was stored (a retried 500)
            body = {
                "metadata": {"resourceVersion": meta["resourceVersion"]},
                "spec": {"triggers": change.triggers},
            }

            def write() -> object:
                if not change.triggers:
                    raise InvalidRequestError(
                        f"{where} would be left with no trigger (no window of the schedule is "
                        f"above its minReplicaCount {floor}) and KEDA requires one; add a metric "
                        "trigger (e.g. cpu) to it"
                    )
                return guarded_merge_patch(
                    f"patch the triggers of {where}",
                    custom.patch_namespaced_custom_object,
                    KEDA_GROUP,
                    KEDA_VERSION,
                    namespace,
                    KEDA_PLURAL,
                    meta["name"],
                    body=body,
                    api=api,
                )()

            return where, change, write

        return converge(
            decide,
            dry_run=dry_run,
            what=f"writing the cron triggers of the ScaledObject of {namespace}/{deployment}",
            target=f"{namespace}/{deployment}",
        )


# -- helpers --------------------------------------------------------------------------------------


def _targets(obj: dict[str, Any], deployment: str) -> bool:
    ref = (obj.get("spec") or {}).get("scaleTargetRef") or {}
    return ref.get("name") == deployment and ref.get("kind") in (None, "", "Deployment")


def _owned_by_keda(obj: dict[str, Any]) -> bool:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(
        o.get("kind") == "ScaledObject" and str(o.get("apiVersion", "")).startswith("keda.sh/")
        for o in owners
    )


def _one(found: list[dict[str, Any]], kind: str, namespace: str, deployment: str) -> dict | None:
    if len(found) > 1:
        names = ", ".join(sorted(o["metadata"]["name"] for o in found))
        raise InvalidRequestError(
            f"{len(found)} {kind}s scale Deployment {namespace}/{deployment} ({names}); "
            f"delete all but one"
        )
    return found[0] if found else None


def _find_hpa(
    k8s: KubernetesTarget, api: ApiClient, namespace: str, deployment: str
) -> dict | None:
    listed = call_kubernetes(
        f"list the HorizontalPodAutoscalers of {namespace}",
        k8s.autoscaling_v2(api).list_namespaced_horizontal_pod_autoscaler,
        namespace,
        target=_target(api),
    )
    items = [api.sanitize_for_serialization(item) for item in listed.items]
    found = [h for h in items if _targets(h, deployment) and not _owned_by_keda(h)]
    return _one(found, "HorizontalPodAutoscaler", namespace, deployment)


def _find_scaled_object(
    k8s: KubernetesTarget, api: ApiClient, namespace: str, deployment: str
) -> dict | None:
    try:
        listed = call_kubernetes(
            f"list the KEDA ScaledObjects of {namespace}",
            k8s.custom_objects(api).list_namespaced_custom_object,
            KEDA_GROUP,
            KEDA_VERSION,
            namespace,
            KEDA_PLURAL,
            target=_target(api),
        )
    except NotFoundError:
        return None  # KEDA's CRD is not installed: nothing can be a ScaledObject
    found = [o for o in listed.get("items") or [] if _targets(o, deployment)]
    return _one(found, "ScaledObject", namespace, deployment)


def _require_namespace(k8s: KubernetesTarget, api: ApiClient, namespace: str) -> None:
    what = f"Namespace {namespace}"
    if read_or_none(api, what, k8s.core_v1(api).read_namespace, namespace) is None:
        raise NotFoundError(
            f"namespace {namespace} does not exist; check the namespace of the service",
            status=404,
            target=namespace,
        )


def _nothing_scales(
    k8s: KubernetesTarget, api: ApiClient, namespace: str, deployment: str, *, wanted: str
) -> Exception:
    """The error for a Deployment without the autoscaler ``wanted``, saying what to do."""
    where = f"Deployment {namespace}/{deployment}"
    if wanted == "HPA":
        other = _find_scaled_object(k8s, api, namespace, deployment)
        if other is not None:
            return InvalidRequestError(
                f"{where} is scaled by KEDA ScaledObject {other['metadata']['name']}, which owns "
                "its HPA: apply the schedule as cron triggers (apply_keda_schedule)"
            )
    else:
        hpa = _find_hpa(k8s, api, namespace, deployment)
        if hpa is not None:
            return InvalidRequestError(
                f"{where} is scaled by HorizontalPodAutoscaler {hpa['metadata']['name']}, not a "
                "ScaledObject: apply the schedule to its minReplicas (apply_hpa_minimum)"
            )
    _require_namespace(k8s, api, namespace)
    return InvalidRequestError(
        f"no HPA and no ScaledObject scales {where}; create an HPA or ScaledObject first"
    )


def _count(spec: dict[str, Any], key: str, default: int, where: str) -> int:
    value = spec.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequestError(f"{where} has spec.{key} {value!r}; expected an integer >= 0")
    return value
