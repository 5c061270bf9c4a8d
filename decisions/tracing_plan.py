"""The ``tracing-rollout`` runbook's parameters and plan. Pure: observed state in, frozen plan out.

Two ways to turn tracing on, chosen by ``mode``:

- ``env``: the standard ``OTEL_*`` variables are written into one container of each Deployment
  (``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_TRACES_SAMPLER`` / ``_ARG``,
  ``OTEL_PROPAGATORS``, ``OTEL_RESOURCE_ATTRIBUTES``). Works with any SDK-configured service and
  needs nothing installed in the cluster; it is what the sandbox's shop understands.
- ``operator``: an OpenTelemetry Operator ``Instrumentation`` (``opentelemetry.io/v1alpha1``)
  per namespace plus the pod-template annotation
  ``instrumentation.opentelemetry.io/inject-python: <namespace>/<name>``; the operator's webhook
  injects the SDK and the same variables when pods are created. The operator gives a variable
  already in the container precedence over its own, so a container that sets ``OTEL_*`` itself
  keeps it: the plan warns about each such variable.

Why the plan carries whole env lists and annotation maps, not only the changed variables: undo
must restore the previous spec *exactly* (a ``valueFrom`` included), and one JSON patch
replacing the list is both the change and its undo, without relying on strategic-merge
directives to delete entries.

Why a service already as planned is ``unchanged`` and left out of every stage: a re-run after
fixing one broken service must converge without restarting the services that already report
(a patch of the pod template rolls every pod even when the values are equal).

The head sampler runs in the services (``parentbased_traceidratio`` by default); the recipe's
"adaptive" sampler (all errors, slow traces, 1 % of the rest) needs the trace's outcome, so it
is tail sampling in an OpenTelemetry Collector: see :mod:`decisions.tracing_collector`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,255}$")

PROPAGATORS = ("tracecontext", "baggage", "b3", "b3multi", "jaeger", "xray", "ottrace", "none")
"""``OTEL_PROPAGATORS`` values of the OpenTelemetry specification (and the operator's enum)."""
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "parentbased_jaeger_remote",
    "jaeger_remote",
    "xray",
)
"""``OTEL_TRACES_SAMPLER`` values of the OpenTelemetry specification."""
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
"""The samplers whose ``OTEL_TRACES_SAMPLER_ARG`` is a probability in [0, 1]."""

INSTRUMENTATION_API_VERSION = "opentelemetry.io/v1alpha1"
INJECT_PYTHON = "instrumentation.opentelemetry.io/inject-python"
SERVICE_NAME_ANNOTATION = "resource.opentelemetry.io/service.name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tracing-rollout"}

# Variables this runbook owns in env mode, in the order they are appended to a container.
ENV_SERVICE_NAME = "OTEL_SERVICE_NAME"
ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_SAMPLER = "OTEL_TRACES_SAMPLER"
ENV_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
ENV_PROPAGATORS = "OTEL_PROPAGATORS"
ENV_RESOURCE = "OTEL_RESOURCE_ATTRIBUTES"
ENV_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
"""Removed when present: the signal-specific endpoint wins over ours and would hide the change."""


class PlanRefused(ValueError):
    """The rollout must not start; the message is one sentence naming the field."""


# --------------------------------------------------------------------------- parameters


def check_otlp_endpoint(value: str) -> str:
    """An OTLP/HTTP base URL: http(s), a host, no ``/v1/traces`` (the SDK appends it)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"otlp_endpoint must be an http(s) URL with a host, got {value!r}")
    if parts.path.rstrip("/").endswith("/v1/traces"):
        raise ValueError(
            f"otlp_endpoint is the base URL, the SDK appends /v1/traces itself; got {value!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"otlp_endpoint must not carry a query or fragment: {value!r}")
    return value


class TracedService(BaseModel):
    """One Deployment to trace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field("default", description="Kubernetes namespace (DNS-1123 label).")
    deployment: str = Field(description="Deployment name.")
    service_name: str | None = Field(
        None, description="service.name its spans carry; empty: the Deployment's name."
    )
    canary: bool = Field(False, description="Roll this one out first, alone, and verify it.")
    container: str | None = Field(
        None, description="Container to instrument; empty: the pod's first container."
    )
    otlp_endpoint: str | None = Field(
        None, description="This service's own OTLP/HTTP base URL (env mode); empty: the run's."
    )
    probe_url: str | None = Field(
        None,
        description="URL the runbook sends its verification requests to (e.g. http://checkout:8080"
        "/health); empty: the service's own traffic must produce the spans.",
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _own_endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_otlp_endpoint(value)

    @field_validator("probe_url")
    @classmethod
    def _probe_shape(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"probe_url must be an http(s) URL with a host, got {value!r}")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace_shape(cls, value: str) -> str:
        if len(value) > 63 or not _LABEL.match(value):
            raise ValueError(
                "namespace must be a DNS-1123 label (lowercase letters, digits and '-', at most "
                f"63 characters); got {value!r}"
            )
        return value

    @field_validator("deployment", "container")
    @classmethod
    def _name_shape(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _SUBDOMAIN.match(value)):
            raise ValueError(
                f"must be a Kubernetes object name (lowercase letters, digits, '-' and '.'); "
                f"got {value!r}"
            )
        return value

    @field_validator("service_name")
    @classmethod
    def _service_name_shape(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value != value.strip()):
            raise ValueError(f"service_name must be non-blank, without outer spaces: {value!r}")
        return value

    @property
    def name(self) -> str:
        """The ``service.name`` its spans carry."""
        return self.service_name or self.deployment

    @property
    def target(self) -> str:
        """``namespace/deployment``: the lock key and how plans and reports name it."""
        return f"{self.namespace}/{self.deployment}"


class TailSamplingPolicy(BaseModel):
    """The Collector's tail sampling: keep errors, slow traces, and a share of the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    errors_always: bool = Field(True, description="Keep every trace with an ERROR span.")
    latency_threshold_ms: int | None = Field(
        1000, ge=1, description="Keep traces at least this long (ms); empty: no latency policy."
    )
    probabilistic_percent: float = Field(
        1.0, ge=0, le=100, description="Share of the other traces kept, in percent (0 to 100)."
    )
    decision_wait_seconds: int = Field(
        10, ge=1, le=3600, description="Seconds after a trace's first span before deciding."
    )
    num_traces: int = Field(50_000, ge=1, description="Traces held in memory while deciding.")

    @model_validator(mode="after")
    def _keeps_something(self) -> TailSamplingPolicy:
        if (
            not self.errors_always
            and self.latency_threshold_ms is None
            and (self.probabilistic_percent == 0)
        ):
            raise ValueError(
                "tail_sampling keeps no trace at all: enable errors_always, set "
                "latency_threshold_ms or a probabilistic_percent above 0"
            )
        return self


class TracingRolloutParams(BaseModel):
    """Parameters of the ``tracing-rollout`` runbook (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    services: tuple[TracedService, ...] = Field(
        description="Deployments to trace, at least one; at most one marked canary."
    )
    otlp_endpoint: str = Field(
        description="OTLP/HTTP base URL the services export to (the SDK adds /v1/traces), "
        "e.g. http://otel-collector.observability:4318."
    )
    propagators: tuple[str, ...] = Field(
        ("tracecontext", "baggage"), description="OTEL_PROPAGATORS, in order."
    )
    sampler: str = Field("parentbased_traceidratio", description="OTEL_TRACES_SAMPLER (head).")
    sampler_ratio: float = Field(
        1.0, description="Head sampling probability in [0, 1] (ratio samplers only)."
    )
    tail_sampling: TailSamplingPolicy = Field(
        default_factory=TailSamplingPolicy, description="The Collector's tail sampling policy."
    )
    mode: Literal["env", "operator"] = Field(
        "env", description="env: patch OTEL_* variables; operator: Instrumentation + annotation."
    )
    instrumentation_name: str = Field(
        "tracing-rollout", description="Name of the Instrumentation (operator mode)."
    )
    batch_size: int = Field(2, ge=1, le=100, description="Services per stage after the canary.")
    verify_requests: int = Field(5, ge=1, le=10_000, description="Requests sent per service.")
    verify_timeout_seconds: float = Field(
        60, gt=0, le=3600, description="Seconds to wait for a service's spans before reverting."
    )
    resource_attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Resource attributes for every service, e.g. deployment.environment: prod.",
    )
    collector_exporter_endpoint: str | None = Field(
        None,
        description="The trace backend's OTLP/HTTP base URL the Collector exports to; with it "
        "the Collector config (tail sampling) is generated, validated and published.",
    )
    collector_config_map: str | None = Field(
        None,
        description="namespace/name of the ConfigMap to write the Collector config into; "
        "empty: published only.",
    )
    dry_run: bool = Field(False, description="Plan only: publish the plan and change nothing.")

    @field_validator("collector_exporter_endpoint")
    @classmethod
    def _exporter_shape(cls, value: str | None) -> str | None:
        return None if value is None else check_otlp_endpoint(value)

    @field_validator("collector_config_map")
    @classmethod
    def _config_map_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        namespace, _, name = value.partition("/")
        if not (_LABEL.match(namespace) and _SUBDOMAIN.match(name)):
            raise ValueError(f"collector_config_map must be namespace/name, got {value!r}")
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint_shape(cls, value: str) -> str:
        return check_otlp_endpoint(value)

    @field_validator("propagators")
    @classmethod
    def _propagators_known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("propagators must name at least one (or 'none')")
        for name in value:
            if name not in PROPAGATORS:
                raise ValueError(
                    f"propagators: unknown propagator {name!r}; known: {', '.join(PROPAGATORS)}"
                )
        if len(set(value)) != len(value):
            raise ValueError(f"propagators must not repeat a name: {list(value)}")
        if "none" in value and len(value) > 1:
            raise ValueError(f"propagators: 'none' cannot be combined with others: {list(value)}")
        return value

    @field_validator("sampler")
    @classmethod
    def _sampler_known(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"sampler: unknown sampler {value!r}; known: {', '.join(SAMPLERS)}")
        return value

    @field_validator("sampler_ratio")
    @classmethod
    def _ratio_range(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:  # also refuses NaN
            raise ValueError(f"sampler_ratio must be within [0, 1], got {value}")
        return value

    @field_validator("instrumentation_name")
    @classmethod
    def _instrumentation_name_shape(cls, value: str) -> str:
        if len(value) > 63 or not _LABEL.match(value):
            raise ValueError(f"instrumentation_name must be a DNS-1123 label, got {value!r}")
        return value

    @field_validator("resource_attributes")
    @classmethod
    def _attributes_shape(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ATTRIBUTE_KEY.match(key):
                raise ValueError(
                    "resource_attributes keys must be 1-255 letters, digits, '.', '_', '-' or "
                    f"'/'; got {key!r}"
                )
            if key == "service.name":
                raise ValueError(
                    "resource_attributes must not set service.name: each service's name comes "
                    "from services[].service_name"
                )
        return value

    @model_validator(mode="after")
    def _services_consistent(self) -> TracingRolloutParams:
        if not self.services:
            raise ValueError("services must list at least one Deployment")
        seen: set[str] = set()
        names: dict[str, str] = {}
        for service in self.services:
            if service.target in seen:
                raise ValueError(f"services lists {service.target} twice")
            seen.add(service.target)
            if service.name in names:
                raise ValueError(
                    f"services: {names[service.name]} and {service.target} would both report as "
                    f"service.name {service.name!r}; give one a distinct service_name"
                )
            names[service.name] = service.target
        own = [s.target for s in self.services if s.otlp_endpoint]
        if own and self.mode == "operator":
            raise ValueError(
                f"services: otlp_endpoint per service ({', '.join(own)}) works in env mode only; "
                "the operator's Instrumentation holds one endpoint per namespace"
            )
        if self.collector_config_map and not self.collector_exporter_endpoint:
            raise ValueError(
                "collector_config_map needs collector_exporter_endpoint (where the Collector "
                "sends the traces it keeps)"
            )
        canaries = [s.target for s in self.services if s.canary]
        if len(canaries) > 1:
            raise ValueError(f"services: at most one canary, got {', '.join(canaries)}")
        if self.sampler not in RATIO_SAMPLERS and self.sampler_ratio != 1.0:
            raise ValueError(
                f"sampler_ratio applies to {' or '.join(RATIO_SAMPLERS)} only, not to "
                f"sampler {self.sampler!r}; leave it at 1.0 or pick a ratio sampler"
            )
        return self

    @property
    def sampler_argument(self) -> str | None:
        """``OTEL_TRACES_SAMPLER_ARG``, or ``None`` when the sampler takes no ratio."""
        return repr(float(self.sampler_ratio)) if self.sampler in RATIO_SAMPLERS else None


# --------------------------------------------------------------------------- observed state


class ObservedWorkload(BaseModel):
    """A Deployment's instrumented container and pod-template annotations, as read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    container: str = Field(description="Name of the container to instrument.")
    container_index: int = Field(0, ge=0, description="Its index in spec.template.spec.containers.")
    env: tuple[dict[str, Any], ...] = Field(
        (), description="Its env as the API returns it: {name, value} or {name, valueFrom}."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="spec.template.metadata.annotations."
    )

    @field_validator("env")
    @classmethod
    def _env_named(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        for entry in value:
            if not isinstance(entry.get("name"), str) or not entry["name"]:
                raise ValueError(f"every env entry needs a name, got {entry!r}")
        return value


# --------------------------------------------------------------------------- plan


class Change(BaseModel):
    """One variable or annotation: its value before and after (``None``: absent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    before: str | None
    after: str | None

    @property
    def action(self) -> Literal["add", "update", "remove"]:
        if self.before is None:
            return "add"
        return "remove" if self.after is None else "update"


class ServiceAction(StrEnum):
    CHANGE = "change"
    UNCHANGED = "unchanged"


class ServicePlan(BaseModel):
    """What happens to one Deployment, with everything needed to undo it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str
    deployment: str
    service_name: str
    container: str
    container_index: int
    action: ServiceAction
    env_changes: tuple[Change, ...] = ()
    annotation_changes: tuple[Change, ...] = ()
    env_before: tuple[dict[str, Any], ...] = ()
    env_after: tuple[dict[str, Any], ...] = ()
    annotations_before: dict[str, str] = Field(default_factory=dict)
    annotations_after: dict[str, str] = Field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        return f"{self.namespace}/{self.deployment}"

    def apply_patch(self) -> list[dict[str, Any]]:
        """The JSON patch (RFC 6902) making the change; empty when unchanged."""
        if self.action is ServiceAction.UNCHANGED:
            return []
        return self._patch(self.env_after, self.annotations_after)

    def revert_patch(self) -> list[dict[str, Any]]:
        """The JSON patch restoring the previous env and annotations exactly."""
        if self.action is ServiceAction.UNCHANGED:
            return []
        return self._patch(self.env_before, self.annotations_before)

    def _patch(
        self, env: tuple[dict[str, Any], ...], annotations: dict[str, str]
    ) -> list[dict[str, Any]]:
        # The test op guards against the container list having moved since it was read;
        # "add" on an existing member replaces it, and creates it when absent.
        container = f"/spec/template/spec/containers/{self.container_index}"
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": f"{container}/name", "value": self.container}
        ]
        if self.env_changes:
            ops.append({"op": "add", "path": f"{container}/env", "value": [dict(e) for e in env]})
        if self.annotation_changes:
            ops.append(
                {"op": "add", "path": "/spec/template/metadata/annotations", "value": annotations}
            )
        return ops


class Stage(BaseModel):
    """Services changed together, then verified together before the next stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    canary: bool
    targets: tuple[str, ...]


class TracingPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    params: TracingRolloutParams
    services: tuple[ServicePlan, ...]
    stages: tuple[Stage, ...]
    instrumentations: tuple[dict[str, Any], ...] = Field(
        (), description="Instrumentation manifests to create or replace (operator mode)."
    )
    warnings: tuple[str, ...] = ()

    def service(self, target: str) -> ServicePlan:
        for plan in self.services:
            if plan.target == target:
                return plan
        raise KeyError(target)

    @property
    def changed(self) -> tuple[ServicePlan, ...]:
        return tuple(s for s in self.services if s.action is ServiceAction.CHANGE)

    @property
    def unchanged(self) -> tuple[ServicePlan, ...]:
        return tuple(s for s in self.services if s.action is ServiceAction.UNCHANGED)

    @property
    def summary(self) -> str:
        """One sentence for the plan artifact and the run's result."""
        if not self.changed:
            return f"All {len(self.services)} service(s) already traced as asked: nothing to do."
        return (
            f"Trace {len(self.changed)} service(s) in {len(self.stages)} stage(s) "
            f"({self.params.mode} mode); {len(self.unchanged)} already traced as asked."
        )


def plan_rollout(
    params: TracingRolloutParams, current: Mapping[tuple[str, str], ObservedWorkload]
) -> TracingPlan:
    """The frozen plan for ``params`` given ``current`` (keyed by ``(namespace, deployment)``).

    :class:`PlanRefused` when a Deployment was not found, or its container is not the one
    asked for: nothing is changed for anyone, since a typo in one name is a typo in the input.
    """
    missing = [s.target for s in params.services if (s.namespace, s.deployment) not in current]
    if missing:
        raise PlanRefused(
            f"services: Deployment(s) {', '.join(missing)} not found; fix the names, nothing "
            "was changed."
        )
    plans: list[ServicePlan] = []
    for service in params.services:
        observed = current[(service.namespace, service.deployment)]
        if service.container is not None and service.container != observed.container:
            raise PlanRefused(
                f"services: {service.target} has no container {service.container!r} "
                f"(read {observed.container!r}); nothing was changed."
            )
        plans.append(_plan_service(params, service, observed))
    warnings = tuple(w for p in plans for w in p.warnings)
    return TracingPlan(
        params=params,
        services=tuple(plans),
        stages=_stages(params, plans),
        instrumentations=_instrumentations(params) if params.mode == "operator" else (),
        warnings=warnings,
    )


def _stages(params: TracingRolloutParams, plans: list[ServicePlan]) -> tuple[Stage, ...]:
    """Canary first (the one marked, else the first service to change), then batches.

    When the marked canary is already traced, the first service that changes takes its place:
    a lone first stage still bounds the harm of a wrong endpoint to one service.
    """
    changed = [p.target for p in plans if p.action is ServiceAction.CHANGE]
    if not changed:
        return ()
    marked = [s.target for s in params.services if s.canary and s.target in changed]
    canary = marked[0] if marked else changed[0]
    rest = [t for t in changed if t != canary]
    stages = [Stage(index=0, canary=True, targets=(canary,))]
    for start in range(0, len(rest), params.batch_size):
        batch = tuple(rest[start : start + params.batch_size])
        stages.append(Stage(index=len(stages), canary=False, targets=batch))
    return tuple(stages)


def _plan_service(
    params: TracingRolloutParams, service: TracedService, observed: ObservedWorkload
) -> ServicePlan:
    env_before = tuple(dict(e) for e in observed.env)
    annotations_before = dict(observed.annotations)
    warnings: list[str] = []
    if params.mode == "env":
        env_after, env_changes = _desired_env(params, service, env_before)
        annotations_after, annotation_changes = annotations_before, ()
        warnings += _env_warnings(service, env_after)
    else:
        env_after, env_changes = env_before, ()
        wanted = {
            INJECT_PYTHON: f"{service.namespace}/{params.instrumentation_name}",
            SERVICE_NAME_ANNOTATION: service.name,
        }
        annotations_after = {**annotations_before, **wanted}
        annotation_changes = tuple(
            Change(name=key, before=annotations_before.get(key), after=value)
            for key, value in wanted.items()
            if annotations_before.get(key) != value
        )
        shadowing = sorted(e["name"] for e in env_before if e["name"] in _OWNED)
        if shadowing:
            warnings.append(
                f"{service.target}: the container sets {', '.join(shadowing)} itself, which wins "
                "over the Instrumentation; remove them or use mode env."
            )
    changed = bool(env_changes or annotation_changes)
    return ServicePlan(
        namespace=service.namespace,
        deployment=service.deployment,
        service_name=service.name,
        container=observed.container,
        container_index=observed.container_index,
        action=ServiceAction.CHANGE if changed else ServiceAction.UNCHANGED,
        env_changes=env_changes,
        annotation_changes=annotation_changes,
        env_before=env_before,
        env_after=env_after if changed else env_before,
        annotations_before=annotations_before,
        annotations_after=annotations_after if changed else annotations_before,
        warnings=tuple(warnings),
    )


_OWNED = (
    ENV_SERVICE_NAME,
    ENV_ENDPOINT,
    ENV_SAMPLER,
    ENV_SAMPLER_ARG,
    ENV_PROPAGATORS,
    ENV_RESOURCE,
    ENV_TRACES_ENDPOINT,
)


def _desired_env(
    params: TracingRolloutParams, service: TracedService, env: tuple[dict[str, Any], ...]
) -> tuple[tuple[dict[str, Any], ...], tuple[Change, ...]]:
    """The container's env with our variables set, and the variables that really change.

    Entries keep their place (a later ``$(VAR)`` reference still sees its variable); new ones
    are appended in :data:`_OWNED` order. Equality is semantic where the SDK reads the value
    semantically (a ratio of ``1.0`` equals ``1``, propagators ignore spaces), so a re-run
    never rolls pods for spelling alone.
    """
    by_name = {e["name"]: e for e in env}
    existing_resource = _plain(by_name.get(ENV_RESOURCE))
    wanted: dict[str, str | None] = {
        ENV_SERVICE_NAME: service.name,
        ENV_ENDPOINT: service.otlp_endpoint or params.otlp_endpoint,
        ENV_SAMPLER: params.sampler,
        ENV_SAMPLER_ARG: params.sampler_argument,
        ENV_PROPAGATORS: ",".join(params.propagators),
        ENV_RESOURCE: merge_resource_attributes(existing_resource, params.resource_attributes),
        ENV_TRACES_ENDPOINT: None,
    }
    if not params.resource_attributes:
        del wanted[ENV_RESOURCE]  # nothing of ours: theirs (even from a Secret) stays as it is
    changes: list[Change] = []
    result = [dict(e) for e in env]
    for name, value in wanted.items():
        entry = by_name.get(name)
        if entry is not None and _same(name, entry, value):
            continue
        if entry is None and value is None:
            continue
        changes.append(Change(name=name, before=_display(entry), after=value))
        if value is None:
            result = [e for e in result if e["name"] != name]
        elif entry is None:
            result.append({"name": name, "value": value})
        else:
            result = [{"name": name, "value": value} if e["name"] == name else e for e in result]
    return tuple(result), tuple(changes)


def _plain(entry: dict[str, Any] | None) -> str | None:
    """The literal value of an env entry; ``None`` when absent or taken from ``valueFrom``."""
    if entry is None or entry.get("valueFrom") is not None:
        return None
    return str(entry.get("value") or "")


def _display(entry: dict[str, Any] | None) -> str | None:
    if entry is None:
        return None
    plain = _plain(entry)
    return plain if plain is not None else f"valueFrom {entry['valueFrom']}"


def _same(name: str, entry: dict[str, Any], wanted: str | None) -> bool:
    current = _plain(entry)
    if current is None or wanted is None:
        return False
    if name == ENV_SAMPLER_ARG:
        try:
            return float(current) == float(wanted)
        except ValueError:
            return False
    if name == ENV_PROPAGATORS:
        return [p.strip() for p in current.split(",") if p.strip()] == wanted.split(",")
    if name == ENV_RESOURCE:
        return parse_resource_attributes(current) == parse_resource_attributes(wanted)
    return current == wanted


def _env_warnings(service: TracedService, env: tuple[dict[str, Any], ...]) -> list[str]:
    """Variables we leave alone that would still stop the service from reporting."""
    values = {e["name"]: _plain(e) for e in env}
    warnings = []
    if (values.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        warnings.append(f"{service.target}: OTEL_SDK_DISABLED=true, it will not report.")
    exporter = (values.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    if exporter != "otlp":
        warnings.append(
            f"{service.target}: OTEL_TRACES_EXPORTER={exporter}, it will not export over OTLP."
        )
    return warnings


def parse_resource_attributes(raw: str | None) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` as a dict: ``k=v`` pairs, comma-separated, percent-decoded.

    Malformed members (no ``=``, empty key) are skipped, as the SDKs skip them.
    """
    result: dict[str, str] = {}
    for member in (raw or "").split(","):
        key, sep, value = member.partition("=")
        if sep and key.strip():
            result[unquote(key.strip())] = unquote(value.strip())
    return result


def format_resource_attributes(attributes: Mapping[str, str]) -> str:
    """The inverse of :func:`parse_resource_attributes`: values percent-encoded where the W3C
    baggage octet range (which the spec uses for this variable) does not allow them."""
    return ",".join(f"{key}={quote(value, safe='')}" for key, value in attributes.items())


def merge_resource_attributes(existing: str | None, ours: Mapping[str, str]) -> str | None:
    """Existing attributes kept in order, ours win per key and new ones are appended.

    ``None`` when there is nothing at all (no variable to write). The existing string is
    returned as-is when ours add nothing to it, so its spelling is never rewritten.
    """
    parsed = parse_resource_attributes(existing)
    merged = {**parsed, **ours}
    if not merged:
        return existing or None
    if merged == parsed and existing is not None:
        return existing
    return format_resource_attributes(merged)


def _instrumentations(params: TracingRolloutParams) -> tuple[dict[str, Any], ...]:
    """One ``Instrumentation`` per namespace, named ``params.instrumentation_name``.

    Its ``exporter.endpoint`` is the OTLP/HTTP base URL: the Python auto-instrumentation
    exports over http/protobuf (port 4318 on a Collector), not gRPC.
    """
    spec: dict[str, Any] = {
        "exporter": {"endpoint": params.otlp_endpoint},
        "propagators": list(params.propagators),
        "sampler": {"type": params.sampler},
    }
    if params.sampler_argument is not None:
        spec["sampler"]["argument"] = params.sampler_argument
    if params.resource_attributes:
        spec["resource"] = {"resourceAttributes": dict(params.resource_attributes)}
    namespaces = dict.fromkeys(s.namespace for s in params.services)
    return tuple(
        {
            "apiVersion": INSTRUMENTATION_API_VERSION,
            "kind": "Instrumentation",
            "metadata": {
                "name": params.instrumentation_name,
                "namespace": namespace,
                "labels": dict(MANAGED_BY),
            },
            "spec": spec,
        }
        for namespace in namespaces
    )
