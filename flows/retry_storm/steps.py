"""The steps of ``retry-storm``: measure from Prometheus, change a caller's settings and see every
pod take them, judge a change over the time since it took effect, wait for health.

Why a change is judged "since it took effect": ``rate(x[5m])`` still holds four minutes of storm
after a fix, so a verdict over the alert's window would take minutes to turn. Once every pod
has taken the new settings (its reload counter moved, at most a scrape later), the runbook
measures over a range that starts after that moment and grows as it waits: only the new
regime is in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from blocks.http import HttpService
from blocks.kubernetes import KubernetesTarget
from decisions.retry_config import expected_gauges
from decisions.retry_storm import (
    Key,
    Measurement,
    RetryStormParams,
    SettingsChange,
    measurement,
)
from runbooks.alerts import (
    RETRY_SETTING_GAUGES,
    backend_load_query,
    breaker_open_query,
    error_share_query,
    request_rate_query,
    retry_rate_query,
    retry_reloads_query,
    retry_setting_query,
)
from runbooks.errors import UnavailableError
from tasks.prometheus import Sample, query_vector
from tasks.retry_config import ConfigWrite, change_retry_config

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def _by_key(samples: Iterable[Sample]) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for s in samples:
        key = (s.labels.get("namespace", ""), s.labels.get("role", ""), s.labels.get("dependency"))
        if key[2]:
            out[key] = out.get(key, 0.0) + s.value  # type: ignore[index]
    return out  # type: ignore[return-value]


def measure(prometheus: HttpService, params: RetryStormParams, window: str) -> Measurement:
    """Every caller and dependency over ``window``: request, retry and error rates, breakers,
    and the load each dependency receives (any Prometheus error propagates: no blind verdict)."""
    return measurement(
        requests=_by_key(query_vector(prometheus, request_rate_query(window))),
        retries=_by_key(query_vector(prometheus, retry_rate_query(window))),
        errors=_by_key(query_vector(prometheus, error_share_query(window))),
        attempts=_by_key(query_vector(prometheus, backend_load_query(window))),
        breakers_open=_by_key(query_vector(prometheus, breaker_open_query())),
        namespaces=params.namespaces,
    )


def window_seconds(window: str) -> float:
    """A PromQL duration of one unit (``30s``, ``5m``, ``1h``) in seconds."""
    return float(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]


def window_since(seconds: float) -> str:
    """A PromQL range covering the last ``seconds`` (whole seconds, rounded down, at least 1)."""
    return f"{max(1, math.floor(seconds))}s"


def pod_gauges(prometheus: HttpService, caller: str) -> dict[str, dict[str, float]]:
    """Each pod's retry-setting gauges: ``{field: {pod: value}}``."""
    namespace, _, role = caller.partition("/")
    out: dict[str, dict[str, float]] = {}
    for field in RETRY_SETTING_GAUGES:
        promql = f'{retry_setting_query(field)}{{namespace="{namespace}",role="{role}"}}'
        out[field] = {_pod(s): s.value for s in query_vector(prometheus, promql)}
    return out


def pod_reloads(prometheus: HttpService, caller: str) -> dict[str, float]:
    """Each pod's count of retry-config files taken."""
    namespace, _, role = caller.partition("/")
    return {
        _pod(s): s.value for s in query_vector(prometheus, retry_reloads_query(namespace, role))
    }


def _pod(sample: Sample) -> str:
    return sample.labels.get("pod", sample.labels.get("instance", "?"))


def effective_of(gauges: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """One value per gauged field, the settings in force (pods of a role agree in a steady
    state; when they do not, the most common value)."""
    out: dict[str, float] = {}
    for field, pods in gauges.items():
        values = list(pods.values())
        if values:
            out[field] = max(set(values), key=values.count)
    return out


class NotTakenError(UnavailableError):
    """The pods did not report the new settings in time (the ConfigMap was written)."""


def wait_taken(
    prometheus: HttpService,
    changes: Sequence[SettingsChange],
    reloads_before: Mapping[str, Mapping[str, float]],
    params: RetryStormParams,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> float:
    """Poll until every pod of every changed caller has taken the new file (its reload count
    moved since ``reloads_before``, or it is a new pod) and reports the values set; the clock
    then. ``NotTakenError`` after ``apply_timeout_seconds``, naming the pods still behind.

    Why the reload count and not the gauges alone: a field set back to "absent" reads whatever
    the pod's env or default is, which the runbook cannot know, and a scrape from before the
    reload can match by chance. The count moves only when the pod has read the new file.
    (The shop re-reads its file on use: a pod with no traffic takes it at its next call.)
    """
    deadline = clock() + params.apply_timeout_seconds
    wanted = {c.caller: expected_gauges(c.after, RETRY_SETTING_GAUGES) for c in changes}
    while True:
        lagging = []
        for caller, expected in wanted.items():
            reloads = pod_reloads(prometheus, caller)
            before = reloads_before.get(caller, {})
            if not reloads:
                lagging.append(f"{caller} (no pod reports its retry-config reloads)")
            stale = sorted(pod for pod, n in reloads.items() if before.get(pod) == n)
            if stale:
                lagging.append(f"{caller} pods {', '.join(stale)} (not reloaded)")
            gauges = pod_gauges(prometheus, caller) if expected else {}
            for field, value in expected.items():
                wrong = sorted(p for p in reloads if gauges[field].get(p) != value)
                if wrong:
                    lagging.append(f"{caller} pods {', '.join(wrong)} ({field} != {value:g})")
        if not lagging:
            return clock()
        if clock() >= deadline:
            raise NotTakenError(
                f"within {params.apply_timeout_seconds:g} s the pods did not take the new retry "
                f"settings: {'; '.join(lagging)}; check that they mount the ConfigMap and "
                "reload it"
            )
        sleep(params.poll_seconds)


def write_changes(
    kubernetes: KubernetesTarget,
    params: RetryStormParams,
    changes: Sequence[SettingsChange],
    done: list[SettingsChange],
) -> list[ConfigWrite]:
    """Write each change, appending it to ``done`` once *we* wrote it (a change found already
    in force is someone else's, not ours to undo), so a failure part-way knows exactly what
    to undo or keep."""
    writes = []
    for change in changes:
        namespace, name = params.config_map_of(change.caller)
        write = change_retry_config(kubernetes, namespace, name, params.config_key, change)
        writes.append(write)
        if write.changed:
            done.append(change)
    return writes


def watch(
    prometheus: HttpService,
    params: RetryStormParams,
    since: float,
    *,
    judge: Callable[[Measurement], bool | None],
    for_seconds: float,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> tuple[bool | None, Measurement | None, float]:
    """Measure over the time since ``since`` (at least ``verify_after_seconds`` of it), until
    ``judge`` says True or False, or ``for_seconds`` have passed since ``since``.

    Returns the last verdict (``None``: never conclusive), its measurement, and the clock.
    ``judge`` returning True or False ends the watch; ``None`` (keep looking) continues.
    """
    verdict: bool | None = None
    last: Measurement | None = None
    while True:
        wait = since + params.verify_after_seconds - clock()
        if wait > 0:
            sleep(wait)
        now = clock()
        last = measure(prometheus, params, window_since(now - since))
        verdict = judge(last)
        if verdict is not None or now - since >= for_seconds:
            return verdict, last, now
        sleep(params.poll_seconds)


def load_table(rows: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per dependency: load during the storm, contained, after restore, and the reduction."""
    out = []
    for dependency, row in sorted(rows.items()):
        out.append({"dependency": dependency, **{k: _fmt(v) for k, v in row.items()}})
    return out


def _fmt(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value
