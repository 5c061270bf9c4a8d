"""``tracing-rollout`` on the sandbox: the demo shop (frontend -> checkout -> payments) traced
through its Deployments' env, verified in the sandbox's trace store (Jaeger ``/api/v3``).

Each test deploys its own shop (names prefixed ``t<hex>-``) in ``default`` and deletes it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from blocks import KubernetesTarget, TraceBackend
from decisions.trace_analysis import sampled_share_within
from decisions.tracing_plan import TracingRolloutParams
from flows.tracing_rollout import tracing_rollout
from runbooks.errors import InvalidRequestError
from runbooks.kit import Outcome
from sandbox.showcase import ROLES, deploy_shop
from tasks.traces import find_traces, get_trace

NAMESPACE = "default"


@dataclass(frozen=True)
class TracedShop:
    prefix: str
    urls: dict[str, str]  # role -> Service URL

    def name(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def service(self, role: str, **extra: Any) -> dict[str, Any]:
        probe = {"frontend": "/buy?user=probe", "checkout": "/checkout", "payments": "/pay"}
        return {
            "namespace": NAMESPACE,
            "deployment": self.name(role),
            "probe_url": self.urls[role] + probe[role],
            **extra,
        }


@pytest.fixture
def traced_shop(sandbox, k8s: KubernetesTarget) -> Iterator[TracedShop]:
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    with k8s.get_api_client() as api:
        services = deploy_shop(k8s.apps_v1(api), k8s.core_v1(api), replicas=1, prefix=prefix)
    try:
        yield TracedShop(prefix, {role: s.url for role, s in services.items()})
    finally:
        with k8s.get_api_client() as api:
            for role in ROLES:
                with contextlib.suppress(Exception):  # already gone
                    k8s.apps_v1(api).delete_namespaced_deployment(f"{prefix}{role}", NAMESPACE)
                with contextlib.suppress(Exception):
                    k8s.core_v1(api).delete_namespaced_service(f"{prefix}{role}", NAMESPACE)


@pytest.fixture
def traces(sandbox) -> TraceBackend:
    return TraceBackend(base_url=sandbox.endpoints["traces"])


def params(shop: TracedShop, sandbox, **update: Any) -> TracingRolloutParams:
    services = update.pop(
        "services",
        [
            shop.service("checkout", canary=True),
            shop.service("frontend"),
            shop.service("payments"),
        ],
    )
    return TracingRolloutParams.model_validate(
        {
            "services": services,
            "otlp_endpoint": sandbox.endpoints["otlp"],
            "sampler": "parentbased_always_on",
            "verify_requests": 3,
            "verify_timeout_seconds": 30,
            "batch_size": 2,
            "collector_exporter_endpoint": "http://jaeger-collector.observability:4318",
            **update,
        }
    )


def generations(k8s: KubernetesTarget, shop: TracedShop) -> dict[str, int]:
    with k8s.get_api_client() as api:
        apps = k8s.apps_v1(api)
        return {
            role: apps.read_namespaced_deployment(shop.name(role), NAMESPACE).metadata.generation
            for role in ROLES
        }


def one_traced_purchase(shop: TracedShop, traces: TraceBackend) -> tuple[Any, ...]:
    """One request through the frontend as the root of a sampled trace; its spans, once every
    service's batch exporter has sent them (5 s schedule by default)."""
    trace_id = secrets.token_hex(16)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    assert httpx.get(shop.urls["frontend"] + "/buy?user=alice", headers=headers).status_code == 200
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(Exception):  # not stored yet
            spans = get_trace.fn(traces, trace_id)
            if {s.service for s in spans} >= {shop.name(r) for r in ROLES}:
                return spans
        assert time.monotonic() < deadline, "the purchase's trace never held all three services"
        time.sleep(0.5)


def test_three_services_traced_one_request_one_trace_and_the_map(
    sandbox, prefect_server, k8s: KubernetesTarget, traced_shop: TracedShop, traces: TraceBackend
) -> None:
    shop = traced_shop
    result = tracing_rollout(params=params(shop, sandbox), kubernetes=k8s, traces=traces)
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert [r.status for r in result.services] == ["traced"] * 3
    assert all(r.traces_seen == 3 for r in result.services)

    spans = one_traced_purchase(shop, traces)
    by_id = {s.span_id: s for s in spans}
    frontend, checkout, payments = (shop.name(r) for r in ("frontend", "checkout", "payments"))
    calls = {
        (by_id[s.parent_span_id].service, s.service)
        for s in spans
        if s.parent_span_id in by_id and by_id[s.parent_span_id].service != s.service
    }
    assert calls == {(frontend, checkout), (checkout, payments)}
    graph = result.dependency_map
    assert graph.startswith("graph LR")
    assert frontend in graph
    assert checkout in graph
    assert payments in graph
    assert len(result.latency) >= 3
    assert result.collector_config is not None


def test_a_head_ratio_of_a_tenth_samples_a_tenth(
    sandbox, prefect_server, k8s: KubernetesTarget, traced_shop: TracedShop, traces: TraceBackend
) -> None:
    shop = traced_shop
    result = tracing_rollout(
        params=params(
            shop,
            sandbox,
            services=[shop.service("frontend", canary=True)],
            sampler="parentbased_traceidratio",
            sampler_ratio=0.1,
        ),
        kubernetes=k8s,
        traces=traces,
    )
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    began = datetime.now(UTC)
    sent = 1000
    with httpx.Client(base_url=shop.urls["frontend"], timeout=5) as client:  # no traceparent
        for n in range(sent):
            assert client.get("/buy", params={"user": f"u{n}"}).status_code == 200
    time.sleep(7)  # the pod's batch exporter sends every 5 s
    found = find_traces.fn(
        traces,
        shop.name("frontend"),
        start=began,
        end=datetime.now(UTC) + timedelta(seconds=1),
        limit=1000,
    )
    check = sampled_share_within(len(found), sent, 0.1, confidence=0.999)
    assert check.ok, (len(found), check)


def test_a_service_with_a_wrong_endpoint_is_reverted_and_a_rerun_converges(
    sandbox, prefect_server, k8s: KubernetesTarget, traced_shop: TracedShop, traces: TraceBackend
) -> None:
    shop = traced_shop
    broken = shop.service("payments", otlp_endpoint="http://127.0.0.1:9")  # nobody listens
    before = generations(k8s, shop)
    first = tracing_rollout(
        params=params(
            shop,
            sandbox,
            services=[shop.service("checkout", canary=True), shop.service("frontend"), broken],
            verify_timeout_seconds=12,
        ),
        kubernetes=k8s,
        traces=traces,
    )
    assert first.outcome is Outcome.FAILED
    status = {r.target.split("/")[1]: r.status for r in first.services}
    assert status == {
        shop.name("checkout"): "traced",
        shop.name("frontend"): "traced",
        shop.name("payments"): "reverted",
    }
    payments = next(r for r in first.services if r.status == "reverted")
    assert "exporter endpoint" in payments.detail
    with k8s.get_api_client() as api:
        live = k8s.apps_v1(api).read_namespaced_deployment(shop.name("payments"), NAMESPACE)
    env = {e.name for e in live.spec.template.spec.containers[0].env or []}
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env  # its previous spec, exactly

    traced = generations(k8s, shop)
    second = tracing_rollout(params=params(shop, sandbox), kubernetes=k8s, traces=traces)
    assert second.outcome is Outcome.SUCCEEDED, second.reason
    status = {r.target.split("/")[1]: r.status for r in second.services}
    assert status[shop.name("payments")] == "traced"
    assert status[shop.name("checkout")] == status[shop.name("frontend")] == "already_traced"
    after = generations(k8s, shop)
    assert after["checkout"] == traced["checkout"]  # not touched: no pod restarted
    assert after["frontend"] == traced["frontend"]
    assert after["payments"] > before["payments"]


def test_bad_input_changes_nothing(
    sandbox, prefect_server, k8s: KubernetesTarget, traced_shop: TracedShop, traces: TraceBackend
) -> None:
    shop = traced_shop
    before = generations(k8s, shop)
    for update, words in (
        ({"sampler_ratio": 1.5, "sampler": "parentbased_traceidratio"}, "sampler_ratio"),
        ({"propagators": ["tracecontext", "zipkin"]}, "unknown propagator 'zipkin'"),
        ({"sampler": "sometimes"}, "unknown sampler 'sometimes'"),
    ):
        with pytest.raises(ValidationError, match=words):
            params(shop, sandbox, **update)
    unknown = params(shop, sandbox, services=[{"namespace": NAMESPACE, "deployment": "nope"}])
    with pytest.raises(InvalidRequestError, match="default/nope not found"):
        tracing_rollout(params=unknown, kubernetes=k8s, traces=traces)
    assert generations(k8s, shop) == before


@pytest.mark.usefixtures("isolated_tracing")
def test_the_runbook_run_is_traced_and_its_probes_join_the_services_traces(
    sandbox, prefect_server, k8s: KubernetesTarget, traced_shop: TracedShop, traces: TraceBackend
) -> None:
    """Self-traced: the run exports its flow and task spans to the store, and the probes it
    sends carry its context, so checkout's spans sit inside the rollout's own trace."""
    from runbooks import telemetry

    shop = traced_shop
    began = datetime.now(UTC)
    assert telemetry.configure_tracing(sandbox.endpoints["otlp"], service_name="runbooks")
    result = tracing_rollout(
        params=params(shop, sandbox, services=[shop.service("checkout", canary=True)]),
        kubernetes=k8s,
        traces=traces,
    )
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    assert telemetry.flush_tracing()
    found = find_traces.fn(
        traces, "runbooks", start=began, end=datetime.now(UTC) + timedelta(seconds=1), limit=20
    )
    run = [t for t in found if any(s.attributes.get("prefect.run.type") == "flow" for s in t)]
    assert run, [sorted({s.name for s in t}) for t in found]
    spans = run[0]
    kinds = {s.attributes.get("prefect.run.type") for s in spans if s.service == "runbooks"}
    assert {"flow", "task"} <= kinds
    assert any(s.service == shop.name("checkout") for s in spans)  # the probes' answers


INSTRUMENTATION_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "instrumentations.opentelemetry.io"},
    "spec": {
        "group": "opentelemetry.io",
        "names": {
            "kind": "Instrumentation",
            "listKind": "InstrumentationList",
            "plural": "instrumentations",
            "singular": "instrumentation",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def test_operator_mode_without_an_operator_is_reverted_and_cleaned_up(
    sandbox, prefect_server, k8s: KubernetesTarget, traced_shop: TracedShop, traces: TraceBackend
) -> None:
    """The Instrumentation and the inject annotation are written; no operator injects the SDK
    here, so nothing reports: the annotation is reverted and the Instrumentation removed."""
    shop = traced_shop
    from kubernetes.client import ApiextensionsV1Api

    with k8s.get_api_client() as api, contextlib.suppress(Exception):  # already registered
        ApiextensionsV1Api(api).create_custom_resource_definition(INSTRUMENTATION_CRD)
    deadline = time.monotonic() + 10
    while True:  # the emulator serves a new type within moments
        try:
            with k8s.get_api_client() as api:
                k8s.custom_objects(api).list_namespaced_custom_object(
                    "opentelemetry.io", "v1alpha1", NAMESPACE, "instrumentations"
                )
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    result = tracing_rollout(
        params=params(
            shop,
            sandbox,
            mode="operator",
            services=[shop.service("checkout", canary=True)],
            verify_timeout_seconds=6,
        ),
        kubernetes=k8s,
        traces=traces,
    )
    assert result.outcome is Outcome.FAILED
    assert [r.status for r in result.services] == ["reverted"]
    with k8s.get_api_client() as api:
        live = k8s.apps_v1(api).read_namespaced_deployment(shop.name("checkout"), NAMESPACE)
        left = k8s.custom_objects(api).list_namespaced_custom_object(
            "opentelemetry.io", "v1alpha1", NAMESPACE, "instrumentations"
        )["items"]
    annotations = live.spec.template.metadata.annotations or {}
    assert "instrumentation.opentelemetry.io/inject-python" not in annotations
    assert left == []


def test_a_trace_backend_that_cannot_be_asked_leaves_nothing_changed(
    sandbox, prefect_server, k8s: KubernetesTarget, traced_shop: TracedShop
) -> None:
    """Unverified is not traced: with the backend down, the change is undone and reported."""
    import socket

    shop = traced_shop
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = TraceBackend(base_url=f"http://127.0.0.1:{closed}", timeout_seconds=1)
    with k8s.get_api_client() as api:
        before = k8s.apps_v1(api).read_namespaced_deployment(shop.name("checkout"), NAMESPACE)
    result = tracing_rollout(
        params=params(shop, sandbox, services=[shop.service("checkout", canary=True)]),
        kubernetes=k8s,
        traces=down,
    )
    assert result.outcome is Outcome.FAILED
    (report,) = result.services
    assert report.status == "failed"
    assert "verify failed" in report.detail
    assert "reverted" in report.detail
    with k8s.get_api_client() as api:
        after = k8s.apps_v1(api).read_namespaced_deployment(shop.name("checkout"), NAMESPACE)
    assert after.spec.template.spec.containers[0].env == before.spec.template.spec.containers[0].env
