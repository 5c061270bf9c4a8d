"""The acting part of ``tracing-rollout``: observe, change one service, verify it reports, undo.

Verification is exact rather than statistical: the runbook sends each service's probe a few
requests carrying a *sampled* W3C ``traceparent`` of trace ids it made up, so a parent-based
sampler records them whatever its ratio, then asks the trace backend for spans of that service
in those very traces. Spans from the service prove the whole path: the SDK started with our
variables, its exporter reaches the endpoint, and the backend stored them. Without a probe URL
the service's own traffic must produce spans in the window (at the configured ratio: a low
ratio and little traffic may need a longer ``verify_timeout_seconds``).

Why the undo is an explicit patch and not a nested Prefect transaction: a batch's services are
changed together and verified together, and each one that does not report is reverted alone
while the others stay traced. Prefect's transactions roll back all-or-nothing, innermost first,
which is the wrong shape here. Each change's undo is the plan's own revert patch (the previous
env and annotations, exactly), guarded by the same ``test`` op, recorded before the change is
sent, and run at most once.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from blocks.kubernetes import KubernetesTarget
from blocks.traces import TraceBackend
from decisions.spans import Span
from decisions.tracing_plan import (
    ObservedWorkload,
    ServicePlan,
    TracedService,
    TracingRolloutParams,
)
from runbooks.errors import InvalidRequestError, RunbookError
from runbooks.kit._run import logger as run_logger
from tasks.kubernetes import json_patch_deployment, read_deployment_manifest, wait_for_rollout
from tasks.traces import find_traces

PROBE_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 1.0
ROLLOUT_TIMEOUT_SECONDS = 120.0


class Verification(BaseModel):
    """What the backend showed for one service after its change (or without one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    reporting: bool
    requests_sent: int = Field(description="Probe requests sent with a sampled traceparent.")
    traces_seen: int = Field(
        description="Probes it answered with its own span (without probes: traces holding it)."
    )
    spans: tuple[Span, ...] = Field(default=(), repr=False)
    seconds: float = Field(description="From the first probe to the verdict.")
    detail: str


def observe(
    k8s: KubernetesTarget, params: TracingRolloutParams
) -> dict[tuple[str, str], ObservedWorkload]:
    """Each Deployment's container to instrument and its template annotations; absent ones are
    left out (the planner names them)."""
    current: dict[tuple[str, str], ObservedWorkload] = {}
    for service in params.services:
        manifest = read_deployment_manifest(k8s, service.namespace, service.deployment)
        if manifest is None:
            continue
        template = manifest.get("spec", {}).get("template", {})
        containers = template.get("spec", {}).get("containers") or []
        index = _container_index(service, containers)
        container = containers[index]
        current[(service.namespace, service.deployment)] = ObservedWorkload(
            container=container["name"],
            container_index=index,
            env=tuple(container.get("env") or ()),
            annotations=dict(template.get("metadata", {}).get("annotations") or {}),
        )
    return current


def _container_index(service: TracedService, containers: Sequence[dict[str, Any]]) -> int:
    if not containers:
        raise InvalidRequestError(f"services: {service.target} has no container to instrument")
    if service.container is None:
        return 0
    for index, container in enumerate(containers):
        if container.get("name") == service.container:
            return index
    names = ", ".join(str(c.get("name")) for c in containers)
    raise InvalidRequestError(
        f"services: {service.target} has no container {service.container!r} (it has {names})"
    )


def apply_change(k8s: KubernetesTarget, plan: ServicePlan) -> None:
    ns, name = plan.target.split("/", 1)
    json_patch_deployment(k8s, ns, name, plan.apply_patch())


def revert_change(k8s: KubernetesTarget, plan: ServicePlan) -> None:
    """Put the previous env and annotations back, exactly, and wait for the pods."""
    ns, name = plan.target.split("/", 1)
    json_patch_deployment(k8s, ns, name, plan.revert_patch())
    wait_for_rollout(k8s, ns, name, timeout_seconds=ROLLOUT_TIMEOUT_SECONDS)


def wait_rolled_out(k8s: KubernetesTarget, plan: ServicePlan) -> None:
    ns, name = plan.target.split("/", 1)
    wait_for_rollout(k8s, ns, name, timeout_seconds=ROLLOUT_TIMEOUT_SECONDS)


class Probe(BaseModel):
    """One verification request: the trace it belongs to and the span id it sent as parent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trace_id: str
    span_id: str


@task(name="probe-service", task_run_name="probe-{url}", cache_policy=NO_CACHE)
def send_probes(url: str, count: int) -> tuple[Probe, ...]:
    """``count`` GETs to ``url``, each carrying a sampled ``traceparent``; what each sent.

    Inside a traced runbook run (a recording, sampled current span: see
    :mod:`runbooks.telemetry`), each probe is a CLIENT span of the run's trace, so the
    service's spans appear inside the rollout's own trace. Otherwise each probe is the root of
    a new trace. Either way the flag is ``01`` (sampled), so a parent-based sampler in the
    service records every probe whatever its ratio. A failed response is not an error: a 500
    still produces spans, and a service down is seen as no spans at all.
    """
    from opentelemetry import propagate, trace

    tracer = trace.get_tracer("runbooks.tracing-rollout")
    in_trace = trace.get_current_span().get_span_context()
    traced = in_trace.is_valid and in_trace.trace_flags.sampled
    probes: list[Probe] = []
    log = run_logger(__name__)
    with httpx.Client(timeout=PROBE_TIMEOUT_SECONDS) as client:
        for _ in range(count):
            headers: dict[str, str] = {}
            with contextlib.ExitStack() as stack:
                if traced:
                    span = stack.enter_context(
                        tracer.start_as_current_span(f"probe {url}", kind=trace.SpanKind.CLIENT)
                    )
                    context = span.get_span_context()
                    propagate.inject(headers)
                    probe = Probe(
                        trace_id=format(context.trace_id, "032x"),
                        span_id=format(context.span_id, "016x"),
                    )
                else:
                    probe = Probe(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8))
                    headers["traceparent"] = f"00-{probe.trace_id}-{probe.span_id}-01"
                try:
                    client.get(url, headers=headers)
                except httpx.HTTPError as exc:
                    log.warning("probe %s failed: %s", url, exc)
            probes.append(probe)
    return tuple(probes)


def verify(
    traces: TraceBackend,
    service: TracedService,
    params: TracingRolloutParams,
    *,
    since: datetime,
) -> Verification:
    """Probe (when there is a URL) and poll the backend until the service answered every probe
    with a span of its own (a span whose parent is the probe), or ``verify_timeout_seconds``
    pass; never raises for "not reporting", only for a backend that cannot be asked (then the
    caller cannot decide, and stops)."""
    began = time.monotonic()
    probes: tuple[Probe, ...] = ()
    if service.probe_url:
        probes = send_probes(service.probe_url, params.verify_requests)
    wanted = {p.span_id for p in probes}
    traces_wanted = {p.trace_id for p in probes}
    deadline = began + params.verify_timeout_seconds
    found: dict[str, Span] = {}
    answered: set[str] = set()
    own: set[str] = set()
    while True:
        now = datetime.now(UTC)
        window = find_traces(
            traces,
            service.name,
            start=since - timedelta(seconds=1),
            end=now + timedelta(seconds=1),
            limit=max(20, 2 * len(wanted)),
        )
        for trace_spans in window:
            if not trace_spans or (traces_wanted and trace_spans[0].trace_id not in traces_wanted):
                continue
            mine = [s for s in trace_spans if s.service == service.name]
            if not mine:
                continue
            found.update((s.span_id, s) for s in trace_spans)
            own.add(trace_spans[0].trace_id)
            answered.update(s.parent_span_id for s in mine if s.parent_span_id in wanted)
        enough = len(answered) >= len(wanted) if wanted else bool(own)
        if enough or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    seconds = round(time.monotonic() - began, 2)
    reporting = bool(answered) if wanted else bool(own)
    if reporting:
        detail = (
            f"answered {len(answered)} of {len(wanted)} probe(s) with its own spans"
            if wanted
            else f"{len(own)} trace(s) of its own traffic hold its spans"
        )
    else:
        detail = (
            f"no span from {service.name!r} in the trace backend within "
            f"{params.verify_timeout_seconds:g} s"
            + (f" of {len(wanted)} probe request(s)" if wanted else " (no probe_url: own traffic)")
            + ": is its exporter endpoint reachable?"
        )
    return Verification(
        service=service.name,
        reporting=reporting,
        requests_sent=len(probes),
        traces_seen=len(answered) if wanted else len(own),
        spans=tuple(found.values()),
        seconds=seconds,
        detail=detail,
    )


def describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, RunbookError) else f"{type(exc).__name__}: {exc}"
