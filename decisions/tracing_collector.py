"""The OpenTelemetry Collector config of ``tracing-rollout``, and its check. Pure: dicts in and out.

Why a Collector at all: the recipe's "adaptive" sampler (every error, every slow trace, 1 % of
the rest) needs each trace's outcome, which no service knows when it starts a span. Only a
component that sees whole traces can decide, so it is the Collector's ``tail_sampling``
processor (opentelemetry-collector-contrib), fed by the services' head-sampled spans.

Why we check the config ourselves: a Collector refuses a bad config only when it starts, i.e.
after the rollout changed the services. :func:`validate_tail_sampling` checks the structure the
processor documents (its ``config.schema.yaml`` and README: policy types, each type's fields,
``decision_wait`` as a Go duration, ``num_traces``...) before anything is applied, and says what
is wrong in sentences naming the path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from decisions.tracing_plan import MANAGED_BY, TracingRolloutParams

COLLECTOR_CONFIG_KEY = "collector.yaml"
"""The ConfigMap key holding the Collector config."""

_DURATION = re.compile(r"^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

TOP_LEVEL_KEYS = frozenset(
    {
        "decision_wait",
        "decision_wait_after_root_received",
        "num_traces",
        "expected_new_traces_per_sec",
        "decision_cache",
        "policies",
        "sample_on_first_match",
        "drop_pending_traces_on_shutdown",
        "block_on_overflow",
        "maximum_trace_size_bytes",
        "sampling_strategy",
    }
)
"""``tail_sampling``'s settings (config.schema.yaml); the Collector refuses any other key."""
POLICY_TYPES = frozenset(
    {
        "always_sample",
        "latency",
        "numeric_attribute",
        "probabilistic",
        "status_code",
        "string_attribute",
        "trace_state",
        "trace_flags",
        "rate_limiting",
        "bytes_limiting",
        "span_count",
        "boolean_attribute",
        "ottl_condition",
        "and",
        "drop",
        "not",
        "composite",
    }
)
# Types whose settings live under a key of the type's name (all but these two).
_NO_SETTINGS = frozenset({"always_sample", "trace_flags"})
STATUS_CODES = ("OK", "ERROR", "UNSET")


def collector_config(params: TracingRolloutParams, backend_endpoint: str) -> dict[str, Any]:
    """The Collector config: OTLP in (gRPC and HTTP), tail sampling then batching, OTLP/HTTP out.

    The policies follow ``params.tail_sampling`` one for one: ``errors`` (status_code ERROR),
    ``slow`` (latency >= threshold) and ``baseline`` (probabilistic); a disabled one is left
    out (0 % keeps nothing, so it is disabled). The processor keeps a trace when any policy
    says so. ``batch`` comes after ``tail_sampling``: the sampler regroups spans by trace and
    would undo batches made before it.
    """
    policy = params.tail_sampling
    policies: list[dict[str, Any]] = []
    if policy.errors_always:
        policies.append(
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
        )
    if policy.latency_threshold_ms is not None:
        policies.append(
            {
                "name": "slow",
                "type": "latency",
                "latency": {"threshold_ms": policy.latency_threshold_ms},
            }
        )
    if policy.probabilistic_percent > 0:
        policies.append(
            {
                "name": "baseline",
                "type": "probabilistic",
                "probabilistic": {"sampling_percentage": policy.probabilistic_percent},
            }
        )
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": "0.0.0.0:4317"},
                    "http": {"endpoint": "0.0.0.0:4318"},
                }
            }
        },
        "processors": {
            "tail_sampling": {
                "decision_wait": f"{policy.decision_wait_seconds}s",
                "num_traces": policy.num_traces,
                "policies": policies,
            },
            "batch": {},
        },
        "exporters": {"otlphttp": {"endpoint": backend_endpoint}},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["tail_sampling", "batch"],
                    "exporters": ["otlphttp"],
                }
            }
        },
    }


def config_map(namespace: str, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A ConfigMap holding ``config`` under :data:`COLLECTOR_CONFIG_KEY`.

    Written as JSON, which is YAML too (YAML 1.2 is a superset of JSON): the Collector reads
    it unchanged, keys keep their order, and no YAML library is needed to write or diff it.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "data": {COLLECTOR_CONFIG_KEY: json.dumps(config, indent=2) + "\n"},
    }


def duration_seconds(value: str) -> float | None:
    """A Go duration (``10s``, ``1m30s``, ``500ms``, ``0``) in seconds; ``None`` if malformed."""
    if value == "0":
        return 0.0
    if not _DURATION.match(value):
        return None
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


def validate_tail_sampling(config: Mapping[str, Any]) -> list[str]:
    """Problems of a Collector config's ``tail_sampling`` processor(s), as sentences.

    Checks every processor named ``tail_sampling`` or ``tail_sampling/<id>``: its keys, its
    durations and counts, each policy (name, unique, known type, that type's required fields,
    sub-policies of ``and`` / ``drop`` / ``not`` / ``composite``), and that a ``traces``
    pipeline uses it. An empty list means valid.
    """
    processors = config.get("processors")
    if not isinstance(processors, Mapping):
        return ["processors: missing, or not a mapping."]
    names = [n for n in processors if n == "tail_sampling" or n.startswith("tail_sampling/")]
    if not names:
        return ["processors: no tail_sampling processor."]
    errors: list[str] = []
    for name in names:
        errors += _check_processor(f"processors.{name}", processors[name])
        if not _in_traces_pipeline(config, name):
            errors.append(f"service.pipelines: no traces pipeline uses processor {name}.")
    return errors


def _in_traces_pipeline(config: Mapping[str, Any], processor: str) -> bool:
    pipelines = (config.get("service") or {}).get("pipelines") or {}
    return any(
        (key == "traces" or key.startswith("traces/"))
        and processor in ((pipeline or {}).get("processors") or [])
        for key, pipeline in pipelines.items()
    )


def _check_processor(path: str, settings: Any) -> list[str]:
    if not isinstance(settings, Mapping):
        return [f"{path}: must be a mapping."]
    errors = [
        f"{path}.{key}: unknown setting (known: {', '.join(sorted(TOP_LEVEL_KEYS))})."
        for key in settings
        if key not in TOP_LEVEL_KEYS
    ]
    for key in ("decision_wait", "decision_wait_after_root_received"):
        if key in settings:
            seconds = duration_seconds(str(settings[key]))
            if seconds is None or seconds <= 0 or not isinstance(settings[key], str):
                errors.append(
                    f"{path}.{key}: must be a positive duration like '10s', got {settings[key]!r}."
                )
    errors += _positive_int(path, settings, "num_traces")
    errors += _positive_int(path, settings, "expected_new_traces_per_sec", allow_zero=True)
    policies = settings.get("policies")
    if not isinstance(policies, list) or not policies:
        errors.append(f"{path}.policies: required, a non-empty list of policies.")
    else:
        errors += _check_policies(f"{path}.policies", policies, top=True)
    return errors


def _positive_int(
    path: str, settings: Mapping[str, Any], key: str, *, allow_zero: bool = False
) -> list[str]:
    if key not in settings:
        return []
    value = settings[key]
    floor = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < floor:
        kind = "a non-negative" if allow_zero else "a positive"
        return [f"{path}.{key}: must be {kind} integer, got {value!r}."]
    return []


def _check_policies(path: str, policies: list[Any], *, top: bool) -> list[str]:
    errors: list[str] = []
    seen: set[str] = set()
    for index, policy in enumerate(policies):
        where = f"{path}[{index}]"
        if not isinstance(policy, Mapping):
            errors.append(f"{where}: must be a mapping with name and type.")
            continue
        name = policy.get("name")
        if not isinstance(name, str) or not name:
            errors.append(f"{where}.name: required, a non-empty string.")
        elif name in seen:
            errors.append(f"{where}.name: {name!r} is used twice; policy names must be unique.")
        else:
            seen.add(name)
            where = f"{path}[{name}]"
        kind = policy.get("type")
        if kind not in POLICY_TYPES:
            errors.append(
                f"{where}.type: unknown policy type {kind!r} "
                f"(known: {', '.join(sorted(POLICY_TYPES))})."
            )
            continue
        if not top and kind in ("composite", "drop"):
            errors.append(f"{where}.type: {kind} policies cannot be nested.")
            continue
        allowed = {"name", "type"} | ({kind} if kind not in _NO_SETTINGS else set())
        errors += [
            f"{where}.{key}: not a setting of a {kind} policy."
            for key in policy
            if key not in allowed
        ]
        settings = policy.get(kind, {}) if kind not in _NO_SETTINGS else {}
        if not isinstance(settings, Mapping):
            errors.append(f"{where}.{kind}: must be a mapping.")
            continue
        errors += _check_settings(f"{where}.{kind}", kind, settings)
    return errors


def _check_settings(path: str, kind: str, s: Mapping[str, Any]) -> list[str]:
    """The fields each policy type needs, per the processor's README and schema."""

    def number(key: str) -> bool:
        value = s.get(key)
        return isinstance(value, int | float) and not isinstance(value, bool)

    problems: list[str] = []
    if kind == "latency":
        if not number("threshold_ms") and not number("upper_threshold_ms"):
            problems.append("needs threshold_ms (and optionally upper_threshold_ms), in ms")
        elif number("threshold_ms") and s["threshold_ms"] < 0:
            problems.append(f"threshold_ms must be >= 0, got {s['threshold_ms']}")
        elif (
            number("threshold_ms")
            and number("upper_threshold_ms")
            and s["upper_threshold_ms"] <= s["threshold_ms"]
        ):
            problems.append("upper_threshold_ms must be greater than threshold_ms")
    elif kind == "probabilistic":
        if not number("sampling_percentage"):
            problems.append("needs sampling_percentage, a number of percent")
        elif not 0 <= s["sampling_percentage"] <= 100:
            problems.append(
                f"sampling_percentage must be within [0, 100], got {s['sampling_percentage']}"
            )
    elif kind == "status_code":
        codes = s.get("status_codes")
        if not isinstance(codes, list) or not codes:
            problems.append("needs status_codes, a non-empty list of OK, ERROR or UNSET")
        else:
            problems += [
                f"unknown status code {c!r} (OK, ERROR or UNSET)"
                for c in codes
                if c not in STATUS_CODES
            ]
    elif kind in ("numeric_attribute", "string_attribute", "boolean_attribute", "trace_state"):
        if not isinstance(s.get("key"), str) or not s.get("key"):
            problems.append("needs key, the attribute to match")
        if kind == "numeric_attribute" and not (number("min_value") or number("max_value")):
            problems.append("needs min_value and/or max_value")
        if kind in ("string_attribute", "trace_state") and not (
            isinstance(s.get("values"), list) and s.get("values")
        ):
            problems.append("needs values, a non-empty list")
        if kind == "boolean_attribute" and not isinstance(s.get("value"), bool):
            problems.append("needs value, true or false")
    elif kind in ("rate_limiting", "bytes_limiting"):
        key = "spans_per_second" if kind == "rate_limiting" else "bytes_per_second"
        if not number(key) or s[key] <= 0:
            problems.append(f"needs {key} > 0")
    elif kind == "span_count":
        if not (number("min_spans") or number("max_spans")):
            problems.append("needs min_spans and/or max_spans")
    elif kind == "ottl_condition":
        if not (s.get("span") or s.get("spanevent")):
            problems.append("needs span and/or spanevent conditions")
    elif kind in ("and", "drop"):
        key = f"{kind}_sub_policy"
        subs = s.get(key)
        if not isinstance(subs, list) or not subs:
            problems.append(f"needs {key}, a non-empty list of policies")
        else:
            return _check_policies(f"{path}.{key}", subs, top=False)
    elif kind == "not":
        sub = s.get("not_sub_policy")
        if not isinstance(sub, Mapping):
            problems.append("needs not_sub_policy, one policy")
        else:
            return _check_policies(f"{path}.not_sub_policy", [sub], top=False)
    elif kind == "composite":
        return _check_composite(path, s)
    return [f"{path}: {problem}." for problem in problems]


def _check_composite(path: str, s: Mapping[str, Any]) -> list[str]:
    subs = s.get("composite_sub_policy")
    if not isinstance(subs, list) or not subs:
        return [f"{path}: needs composite_sub_policy, a non-empty list of policies."]
    errors = _check_policies(f"{path}.composite_sub_policy", subs, top=False)
    limit = s.get("max_total_spans_per_second")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        errors.append(f"{path}: needs max_total_spans_per_second > 0.")
    names = {p.get("name") for p in subs if isinstance(p, Mapping)}
    order = s.get("policy_order") or []
    errors += [
        f"{path}.policy_order: {n!r} is not a composite_sub_policy."
        for n in order
        if n not in names
    ]
    allocation = s.get("rate_allocation") or []
    total = 0
    for entry in allocation:
        if not isinstance(entry, Mapping) or entry.get("policy") not in names:
            errors.append(f"{path}.rate_allocation: {entry!r} names no composite_sub_policy.")
            continue
        total += int(entry.get("percent") or 0)
    if total > 100:
        errors.append(f"{path}.rate_allocation: percents add up to {total}, more than 100.")
    return errors
