"""tracing-rollout's parameters, plan and Collector config: bad input refused naming the field,
exact env / annotation changes with an exact undo, convergence on re-run, canary then batches,
and a tail_sampling config that the processor's documented schema accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from decisions.tracing_collector import (
    COLLECTOR_CONFIG_KEY,
    collector_config,
    config_map,
    duration_seconds,
    validate_tail_sampling,
)
from decisions.tracing_plan import (
    INJECT_PYTHON,
    SERVICE_NAME_ANNOTATION,
    Change,
    ObservedWorkload,
    PlanRefused,
    ServiceAction,
    TracingRolloutParams,
    format_resource_attributes,
    merge_resource_attributes,
    parse_resource_attributes,
    plan_rollout,
)

pytestmark = pytest.mark.unit

ENDPOINT = "http://otel-collector.observability:4318"
SHOP = ("frontend", "checkout", "payments")


def params(**update: Any) -> TracingRolloutParams:
    base: dict[str, Any] = {
        "services": [{"namespace": "shop", "deployment": name} for name in SHOP],
        "otlp_endpoint": ENDPOINT,
    }
    return TracingRolloutParams.model_validate(base | update)


def observed(env: list[dict[str, Any]] | None = None, **update: Any) -> ObservedWorkload:
    return ObservedWorkload.model_validate(
        {"container": "app", "env": env or [], "annotations": {}} | update
    )


def fresh(*names: str) -> dict[tuple[str, str], ObservedWorkload]:
    return {("shop", name): observed([{"name": "PORT", "value": "8080"}]) for name in names}


def converged(plan_params: TracingRolloutParams) -> dict[tuple[str, str], ObservedWorkload]:
    """The live state after a plan was applied: what a re-run reads."""
    plan = plan_rollout(plan_params, fresh(*SHOP))
    return {
        (s.namespace, s.deployment): observed(list(s.env_after), annotations=s.annotations_after)
        for s in plan.services
    }


# --------------------------------------------------------------------------- parameters


def test_defaults_follow_the_issue() -> None:
    p = params()
    assert p.propagators == ("tracecontext", "baggage")
    assert p.sampler == "parentbased_traceidratio"
    assert p.sampler_ratio == 1.0
    assert p.sampler_argument == "1.0"
    assert p.mode == "env"
    assert p.batch_size == 2
    tail = p.tail_sampling
    assert (tail.errors_always, tail.latency_threshold_ms, tail.probabilistic_percent) == (
        True,
        1000,
        1.0,
    )
    assert (tail.decision_wait_seconds, tail.num_traces) == (10, 50_000)
    assert p.services[0].name == "frontend"
    assert p.services[0].target == "shop/frontend"


@pytest.mark.parametrize(
    ("update", "words"),
    [
        ({"sampler_ratio": 1.5}, ["sampler_ratio", "[0, 1]"]),
        ({"sampler_ratio": -0.1}, ["sampler_ratio", "[0, 1]"]),
        ({"sampler_ratio": float("nan")}, ["sampler_ratio"]),
        ({"propagators": ["tracecontext", "w3c"]}, ["propagators", "'w3c'", "b3multi"]),
        ({"propagators": []}, ["propagators"]),
        ({"propagators": ["b3", "b3"]}, ["propagators", "repeat"]),
        ({"propagators": ["none", "b3"]}, ["propagators", "'none'"]),
        ({"sampler": "adaptive"}, ["sampler", "'adaptive'", "parentbased_traceidratio"]),
        ({"sampler": "always_on", "sampler_ratio": 0.5}, ["sampler_ratio", "always_on"]),
        ({"otlp_endpoint": "otel-collector:4318"}, ["otlp_endpoint", "http(s)"]),
        ({"otlp_endpoint": "grpc://collector:4317"}, ["otlp_endpoint", "http(s)"]),
        ({"otlp_endpoint": "http:///v1"}, ["otlp_endpoint", "host"]),
        ({"otlp_endpoint": f"{ENDPOINT}/v1/traces"}, ["otlp_endpoint", "/v1/traces"]),
        ({"otlp_endpoint": f"{ENDPOINT}?a=1"}, ["otlp_endpoint", "query"]),
        ({"services": []}, ["services", "at least one"]),
        (
            {"services": [{"deployment": "a"}, {"namespace": "default", "deployment": "a"}]},
            ["services", "default/a twice"],
        ),
        (
            {"services": [{"deployment": "a"}, {"deployment": "b", "service_name": "a"}]},
            ["services", "default/a", "default/b", "'a'"],
        ),
        (
            {"services": [{"deployment": "a", "canary": True}, {"deployment": "b", "canary": 1}]},
            ["services", "at most one canary"],
        ),
        ({"services": [{"deployment": "Front End"}]}, ["deployment", "'Front End'"]),
        ({"services": [{"namespace": "Shop", "deployment": "a"}]}, ["namespace", "'Shop'"]),
        ({"services": [{"deployment": "a", "service_name": " "}]}, ["service_name"]),
        ({"services": [{"deployment": "a", "container": "A_B"}]}, ["container", "'A_B'"]),
        ({"services": [{"deployment": "a", "replicas": 3}]}, ["replicas"]),
        ({"resource_attributes": {"service.name": "x"}}, ["resource_attributes", "service_name"]),
        ({"resource_attributes": {"a=b": "x"}}, ["resource_attributes", "'a=b'"]),
        ({"instrumentation_name": "My_Inst"}, ["instrumentation_name", "'My_Inst'"]),
        ({"mode": "sidecar"}, ["mode"]),
        ({"batch_size": 0}, ["batch_size"]),
        ({"tail_sampling": {"probabilistic_percent": 101}}, ["probabilistic_percent"]),
        ({"tail_sampling": {"latency_threshold_ms": 0}}, ["latency_threshold_ms"]),
        (
            {
                "tail_sampling": {
                    "errors_always": False,
                    "latency_threshold_ms": None,
                    "probabilistic_percent": 0,
                }
            },
            ["tail_sampling", "keeps no trace"],
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(update: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        params(**update)
    text = str(caught.value)
    for word in words:
        assert word in text


def test_a_ratio_sampler_carries_its_argument_and_others_none() -> None:
    assert params(sampler_ratio=0.1).sampler_argument == "0.1"
    assert params(sampler="traceidratio", sampler_ratio=0).sampler_argument == "0.0"
    assert params(sampler="parentbased_always_on").sampler_argument is None


# --------------------------------------------------------------------------- env mode


def test_env_mode_sets_every_variable_and_appends_after_existing_ones() -> None:
    p = params(sampler_ratio=0.1, resource_attributes={"deployment.environment": "prod"})
    plan = plan_rollout(p, fresh(*SHOP))
    checkout = plan.service("shop/checkout")
    assert checkout.action is ServiceAction.CHANGE
    assert checkout.env_after == (
        {"name": "PORT", "value": "8080"},
        {"name": "OTEL_SERVICE_NAME", "value": "checkout"},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": ENDPOINT},
        {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": "0.1"},
        {"name": "OTEL_PROPAGATORS", "value": "tracecontext,baggage"},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "deployment.environment=prod"},
    )
    assert all(c.action == "add" and c.before is None for c in checkout.env_changes)
    assert [c.name for c in checkout.env_changes] == [e["name"] for e in checkout.env_after[1:]]
    assert checkout.annotation_changes == ()
    assert plan.instrumentations == ()
    assert plan.warnings == ()


def test_a_rerun_after_the_rollout_changes_nothing() -> None:
    p = params(sampler_ratio=0.1, resource_attributes={"team": "shop"})
    plan = plan_rollout(p, converged(p))
    assert plan.changed == ()
    assert len(plan.unchanged) == 3
    assert plan.stages == ()
    assert "nothing to do" in plan.summary
    assert all(s.apply_patch() == [] and s.revert_patch() == [] for s in plan.services)


def test_equal_meaning_is_not_a_change() -> None:
    env = [
        {"name": "OTEL_SERVICE_NAME", "value": "payments"},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": ENDPOINT},
        {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": "1"},
        {"name": "OTEL_PROPAGATORS", "value": " tracecontext , baggage"},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "team=shop, region=eu"},
    ]
    p = params(services=[{"namespace": "shop", "deployment": "payments"}])
    plan = plan_rollout(p, {("shop", "payments"): observed(env)})
    assert plan.services[0].action is ServiceAction.UNCHANGED
    assert plan.services[0].env_after == tuple(env)


def test_only_what_differs_is_changed_and_the_undo_is_the_old_env_exactly() -> None:
    secret = {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "valueFrom": {"secretKeyRef": {"key": "u"}}}
    env = [
        {"name": "OTEL_SERVICE_NAME", "value": "payments"},
        secret,
        {"name": "OTEL_TRACES_SAMPLER", "value": "always_on"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": "not-a-number"},
        {"name": "OTEL_PROPAGATORS", "value": "b3"},
        {"name": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "value": "http://old:4318/v1/traces"},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "team=pay,deployment.environment=dev"},
    ]
    p = params(
        services=[{"namespace": "shop", "deployment": "payments", "container": "app"}],
        resource_attributes={"deployment.environment": "prod", "region": "eu west"},
    )
    plan = plan_rollout(p, {("shop", "payments"): observed(env, container_index=1)})
    service = plan.services[0]
    changes = {c.name: c for c in service.env_changes}
    assert "OTEL_SERVICE_NAME" not in changes
    assert changes["OTEL_EXPORTER_OTLP_ENDPOINT"] == Change(
        name="OTEL_EXPORTER_OTLP_ENDPOINT",
        before="valueFrom {'secretKeyRef': {'key': 'u'}}",
        after=ENDPOINT,
    )
    assert changes["OTEL_TRACES_SAMPLER"].action == "update"
    assert changes["OTEL_TRACES_SAMPLER_ARG"].after == "1.0"
    assert changes["OTEL_PROPAGATORS"].before == "b3"
    assert changes["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].action == "remove"
    assert changes["OTEL_RESOURCE_ATTRIBUTES"].after == (
        "team=pay,deployment.environment=prod,region=eu%20west"
    )
    names = [e["name"] for e in service.env_after]
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" not in names
    assert names.index("OTEL_EXPORTER_OTLP_ENDPOINT") == 1  # replaced in place, no valueFrom left
    assert service.env_after[1] == {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": ENDPOINT}

    assert service.apply_patch() == [
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "app"},
        {
            "op": "add",
            "path": "/spec/template/spec/containers/1/env",
            "value": [dict(e) for e in service.env_after],
        },
    ]
    assert service.revert_patch()[1]["value"] == env


def test_resource_attributes_we_do_not_set_are_left_alone() -> None:
    secret = {"name": "OTEL_RESOURCE_ATTRIBUTES", "valueFrom": {"configMapKeyRef": {"key": "r"}}}
    p = params(services=[{"deployment": "a"}])
    service = plan_rollout(p, {("default", "a"): observed([secret])}).services[0]
    assert "OTEL_RESOURCE_ATTRIBUTES" not in {c.name for c in service.env_changes}
    assert service.env_after[0] == secret
    ours = params(services=[{"deployment": "a"}], resource_attributes={"team": "x"})
    service = plan_rollout(ours, {("default", "a"): observed([secret])}).services[0]
    change = {c.name: c for c in service.env_changes}["OTEL_RESOURCE_ATTRIBUTES"]
    assert change.before is not None
    assert change.before.startswith("valueFrom")
    assert change.after == "team=x"


def test_a_non_ratio_sampler_removes_a_stale_argument() -> None:
    env = [{"name": "OTEL_TRACES_SAMPLER_ARG", "value": "0.5"}]
    p = params(services=[{"deployment": "a"}], sampler="parentbased_always_on")
    service = plan_rollout(p, {("default", "a"): observed(env)}).services[0]
    assert {c.name: c.action for c in service.env_changes}["OTEL_TRACES_SAMPLER_ARG"] == "remove"
    assert all(e["name"] != "OTEL_TRACES_SAMPLER_ARG" for e in service.env_after)


def test_env_that_stops_reporting_is_warned_about() -> None:
    env = [
        {"name": "OTEL_SDK_DISABLED", "value": "TRUE"},
        {"name": "OTEL_TRACES_EXPORTER", "value": "console"},
    ]
    p = params(services=[{"deployment": "a"}])
    plan = plan_rollout(p, {("default", "a"): observed(env)})
    assert len(plan.warnings) == 2
    assert "OTEL_SDK_DISABLED=true" in plan.warnings[0]
    assert "OTEL_TRACES_EXPORTER=console" in plan.warnings[1]


def test_a_custom_service_name_is_used() -> None:
    p = params(services=[{"deployment": "shop-blue", "service_name": "shop"}])
    service = plan_rollout(p, {("default", "shop-blue"): observed()}).services[0]
    assert service.service_name == "shop"
    assert {"name": "OTEL_SERVICE_NAME", "value": "shop"} in service.env_after


# --------------------------------------------------------------------------- refusals


def test_an_unknown_deployment_refuses_the_whole_plan() -> None:
    with pytest.raises(PlanRefused) as caught:
        plan_rollout(params(), fresh("frontend", "checkout"))
    assert "services" in str(caught.value)
    assert "shop/payments" in str(caught.value)
    assert "nothing was changed" in str(caught.value)


def test_a_container_that_is_not_there_refuses() -> None:
    p = params(services=[{"deployment": "a", "container": "sidecar"}])
    with pytest.raises(PlanRefused, match="no container 'sidecar'"):
        plan_rollout(p, {("default", "a"): observed()})


def test_observed_env_entries_need_a_name() -> None:
    with pytest.raises(ValidationError, match="needs a name"):
        observed([{"value": "x"}])


# --------------------------------------------------------------------------- stages


def names(plan_stages: Any) -> list[tuple[bool, tuple[str, ...]]]:
    return [(s.canary, s.targets) for s in plan_stages]


def test_without_a_marked_canary_the_first_service_goes_first_then_batches() -> None:
    services = [{"deployment": n} for n in ("a", "b", "c", "d", "e")]
    p = params(services=services, batch_size=2)
    plan = plan_rollout(p, {("default", n["deployment"]): observed() for n in services})
    assert names(plan.stages) == [
        (True, ("default/a",)),
        (False, ("default/b", "default/c")),
        (False, ("default/d", "default/e")),
    ]
    assert [s.index for s in plan.stages] == [0, 1, 2]
    assert "5 service(s) in 3 stage(s)" in plan.summary


def test_the_marked_canary_goes_first() -> None:
    services = [{"deployment": "a"}, {"deployment": "b", "canary": True}, {"deployment": "c"}]
    p = params(services=services, batch_size=5)
    plan = plan_rollout(p, {("default", n): observed() for n in "abc"})
    assert names(plan.stages) == [(True, ("default/b",)), (False, ("default/a", "default/c"))]


def test_an_already_traced_canary_hands_its_place_to_the_first_change() -> None:
    services = [{"deployment": "a"}, {"deployment": "b", "canary": True}, {"deployment": "c"}]
    p = params(services=services)
    done = plan_rollout(
        p,
        {("default", "b"): observed(), ("default", "a"): observed(), ("default", "c"): observed()},
    )
    current = {("default", n): observed() for n in "ac"}
    current[("default", "b")] = observed(list(done.service("default/b").env_after))
    plan = plan_rollout(p, current)
    assert [s.target for s in plan.unchanged] == ["default/b"]
    assert names(plan.stages) == [(True, ("default/a",)), (False, ("default/c",))]


def test_unknown_service_lookup_raises_key_error() -> None:
    plan = plan_rollout(params(), fresh(*SHOP))
    with pytest.raises(KeyError):
        plan.service("shop/nope")


# --------------------------------------------------------------------------- operator mode


def test_operator_mode_annotates_and_creates_one_instrumentation_per_namespace() -> None:
    services = [
        {"namespace": "shop", "deployment": "frontend"},
        {"namespace": "shop", "deployment": "checkout", "service_name": "co"},
        {"namespace": "pay", "deployment": "payments"},
    ]
    p = params(
        services=services,
        mode="operator",
        sampler_ratio=0.25,
        propagators=["tracecontext", "baggage", "b3"],
        resource_attributes={"deployment.environment": "prod"},
    )
    current = {
        ("shop", "frontend"): observed(annotations={"keep": "me"}),
        ("shop", "checkout"): observed(),
        ("pay", "payments"): observed(),
    }
    plan = plan_rollout(p, current)
    frontend = plan.service("shop/frontend")
    assert frontend.annotations_after == {
        "keep": "me",
        INJECT_PYTHON: "shop/tracing-rollout",
        SERVICE_NAME_ANNOTATION: "frontend",
    }
    assert frontend.env_changes == ()
    assert frontend.env_after == frontend.env_before
    assert [c.action for c in frontend.annotation_changes] == ["add", "add"]
    assert plan.service("shop/checkout").annotations_after[SERVICE_NAME_ANNOTATION] == "co"
    assert plan.service("pay/payments").annotations_after[INJECT_PYTHON] == "pay/tracing-rollout"
    patch = frontend.apply_patch()
    assert patch[1] == {
        "op": "add",
        "path": "/spec/template/metadata/annotations",
        "value": frontend.annotations_after,
    }
    assert len(patch) == 2  # no env op
    assert frontend.revert_patch()[1]["value"] == {"keep": "me"}

    assert [i["metadata"]["namespace"] for i in plan.instrumentations] == ["shop", "pay"]
    shop = plan.instrumentations[0]
    assert shop["apiVersion"] == "opentelemetry.io/v1alpha1"
    assert shop["kind"] == "Instrumentation"
    assert shop["metadata"]["name"] == "tracing-rollout"
    assert shop["spec"] == {
        "exporter": {"endpoint": ENDPOINT},
        "propagators": ["tracecontext", "baggage", "b3"],
        "sampler": {"type": "parentbased_traceidratio", "argument": "0.25"},
        "resource": {"resourceAttributes": {"deployment.environment": "prod"}},
    }


def test_operator_mode_converges_and_warns_about_shadowing_env() -> None:
    p = params(
        services=[{"deployment": "a"}],
        mode="operator",
        sampler="always_on",
        instrumentation_name="python-otel",
    )
    annotations = {INJECT_PYTHON: "default/python-otel", SERVICE_NAME_ANNOTATION: "a"}
    env = [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://elsewhere:4318"}]
    plan = plan_rollout(p, {("default", "a"): observed(env, annotations=annotations)})
    assert plan.services[0].action is ServiceAction.UNCHANGED
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in plan.warnings[0]
    assert plan.instrumentations[0]["spec"]["sampler"] == {"type": "always_on"}
    assert "resource" not in plan.instrumentations[0]["spec"]


# --------------------------------------------------------------------------- resource attributes


def test_resource_attributes_round_trip_and_merge() -> None:
    assert parse_resource_attributes(None) == {}
    assert parse_resource_attributes("a=1, b = x%2Cy ,broken,=v") == {"a": "1", "b": "x,y"}
    assert format_resource_attributes({"a": "x,y=z"}) == "a=x%2Cy%3Dz"
    assert merge_resource_attributes(None, {}) is None
    assert merge_resource_attributes("", {}) is None
    assert merge_resource_attributes("a=1", {}) == "a=1"
    assert merge_resource_attributes("a=1 , b=2", {"a": "1"}) == "a=1 , b=2"  # spelling kept
    assert merge_resource_attributes("a=1,b=2", {"a": "9", "c": "3"}) == "a=9,b=2,c=3"


# --------------------------------------------------------------------------- collector config


def test_collector_config_encodes_the_policy_and_validates() -> None:
    p = params(
        tail_sampling={"latency_threshold_ms": 750, "probabilistic_percent": 2.5},
    )
    config = collector_config(p, "http://jaeger:4318")
    tail = config["processors"]["tail_sampling"]
    assert tail["decision_wait"] == "10s"
    assert tail["num_traces"] == 50_000
    assert tail["policies"] == [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 750}},
        {
            "name": "baseline",
            "type": "probabilistic",
            "probabilistic": {"sampling_percentage": 2.5},
        },
    ]
    traces = config["service"]["pipelines"]["traces"]
    assert traces == {
        "receivers": ["otlp"],
        "processors": ["tail_sampling", "batch"],
        "exporters": ["otlphttp"],
    }
    assert config["exporters"]["otlphttp"]["endpoint"] == "http://jaeger:4318"
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert validate_tail_sampling(config) == []


def test_disabled_policies_are_left_out() -> None:
    p = params(
        tail_sampling={"errors_always": False, "latency_threshold_ms": None},
    )
    policies = collector_config(p, "http://b:4318")["processors"]["tail_sampling"]["policies"]
    assert [x["name"] for x in policies] == ["baseline"]
    p = params(tail_sampling={"probabilistic_percent": 0})
    policies = collector_config(p, "http://b:4318")["processors"]["tail_sampling"]["policies"]
    assert [x["name"] for x in policies] == ["errors", "slow"]


def test_config_map_holds_yaml_that_reads_back_as_the_config() -> None:
    config = collector_config(params(), "http://b:4318")
    manifest = config_map("observability", "otel-collector", config)
    assert manifest["kind"] == "ConfigMap"
    assert manifest["metadata"]["namespace"] == "observability"
    assert manifest["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "tracing-rollout"}
    text = manifest["data"][COLLECTOR_CONFIG_KEY]
    assert yaml.safe_load(text) == config
    assert json.loads(text) == config


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5h", 5400.0), ("0", 0.0), ("2us", 2e-6)],
)
def test_go_durations(value: str, seconds: float) -> None:
    assert duration_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["10", "s", "10 s", "-1s", "1d", ""])
def test_malformed_go_durations(value: str) -> None:
    assert duration_seconds(value) is None


def tail(**settings: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "decision_wait": "10s",
        "policies": [{"name": "all", "type": "always_sample"}],
    }
    return {
        "processors": {"tail_sampling": base | settings},
        "service": {"pipelines": {"traces": {"processors": ["tail_sampling"]}}},
    }


def policy(kind: str, settings: Any = None, name: str = "p") -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "type": kind}
    if settings is not None:
        result[kind] = settings
    return result


@pytest.mark.parametrize(
    "policies",
    [
        [policy("always_sample"), policy("trace_flags", name="f")],
        [policy("latency", {"threshold_ms": 0, "upper_threshold_ms": 10})],
        [policy("latency", {"upper_threshold_ms": 10})],
        [policy("numeric_attribute", {"key": "http.status", "min_value": 500})],
        [policy("string_attribute", {"key": "k", "values": ["v"]})],
        [policy("boolean_attribute", {"key": "k", "value": False})],
        [policy("trace_state", {"key": "k", "values": ["v"]})],
        [policy("rate_limiting", {"spans_per_second": 35})],
        [policy("bytes_limiting", {"bytes_per_second": 1024})],
        [policy("span_count", {"min_spans": 2})],
        [policy("ottl_condition", {"span": ['name == "x"']})],
        [policy("probabilistic", {"sampling_percentage": 100})],
        [policy("status_code", {"status_codes": ["OK", "UNSET"]})],
        [policy("and", {"and_sub_policy": [policy("always_sample", name="x")]})],
        [policy("drop", {"drop_sub_policy": [policy("span_count", {"max_spans": 9})]})],
        [policy("not", {"not_sub_policy": policy("always_sample", name="x")})],
        [
            policy(
                "composite",
                {
                    "max_total_spans_per_second": 100,
                    "policy_order": ["x", "y"],
                    "composite_sub_policy": [
                        policy("always_sample", name="x"),
                        policy("latency", {"threshold_ms": 5}, name="y"),
                    ],
                    "rate_allocation": [{"policy": "x", "percent": 50}],
                },
            )
        ],
    ],
)
def test_documented_policies_are_accepted(policies: list[dict[str, Any]]) -> None:
    assert validate_tail_sampling(tail(policies=policies)) == []


@pytest.mark.parametrize(
    ("policies", "words"),
    [
        ([policy("adaptive")], ["policies[p].type", "'adaptive'"]),
        ([{"type": "always_sample"}], ["policies[0].name", "required"]),
        ([policy("always_sample"), policy("always_sample")], ["'p' is used twice"]),
        (["always_sample"], ["policies[0]", "mapping"]),
        ([policy("always_sample") | {"latency": {}}], ["policies[p].latency", "not a setting"]),
        ([policy("latency", {})], ["latency", "threshold_ms"]),
        ([policy("latency", {"threshold_ms": -1})], ["threshold_ms must be >= 0"]),
        ([policy("latency", {"threshold_ms": 5, "upper_threshold_ms": 5})], ["upper_threshold"]),
        ([policy("latency", "fast")], ["policies[p].latency", "mapping"]),
        ([policy("probabilistic", {})], ["sampling_percentage"]),
        ([policy("probabilistic", {"sampling_percentage": -1})], ["[0, 100]"]),
        ([policy("status_code", {"status_codes": []})], ["status_codes"]),
        ([policy("status_code", {"status_codes": ["error"]})], ["'error'"]),
        ([policy("numeric_attribute", {"key": "k"})], ["min_value"]),
        ([policy("string_attribute", {"values": ["v"]})], ["needs key"]),
        ([policy("string_attribute", {"key": "k"})], ["needs values"]),
        ([policy("boolean_attribute", {"key": "k", "value": "yes"})], ["true or false"]),
        ([policy("rate_limiting", {"spans_per_second": 0})], ["spans_per_second > 0"]),
        ([policy("bytes_limiting", {})], ["bytes_per_second > 0"]),
        ([policy("span_count", {})], ["min_spans"]),
        ([policy("ottl_condition", {})], ["span and/or spanevent"]),
        ([policy("and", {})], ["and_sub_policy"]),
        ([policy("and", {"and_sub_policy": [policy("nope", name="x")]})], ["and_sub_policy[x]"]),
        (
            [policy("and", {"and_sub_policy": [policy("composite", {}, name="x")]})],
            ["cannot be nested"],
        ),
        ([policy("not", {})], ["not_sub_policy"]),
        ([policy("composite", {})], ["composite_sub_policy"]),
        (
            [
                policy(
                    "composite",
                    {
                        "composite_sub_policy": [policy("always_sample", name="x")],
                        "policy_order": ["x", "z"],
                        "rate_allocation": [
                            {"policy": "x", "percent": 80},
                            {"policy": "x", "percent": 30},
                            {"policy": "w", "percent": 1},
                        ],
                    },
                )
            ],
            ["max_total_spans_per_second", "'z'", "names no", "add up to 110"],
        ),
    ],
)
def test_bad_policies_are_reported(policies: list[Any], words: list[str]) -> None:
    errors = validate_tail_sampling(tail(policies=policies))
    text = " ".join(errors)
    assert errors
    for word in words:
        assert word in text


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"decision_wait": "10"}, ["decision_wait", "'10'"]),
        ({"decision_wait": 10}, ["decision_wait"]),
        ({"decision_wait": "0s"}, ["decision_wait"]),
        ({"decision_wait_after_root_received": "x"}, ["decision_wait_after_root_received"]),
        ({"num_traces": 0}, ["num_traces", "positive"]),
        ({"num_traces": True}, ["num_traces"]),
        ({"expected_new_traces_per_sec": -1}, ["expected_new_traces_per_sec", "non-negative"]),
        ({"policies": []}, ["policies: required"]),
        ({"adaptive": True}, ["tail_sampling.adaptive", "unknown setting"]),
    ],
)
def test_bad_processor_settings_are_reported(settings: dict[str, Any], words: list[str]) -> None:
    text = " ".join(validate_tail_sampling(tail(**settings)))
    for word in words:
        assert word in text


def test_structure_around_the_processor_is_checked() -> None:
    assert validate_tail_sampling({}) == ["processors: missing, or not a mapping."]
    assert validate_tail_sampling({"processors": {"batch": {}}}) == [
        "processors: no tail_sampling processor."
    ]
    assert validate_tail_sampling({"processors": {"tail_sampling": []}}) == [
        "processors.tail_sampling: must be a mapping.",
        "service.pipelines: no traces pipeline uses processor tail_sampling.",
    ]
    named = {
        "processors": {"tail_sampling/eu": tail()["processors"]["tail_sampling"]},
        "service": {"pipelines": {"traces/eu": {"processors": ["tail_sampling/eu"]}}},
    }
    assert validate_tail_sampling(named) == []
    unused = tail()
    unused["service"]["pipelines"] = {"metrics": {"processors": ["tail_sampling"]}}
    assert validate_tail_sampling(unused) == [
        "service.pipelines: no traces pipeline uses processor tail_sampling."
    ]


def test_a_service_may_export_to_its_own_endpoint_in_env_mode_only() -> None:
    own = "http://127.0.0.1:9"
    p = params(
        services=[
            {"deployment": "checkout", "otlp_endpoint": own},
            {"deployment": "payments"},
        ]
    )
    plan = plan_rollout(
        p, {("default", "checkout"): observed(), ("default", "payments"): observed()}
    )
    endpoints = {
        s.target: next(
            e["value"] for e in s.env_after if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        for s in plan.services
    }
    assert endpoints == {"default/checkout": own, "default/payments": ENDPOINT}
    with pytest.raises(ValidationError, match="env mode only"):
        params(mode="operator", services=[{"deployment": "checkout", "otlp_endpoint": own}])
    with pytest.raises(ValidationError, match="SDK appends /v1/traces"):
        params(services=[{"deployment": "checkout", "otlp_endpoint": own + "/v1/traces"}])


def test_probe_url_and_collector_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="probe_url must be an http"):
        params(services=[{"deployment": "checkout", "probe_url": "checkout:8080"}])
    with pytest.raises(ValidationError, match="needs collector_exporter_endpoint"):
        params(collector_config_map="observability/otel")
    with pytest.raises(ValidationError, match="namespace/name"):
        params(collector_exporter_endpoint=ENDPOINT, collector_config_map="no slash in it")
    ok = params(collector_exporter_endpoint=ENDPOINT, collector_config_map="observability/otel")
    assert ok.collector_config_map == "observability/otel"
