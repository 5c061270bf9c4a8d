"""Kubernetes tasks: read, apply, scale and wait for Deployments; read, ensure and switch Services.

Each task is one external effect on the cluster the ``KubernetesTarget`` block points at, made
through :func:`runbooks.resilience.call_kubernetes` (full-jitter retries, retry budget, circuit
breaker, errors translated into :mod:`runbooks.errors`). Why the tasks look the way they do:

- **no Prefect retries and no caching** (``cache_policy=NO_CACHE``): the resilience layer is the
  one retry layer around each API call, and a task that reads or changes live state must never
  be answered from a cache of an earlier run;
- **idempotent writes**: ``apply_deployment`` replaces with the live ``resourceVersion`` (the
  server refuses a stale write with 409, we re-read and try again, bounded), ``scale_deployment``
  sets an absolute count, ``ensure_service`` creates only what is missing, and
  ``patch_service_selector`` is a JSON patch whose ``test`` op detects a concurrent change: all
  of them converge when re-run after a crash, so they may be retried on 5xx and timeouts;
- **the breaker and budget are per API server** (``host:port`` of the kubeconfig's cluster), so
  one cluster in trouble does not stop calls to another;
- **small frozen results** (:class:`DeploymentState`, :class:`ServiceState`): what a plan or an
  analysis needs, comparable and printable, not the client's whole object.

``kubernetes`` is imported inside the tasks: importing it takes about a second, and importing
this module (``prefect deploy``, the UI's parameter schema) needs none of it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from blocks.kubernetes import KubernetesTarget
from runbooks.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermanentError,
    RunbookError,
    TransientError,
)
from runbooks.kit._run import logger as run_logger
from runbooks.resilience import call_kubernetes

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

APPLY_ATTEMPTS = 5
"""Read-modify-write rounds ``apply_deployment`` makes when another writer keeps winning (409)."""

FAILED_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Container ``waiting`` reasons that mean the new version will not come up by waiting longer."""

PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


# -- results and errors -------------------------------------------------------------------------


class DeploymentCondition(BaseModel):
    """One ``status.conditions[]`` entry of a Deployment (``Available``, ``Progressing``)."""

    model_config = ConfigDict(frozen=True)

    type: str
    status: str
    reason: str | None = None
    message: str | None = None


class DeploymentState(BaseModel):
    """What a runbook needs to know about a Deployment: its version, size and rollout progress."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    image: str | None = Field(description="Image of the first container of the pod template.")
    replicas: int = Field(description="spec.replicas: the desired number of pods.")
    total_replicas: int = Field(0, description="status.replicas: pods of every template.")
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    generation: int = 0
    observed_generation: int = 0
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    selector: dict[str, str] = Field(
        default_factory=dict, description="spec.selector.matchLabels: the pods it owns."
    )
    conditions: tuple[DeploymentCondition, ...] = ()

    @property
    def rolled_out(self) -> bool:
        """The controller saw the latest spec and every desired pod runs it and is available
        (``kubectl rollout status``'s test, old pods included)."""
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas == self.replicas
            and self.available_replicas == self.replicas
            and self.total_replicas <= self.replicas
        )

    @property
    def progress_deadline_exceeded(self) -> bool:
        """The controller gave up on progress (``Progressing=False, ProgressDeadlineExceeded``)."""
        return any(
            c.type == "Progressing" and c.reason == PROGRESS_DEADLINE_EXCEEDED
            for c in self.conditions
        )

    def condition(self, kind: str) -> DeploymentCondition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def summary(self) -> str:
        """One line for logs and errors: image, generation and replica counts."""
        return (
            f"{self.namespace}/{self.name} image={self.image} "
            f"generation={self.generation} observed={self.observed_generation} "
            f"replicas={self.replicas} updated={self.updated_replicas} "
            f"ready={self.ready_replicas} available={self.available_replicas}"
        )

    @classmethod
    def from_api(cls, deployment: Any) -> DeploymentState:
        """From a ``V1Deployment`` returned by the client."""
        meta, spec, status = deployment.metadata, deployment.spec, deployment.status
        containers = spec.template.spec.containers if spec and spec.template.spec else []
        conditions = tuple(
            DeploymentCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in (status.conditions if status and status.conditions else [])
        )
        selector = spec.selector.match_labels if spec and spec.selector else None
        return cls(
            namespace=meta.namespace or "",
            name=meta.name or "",
            image=containers[0].image if containers else None,
            replicas=1 if spec is None or spec.replicas is None else spec.replicas,
            total_replicas=(status.replicas or 0) if status else 0,
            updated_replicas=(status.updated_replicas or 0) if status else 0,
            ready_replicas=(status.ready_replicas or 0) if status else 0,
            available_replicas=(status.available_replicas or 0) if status else 0,
            generation=meta.generation or 0,
            observed_generation=(status.observed_generation or 0) if status else 0,
            resource_version=meta.resource_version,
            labels=dict(meta.labels or {}),
            selector=dict(selector or {}),
            conditions=conditions,
        )


class ServicePort(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str | None = None
    port: int
    node_port: int | None = None
    target_port: int | str | None = Field(None, description="Pod port (number or name).")


class ServiceState(BaseModel):
    """A Service as a blue-green switch sees it: which pods it selects, where it listens."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    selector: dict[str, str] = Field(default_factory=dict)
    ports: tuple[ServicePort, ...] = ()
    created: bool = Field(False, description="True when this call created the Service.")

    @classmethod
    def from_api(cls, service: Any, *, created: bool = False) -> ServiceState:
        spec = service.spec
        return cls(
            namespace=service.metadata.namespace or "",
            name=service.metadata.name or "",
            selector=dict((spec.selector if spec else None) or {}),
            ports=tuple(
                ServicePort(
                    name=p.name, port=p.port, node_port=p.node_port, target_port=p.target_port
                )
                for p in ((spec.ports if spec else None) or [])
            ),
            created=created,
        )


class RolloutFailedError(PermanentError):
    """The new version will not become available by waiting: a pod of the new template is
    crash-looping or its image cannot be pulled, or the progress deadline passed."""

    def __init__(
        self,
        message: str,
        *,
        deployment: str,
        reason: str,
        pod: str | None = None,
        container: str | None = None,
    ):
        super().__init__(message, target=deployment)
        self.deployment = deployment
        self.reason = reason
        self.pod = pod
        self.container = container


class RolloutTimeoutError(TransientError):
    """The rollout was still progressing when the caller's timeout ran out (waiting longer, or
    again, may succeed: nothing says the new version is broken)."""


# -- tasks ----------------------------------------------------------------------------------------


@task(name="read-deployment", cache_policy=NO_CACHE)
def read_deployment(k8s: KubernetesTarget, namespace: str, name: str) -> DeploymentState | None:
    """The Deployment's image, size and rollout progress; ``None`` when it does not exist.

    A plan needs to tell "absent" (the idle colour was never deployed) from "present": a 404 is
    that answer, not an error. Every other failure raises.
    """
    with k8s.get_api_client() as api:
        found = _read_deployment(k8s, api, namespace, name)
    return DeploymentState.from_api(found) if found is not None else None


@task(name="read-deployment-manifest", cache_policy=NO_CACHE)
def read_deployment_manifest(
    k8s: KubernetesTarget, namespace: str, name: str
) -> dict[str, Any] | None:
    """The live Deployment as a plain manifest (camelCase, as ``kubectl get -o json``), without
    ``status``; ``None`` when it does not exist.

    What a blue-green rollout copies to deploy the idle colour: the active colour's live spec
    (probes, env, resources...) with only the image and the colour labels changed.
    """
    with k8s.get_api_client() as api:
        found = _read_deployment(k8s, api, namespace, name)
        if found is None:
            return None
        manifest = api.sanitize_for_serialization(found)
    manifest.pop("status", None)
    return manifest


@task(name="read-service", cache_policy=NO_CACHE)
def read_service(k8s: KubernetesTarget, namespace: str, name: str) -> ServiceState | None:
    """The Service's selector and ports (``nodePort`` included); ``None`` when it does not exist."""
    with k8s.get_api_client() as api:
        found = _read_service(k8s, api, namespace, name)
    return ServiceState.from_api(found) if found is not None else None


@task(name="read-service-selector", cache_policy=NO_CACHE)
def read_service_selector(
    k8s: KubernetesTarget, namespace: str, name: str
) -> dict[str, str] | None:
    """The Service's ``spec.selector`` (``{}`` when it selects nothing); ``None`` when the
    Service does not exist.

    The active colour of a blue-green pair is read from here: the selector *is* the switch.
    """
    with k8s.get_api_client() as api:
        found = _read_service(k8s, api, namespace, name)
    if found is None:
        return None
    return dict((found.spec.selector if found.spec else None) or {})


@task(name="apply-deployment", cache_policy=NO_CACHE)
def apply_deployment(k8s: KubernetesTarget, manifest: Mapping[str, Any]) -> DeploymentState:
    """Create the Deployment, or replace it with ``manifest``; returns the state after the write.

    Idempotent: re-applying the same manifest converges (the server bumps ``generation`` only when
    the spec changes, so a re-run starts no new rollout). The replace carries the live
    ``resourceVersion``, so a concurrent writer makes it fail with 409 instead of being silently
    overwritten; we then re-read and apply again, at most ``APPLY_ATTEMPTS`` times. Annotations
    the manifest does not mention (e.g. the controller's ``deployment.kubernetes.io/revision``)
    are kept. The namespace is the manifest's, else the block's.
    """
    namespace, name = _identity(k8s, manifest, "Deployment")
    where = f"Deployment {namespace}/{name}"
    logger = run_logger(__name__)
    with k8s.get_api_client() as api:
        apps = k8s.apps_v1(api)
        target = _target(api)
        last: ConflictError | None = None
        for _ in range(APPLY_ATTEMPTS):
            live = _read_deployment(k8s, api, namespace, name)
            body = _body(manifest, namespace)
            try:
                if live is None:
                    # a create retried after a lost answer meets 409 AlreadyExists: handled below
                    written = call_kubernetes(
                        f"create {where}",
                        apps.create_namespaced_deployment,
                        namespace,
                        body,
                        target=target,
                        idempotent=True,
                    )
                    logger.info("created %s with image %s", where, _first_image(body))
                else:
                    meta = body["metadata"]
                    meta["resourceVersion"] = live.metadata.resource_version
                    kept = dict(live.metadata.annotations or {})
                    meta["annotations"] = kept | dict(meta.get("annotations") or {})
                    # idempotent: a replace with a resourceVersion cannot apply twice
                    written = call_kubernetes(
                        f"replace {where}",
                        apps.replace_namespaced_deployment,
                        name,
                        namespace,
                        body,
                        target=target,
                        idempotent=True,
                    )
                    before = live.metadata.generation
                    after = written.metadata.generation
                    logger.info(
                        "replaced %s with image %s (generation %s -> %s)",
                        where,
                        _first_image(body),
                        before,
                        after,
                    )
            except ConflictError as exc:
                last = exc  # someone wrote in between (or our lost create did): read again
                continue
            return DeploymentState.from_api(written)
    raise ConflictError(
        f"apply {where} conflicted {APPLY_ATTEMPTS} times in a row: another writer keeps "
        "changing it; stop that writer (or wait for it) and apply again",
        status=409,
        target=where,
    ) from last


@task(name="scale-deployment", cache_policy=NO_CACHE)
def scale_deployment(k8s: KubernetesTarget, namespace: str, name: str, replicas: int) -> int:
    """Set the Deployment's ``spec.replicas`` through its ``/scale`` subresource; returns it.

    Through ``/scale``, not a patch of the Deployment, so nothing but the size can change (and an
    autoscaler or RBAC rule written for scaling applies). Setting an absolute count is idempotent.
    """
    if replicas < 0:
        raise InvalidRequestError(f"replicas must be >= 0, got {replicas}")
    where = f"Deployment {namespace}/{name}"
    with k8s.get_api_client() as api:
        scale = call_kubernetes(
            f"scale {where} to {replicas}",
            k8s.apps_v1(api).patch_namespaced_deployment_scale,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
            target=_target(api),
            idempotent=True,
        )
    run_logger(__name__).info("scaled %s to %d replicas", where, replicas)
    return int(scale.spec.replicas if scale.spec and scale.spec.replicas is not None else 0)


CONDITIONAL_RETRY_STATUSES = frozenset({500})
"""Statuses retried *on top of* the policy's for a selector patch with a ``test`` precondition.

An HTTP 500 from the API server ("Internal error occurred": an etcd hiccup, a webhook or
conversion failure) leaves it unknown whether the write was stored, so the policy does not retry
a 500. A patch whose ``test`` op pins the current selector can be applied at most once: a retry
after a stored attempt fails its test and is settled by reading the selector back. (Old API
servers even answered a failed ``test`` with a 500: a retry then fails the same way, and the read
back names the real cause.)"""


@task(name="patch-service-selector", cache_policy=NO_CACHE)
def patch_service_selector(
    k8s: KubernetesTarget,
    namespace: str,
    name: str,
    selector: dict[str, str],
    *,
    expected: dict[str, str] | None = None,
) -> dict[str, str]:
    """Switch the Service to the pods ``selector`` matches, in one atomic write; returns it.

    With ``expected`` the JSON patch starts with a ``test`` op on the current selector, so the
    server refuses the switch if someone changed the Service since the plan read it: that is a
    ``ConflictError`` (re-plan), and the Service is left as it was.

    Why the patch is sent as idempotent (retried by the resilience layer on 429, 5xx and
    timeouts, within its bounds): setting a selector to a value twice gives the same Service.
    With ``expected``, a 500 is retried too (:data:`CONDITIONAL_RETRY_STATUSES`): the ``test``
    makes a second application impossible, so a retry can never switch to anything but
    ``selector``.

    Why a failure is settled by reading the selector back (with ``expected`` only): when an
    attempt was stored but its answer was lost (timeout, 500, dropped connection), the retry's
    ``test`` fails, or every attempt fails; the selector then already equals ``selector`` and
    the switch succeeded, which is what the caller needs to know, in particular a rollback that
    switches back after the forward switch never happened. A selector equal to neither is a
    ``ConflictError``; still equal to ``expected``, the original error is raised (nothing
    changed). If the read fails too, the original error is raised.
    """
    where = f"Service {namespace}/{name}"
    operations: list[dict[str, Any]] = []
    if expected is not None:
        operations.append({"op": "test", "path": "/spec/selector", "value": dict(expected)})
    # "add" sets the member whether or not it exists (RFC 6902), "replace" needs it to exist
    operations.append({"op": "add", "path": "/spec/selector", "value": dict(selector)})
    logger = run_logger(__name__)
    with k8s.get_api_client() as api:
        core = k8s.core_v1(api)
        try:
            patched = call_kubernetes(
                f"patch the selector of {where}",
                core.patch_namespaced_service,
                name,
                namespace,
                operations,
                _content_type=JSON_PATCH,
                target=_target(api),
                idempotent=True,
                retry_also=CONDITIONAL_RETRY_STATUSES if expected is not None else frozenset(),
            )
        except (InvalidRequestError, TransientError) as exc:
            if expected is None or isinstance(exc, ConflictError):
                raise
            current = _selector_after_failed_patch(k8s, api, namespace, name, exc)
            if current is None:
                raise  # unreadable too: the patch's own error says more
            if current == selector:
                logger.info("selector of %s already is %s (%s)", where, selector, exc)
                return current
            if current != expected:
                raise ConflictError(
                    f"the selector of {where} is {current}, not the expected {expected}: "
                    "someone else changed it; read the live state and plan again",
                    status=409,
                    target=where,
                ) from exc
            raise  # nothing changed: the server refused the patch itself, or was unavailable
    now = dict((patched.spec.selector if patched.spec else None) or {})
    logger.info("selector of %s is now %s", where, now)
    return now


def _selector_after_failed_patch(
    k8s: KubernetesTarget, api: ApiClient, namespace: str, name: str, failure: RunbookError
) -> dict[str, str] | None:
    """The live selector, read to settle a failed patch; ``None`` when it cannot be read."""
    where = f"Service {namespace}/{name}"
    try:
        found = _read_service(k8s, api, namespace, name)
    except RunbookError as exc:
        run_logger(__name__).warning("could not read %s back after %s: %s", where, failure, exc)
        return None
    if found is None:
        raise NotFoundError(
            f"{where} disappeared while its selector was being patched", target=where
        ) from failure
    return dict((found.spec.selector if found.spec else None) or {})


@task(name="json-patch-deployment", cache_policy=NO_CACHE)
def json_patch_deployment(
    k8s: KubernetesTarget, namespace: str, name: str, operations: list[dict[str, Any]]
) -> DeploymentState:
    """Apply a JSON patch (RFC 6902) to the Deployment; its state after.

    For patches that carry their own guard (a ``test`` op on what they change) and set whole
    values (``add`` on ``env``, on the template's annotations): applying one twice gives the
    same Deployment, so it is sent as idempotent and a 500 is retried too. A failed ``test``
    (the Deployment changed since it was read) is the server's 422, an ``InvalidRequestError``:
    re-plan from the live state.
    """
    if not operations:
        raise InvalidRequestError(f"an empty patch for Deployment {namespace}/{name}")
    with k8s.get_api_client() as api:
        patched = call_kubernetes(
            f"patch Deployment {namespace}/{name}",
            k8s.apps_v1(api).patch_namespaced_deployment,
            name,
            namespace,
            operations,
            _content_type=JSON_PATCH,
            target=_target(api),
            idempotent=True,
            retry_also=CONDITIONAL_RETRY_STATUSES,
        )
    return DeploymentState.from_api(patched)


@task(name="apply-config-map", cache_policy=NO_CACHE)
def apply_config_map(k8s: KubernetesTarget, manifest: Mapping[str, Any]) -> str:
    """Create the ConfigMap, or replace its data and labels when it exists; its resourceVersion.

    Replace, not merge: the manifest is the whole intended content (a generated config), and a
    key left over from an older version would be read as current.
    """
    namespace, name = _identity(k8s, manifest, "ConfigMap")
    body = _body(manifest, namespace)
    with k8s.get_api_client() as api:
        core = k8s.core_v1(api)
        live = read_or_none(
            api,
            f"ConfigMap {namespace}/{name}",
            core.read_namespaced_config_map,
            name,
            namespace,
        )
        if live is None:
            done = call_kubernetes(
                f"create ConfigMap {namespace}/{name}",
                core.create_namespaced_config_map,
                namespace,
                body,
                target=_target(api),
            )
        else:
            body["metadata"]["resourceVersion"] = live.metadata.resource_version
            done = call_kubernetes(
                f"replace ConfigMap {namespace}/{name}",
                core.replace_namespaced_config_map,
                name,
                namespace,
                body,
                target=_target(api),
            )
    return str(done.metadata.resource_version)


@task(name="apply-custom-object", cache_policy=NO_CACHE)
def apply_custom_object(
    k8s: KubernetesTarget, group: str, version: str, plural: str, manifest: Mapping[str, Any]
) -> bool:
    """Create the namespaced custom object, or replace its spec, labels and annotations when it
    exists; True when it was created (so an undo knows to delete it).

    A 404 on the type itself (its CustomResourceDefinition is not installed) is an
    ``InvalidRequestError`` saying which CRD to install.
    """
    meta = manifest.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or k8s.namespace), str(meta.get("name") or "")
    if not name:
        raise InvalidRequestError(f"the {manifest.get('kind')} manifest has no metadata.name")
    where = f"{manifest.get('kind', plural)} {namespace}/{name}"
    with k8s.get_api_client() as api:
        custom = k8s.custom_objects(api)
        try:
            live = read_or_none(
                api,
                where,
                custom.get_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
            )
            body = copy.deepcopy(dict(manifest))
            if live is None:
                call_kubernetes(
                    f"create {where}",
                    custom.create_namespaced_custom_object,
                    group,
                    version,
                    namespace,
                    plural,
                    body,
                    target=_target(api),
                )
                return True
            body["metadata"] = {
                **body.get("metadata", {}),
                "resourceVersion": live["metadata"]["resourceVersion"],
            }
            call_kubernetes(
                f"replace {where}",
                custom.replace_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
                body,
                target=_target(api),
            )
        except NotFoundError as exc:
            raise InvalidRequestError(
                f"{where}: the API has no {plural}.{group}/{version}; install its "
                f"CustomResourceDefinition (e.g. the OpenTelemetry Operator) first"
            ) from exc
    return False


@task(name="delete-custom-object", cache_policy=NO_CACHE)
def delete_custom_object(
    k8s: KubernetesTarget, group: str, version: str, plural: str, namespace: str, name: str
) -> bool:
    """Delete it; False when it was already gone."""
    with k8s.get_api_client() as api:
        try:
            call_kubernetes(
                f"delete {plural} {namespace}/{name}",
                k8s.custom_objects(api).delete_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
                target=_target(api),
            )
        except NotFoundError:
            return False
    return True


@task(name="ensure-service", cache_policy=NO_CACHE)
def ensure_service(k8s: KubernetesTarget, manifest: Mapping[str, Any]) -> ServiceState:
    """Create the Service if it does not exist; an existing one is returned untouched.

    Untouched on purpose: an existing Service's selector is the live traffic switch, and only
    ``patch_service_selector`` (with its concurrency test) may change it. ``created`` says which
    case happened.
    """
    namespace, name = _identity(k8s, manifest, "Service")
    where = f"Service {namespace}/{name}"
    with k8s.get_api_client() as api:
        core = k8s.core_v1(api)
        found = _read_service(k8s, api, namespace, name)
        if found is not None:
            return ServiceState.from_api(found)
        try:
            created = call_kubernetes(
                f"create {where}",
                core.create_namespaced_service,
                namespace,
                _body(manifest, namespace),
                target=_target(api),
                idempotent=True,  # a retry after a lost answer meets 409: read below
            )
        except ConflictError:
            found = _read_service(k8s, api, namespace, name)
            if found is None:
                raise
            return ServiceState.from_api(found)
    run_logger(__name__).info("created %s", where)
    return ServiceState.from_api(created, created=True)


@task(name="wait-for-rollout", cache_policy=NO_CACHE)
def wait_for_rollout(
    k8s: KubernetesTarget,
    namespace: str,
    name: str,
    *,
    timeout_seconds: float,
    poll_seconds: float = 0.5,
    max_restarts: int = 3,
) -> DeploymentState:
    """Wait until the Deployment's latest spec is rolled out; fail as soon as it cannot be.

    Success: ``observedGeneration >= generation`` and updated == available == ``spec.replicas``
    (no pod of an older template left). Fails fast with :class:`RolloutFailedError`, naming the
    pod and reason, when a pod of the *new* template is in ``CrashLoopBackOff``,
    ``ImagePullBackOff``, ``ErrImagePull`` (and the like) or restarted more than
    ``max_restarts`` times: waiting for the progress deadline (600 s by default) would only delay
    the rollback. Also fails when the controller reports ``ProgressDeadlineExceeded``, and with
    :class:`RolloutTimeoutError` when ``timeout_seconds`` pass.

    Bounded polling, not a watch: every poll is two short reads (the Deployment, its pods) that
    the resilience layer bounds and retries, and the deadline is checked between them; a watch
    would need a second resource stream for the pods anyway, its long request cannot be retried
    by the layer, and expired resourceVersions (410) and dropped streams need handling that buys
    nothing at a half-second cadence (4 small reads a second).
    """
    if timeout_seconds <= 0 or poll_seconds <= 0:
        raise InvalidRequestError(
            f"timeout_seconds and poll_seconds must be > 0, got {timeout_seconds} and "
            f"{poll_seconds}"
        )
    where = f"Deployment {namespace}/{name}"
    logger = run_logger(__name__)
    started = time.monotonic()
    deadline = started + timeout_seconds
    with k8s.get_api_client() as api:
        while True:
            found = _read_deployment(k8s, api, namespace, name)
            if found is None:
                raise NotFoundError(f"{where} does not exist; apply it before waiting for it")
            state = DeploymentState.from_api(found)
            if state.rolled_out:
                logger.info(
                    "%s rolled out in %.1fs: %s", where, time.monotonic() - started, state.summary()
                )
                return state
            if state.progress_deadline_exceeded and state.observed_generation >= state.generation:
                condition = state.condition("Progressing")
                said = f" ({condition.message})" if condition and condition.message else ""
                raise RolloutFailedError(
                    f"{where} exceeded its progress deadline{said}; {state.summary()}",
                    deployment=f"{namespace}/{name}",
                    reason=PROGRESS_DEADLINE_EXCEEDED,
                )
            _fail_on_broken_pods(k8s, api, found, max_restarts)
            now = time.monotonic()
            if now >= deadline:
                raise RolloutTimeoutError(
                    f"{where} was not rolled out within {timeout_seconds:g}s; {state.summary()}",
                    target=f"{namespace}/{name}",
                )
            time.sleep(min(poll_seconds, deadline - now))


@task(name="namespace-exists", cache_policy=NO_CACHE)
def namespace_exists(k8s: KubernetesTarget, namespace: str) -> bool:
    """Whether the Namespace exists: a missing object inside it then means a wrong namespace,
    and the error can say so instead of blaming the object."""
    with k8s.get_api_client() as api:
        found = read_or_none(
            api, f"Namespace {namespace}", k8s.core_v1(api).read_namespace, namespace
        )
    return found is not None


@task(name="wait-for-no-pods", cache_policy=NO_CACHE)
def wait_for_no_pods(
    k8s: KubernetesTarget,
    namespace: str,
    labels: Mapping[str, str],
    *,
    timeout_seconds: float,
    poll_seconds: float = 0.5,
) -> float:
    """Wait until no pod matching ``labels`` exists, terminating ones included; returns seconds.

    Why pods and not the Deployment's ``status.replicas``: the controller stops counting a pod
    as soon as it is terminating, while its process may still serve in-flight requests for its
    grace period. A step that must not overlap with the old code (a contract migration dropping
    what the old version writes) waits for the pods themselves to be gone.
    """
    if timeout_seconds <= 0 or poll_seconds <= 0:
        raise InvalidRequestError(
            f"timeout_seconds and poll_seconds must be > 0, got {timeout_seconds} and "
            f"{poll_seconds}"
        )
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    where = f"pods {selector} in {namespace}"
    started = time.monotonic()
    with k8s.get_api_client() as api:
        while True:
            pods = call_kubernetes(
                f"list {where}",
                k8s.core_v1(api).list_namespaced_pod,
                namespace,
                label_selector=selector,
                target=_target(api),
            )
            left = [pod.metadata.name for pod in pods.items]
            waited = time.monotonic() - started
            if not left:
                run_logger(__name__).info("no %s left after %.1fs", where, waited)
                return round(waited, 3)
            if waited >= timeout_seconds:
                raise RolloutTimeoutError(
                    f"{len(left)} of the {where} still exist after {timeout_seconds:g}s: "
                    f"{', '.join(sorted(left)[:5])}",
                    target=f"{namespace}/{selector}",
                )
            time.sleep(min(poll_seconds, max(0.0, timeout_seconds - waited)))


# -- helpers --------------------------------------------------------------------------------------


class _Decided(Protocol):
    @property
    def changed(self) -> bool: ...

    @property
    def note(self) -> str: ...


Change = TypeVar("Change", bound=_Decided)


def converge(
    decide: Callable[[Change | None], tuple[str, Change, Callable[[], object]]],
    *,
    dry_run: bool,
    what: str,
    target: str,
) -> Change:
    """Read, decide, write (with the ``resourceVersion`` read); on a 409 read and decide again,
    at most :data:`APPLY_ATTEMPTS` rounds. ``decide`` gets the change attempted in the round
    before (so a stored attempt whose answer was lost is reported as made) and returns where,
    the change, and the write. Nothing is written on a dry run or when nothing changes."""
    logger = run_logger(__name__)
    attempted: Change | None = None
    last: ConflictError | None = None
    for _ in range(APPLY_ATTEMPTS):
        where, change, write = decide(attempted)
        if dry_run or not change.changed or change is attempted:
            logger.info("%s%s: %s", "dry run: " if dry_run else "", where, change.note)
            return change
        attempted = change
        try:
            write()
        except ConflictError as exc:
            last = exc  # someone wrote in between (or our own stored attempt): decide again
            continue
        logger.info("%s: %s", where, change.note)
        return change
    raise ConflictError(
        f"{what} conflicted {APPLY_ATTEMPTS} times in a row: another writer keeps changing it; "
        "stop that writer and run again",
        status=409,
        target=target,
    ) from last


PRECONDITIONED_RETRY_STATUSES = frozenset({500})
"""Retried on top of the policy's statuses: a write with a ``resourceVersion`` applies once."""


def guarded_merge_patch(
    action: str, patch: Callable[..., Any], *args: Any, body: Mapping[str, Any], api: ApiClient
) -> Callable[[], object]:
    """The write of a :func:`converge` round: a merge patch whose ``body`` carries the
    ``resourceVersion`` read, so it applies once; a 500 is retried (a stored first attempt then
    meets 409, and the next round sees our own values)."""
    return lambda: call_kubernetes(
        action,
        patch,
        *args,
        body,
        _content_type=MERGE_PATCH,
        target=_target(api),
        idempotent=True,
        retry_also=PRECONDITIONED_RETRY_STATUSES,
    )


def _target(api: ApiClient) -> str:
    """The breaker / budget key of this API server: ``host:port`` of its URL."""
    host = str(api.configuration.host or "")
    return urlsplit(host).netloc or host or "kubernetes"


def _identity(k8s: KubernetesTarget, manifest: Mapping[str, Any], kind: str) -> tuple[str, str]:
    meta = manifest.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise InvalidRequestError(f"the {kind} manifest has no metadata.name")
    if manifest.get("kind", kind) != kind:
        raise InvalidRequestError(
            f"the manifest's kind is {manifest.get('kind')!r}, expected {kind!r}"
        )
    return str(meta.get("namespace") or k8s.namespace), str(name)


def _body(manifest: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    body = copy.deepcopy(dict(manifest))
    body["metadata"] = dict(body.get("metadata") or {}) | {"namespace": namespace}
    return body


def _first_image(body: Mapping[str, Any]) -> str | None:
    containers = (((body.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    return containers[0].get("image") if containers else None


def read_or_none(api: ApiClient, what: str, read: Any, *args: str) -> Any:
    """``read(*args)`` through the resilience layer, or None when the API answers 404: for a
    runbook, absence is an answer (nothing to undo, create it, a wrong namespace), not an error."""
    try:
        return call_kubernetes(f"read {what}", read, *args, target=_target(api))
    except NotFoundError:
        return None


def _read_deployment(k8s: KubernetesTarget, api: ApiClient, namespace: str, name: str) -> Any:
    where = f"Deployment {namespace}/{name}"
    return read_or_none(api, where, k8s.apps_v1(api).read_namespaced_deployment, name, namespace)


def _read_service(k8s: KubernetesTarget, api: ApiClient, namespace: str, name: str) -> Any:
    where = f"Service {namespace}/{name}"
    return read_or_none(api, where, k8s.core_v1(api).read_namespaced_service, name, namespace)


def _label_selector(selector: Any) -> str:
    """A ``V1LabelSelector`` as the query string the list calls take."""
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expression in selector.match_expressions or []:
        values = ",".join(expression.values or [])
        operator = expression.operator
        if operator == "In":
            parts.append(f"{expression.key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{expression.key} notin ({values})")
        elif operator == "Exists":
            parts.append(expression.key)
        elif operator == "DoesNotExist":
            parts.append(f"!{expression.key}")
    return ",".join(parts)


def _fail_on_broken_pods(
    k8s: KubernetesTarget, api: ApiClient, deployment: Any, max_restarts: int
) -> None:
    """Raise :class:`RolloutFailedError` for the first pod of the new template that is stuck.

    "New template" = the pod's containers run the images of the Deployment's current template
    (by container name): pods of the previous version may crash without it being the new
    version's fault, and are not judged here.
    """
    namespace, name = deployment.metadata.namespace, deployment.metadata.name
    template = deployment.spec.template.spec
    wanted = {c.name: c.image for c in template.containers}
    wanted |= {c.name: c.image for c in (template.init_containers or [])}
    pods = call_kubernetes(
        f"list the pods of Deployment {namespace}/{name}",
        k8s.core_v1(api).list_namespaced_pod,
        namespace,
        label_selector=_label_selector(deployment.spec.selector),
        target=_target(api),
    )
    for pod in pods.items:
        if pod.metadata.deletion_timestamp is not None or pod.spec is None:
            continue
        images = {c.name: c.image for c in pod.spec.containers}
        images |= {c.name: c.image for c in (pod.spec.init_containers or [])}
        if images != wanted:
            continue
        status = pod.status
        statuses = list((status.init_container_statuses if status else None) or [])
        statuses += list((status.container_statuses if status else None) or [])
        for container in statuses:
            waiting = container.state.waiting if container.state else None
            reason = waiting.reason if waiting else None
            pod_name = pod.metadata.name
            if reason in FAILED_WAITING_REASONS:
                message = f": {waiting.message}" if waiting and waiting.message else ""
                raise RolloutFailedError(
                    f"Deployment {namespace}/{name} cannot roll out: pod {pod_name} container "
                    f"{container.name} is in {reason}{message} "
                    f"(image {container.image}, {container.restart_count} restarts)",
                    deployment=f"{namespace}/{name}",
                    reason=reason,
                    pod=pod_name,
                    container=container.name,
                )
            if container.restart_count > max_restarts:
                last = container.last_state.terminated if container.last_state else None
                why = f" (last exit: {last.reason}, code {last.exit_code})" if last else ""
                raise RolloutFailedError(
                    f"Deployment {namespace}/{name} cannot roll out: pod {pod_name} container "
                    f"{container.name} restarted {container.restart_count} times, more than "
                    f"{max_restarts}{why}",
                    deployment=f"{namespace}/{name}",
                    reason="TooManyRestarts",
                    pod=pod_name,
                    container=container.name,
                )
