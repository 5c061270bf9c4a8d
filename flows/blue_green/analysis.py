"""Analyses of a colour: health checks and Prometheus measurements until a verdict.

The verdict rules are :mod:`decisions.analysis` (no data is inconclusive, never success); this
module takes the measurements. With ``synthetic_load_rps`` set, requests go to the colour under
test for the whole analysis (its preview has no other traffic), and ``initial_delay_seconds``
lets the query window fill before the first measurement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from blocks.http import HttpService
from decisions.analysis import AnalysisPhase, AnalysisRun, AnalysisSpec, Measurement, Verdict
from decisions.bluegreen import BlueGreenParams, Colour
from flows.blue_green.results import AnalysisFailed, MeasurementRow
from runbooks.errors import InvalidRequestError, RunbookError
from runbooks.kit import Timeline
from tasks.health import check_health
from tasks.kubernetes import ServiceState
from tasks.load import RequestLoad
from tasks.prometheus import query_prometheus


def measure(
    spec: AnalysisSpec,
    url: str,
    prometheus: HttpService | None,
    params: BlueGreenParams,
    colour: Colour,
) -> Measurement:
    """One measurement of ``colour``: its health through ``url`` and, with Prometheus, its
    success rate and p95 latency (``None`` = no data)."""
    at = datetime.now(UTC)
    health = check_health(HttpService(base_url=url, health_path=spec.health_path))
    rate = p95 = None
    error = None
    if prometheus is not None:
        rate_q, p95_q = spec.queries(
            namespace=params.namespace, service=params.service, colour=colour.value
        )
        try:
            if spec.success_rate_min is not None:
                rate = query_prometheus(prometheus, rate_q)
            if spec.p95_latency_max_ms is not None:
                p95 = query_prometheus(prometheus, p95_q)
        except RunbookError as exc:
            error = str(exc)
    return Measurement(at=at, health_ok=health.ok, success_rate=rate, p95_ms=p95, error=error)


def analyse(
    *,
    step_key: str,
    spec: AnalysisSpec,
    url: str,
    colour: Colour,
    params: BlueGreenParams,
    prometheus: HttpService | None,
    timeline: Timeline,
    record: Callable[[MeasurementRow], None],
    on_failure: Callable[[], None],
) -> None:
    """Measure every interval until the analysis decides; raise :class:`AnalysisFailed` unless
    it passed. ``record`` gets every measurement; ``on_failure`` is called at the first failing
    check (it starts the rollback clock)."""
    analysis = AnalysisRun(spec=spec)
    load = (
        RequestLoad(url, path=spec.synthetic_load_path, rps=spec.synthetic_load_rps)
        if spec.synthetic_load_rps > 0
        else None
    )

    def judged(measurement: Measurement) -> None:
        nonlocal analysis
        analysis = analysis.add(measurement)
        judgement = analysis.judgements[-1]
        record(
            MeasurementRow(
                **measurement.model_dump(),
                phase=step_key,
                colour=colour.value,
                verdict=judgement.verdict.value,
                reason=judgement.reason,
            )
        )
        if judgement.verdict is Verdict.FAILED:
            on_failure()

    with load if load is not None else contextlib.nullcontext():
        _warm_up(spec, url, judged, lambda: analysis.phase is AnalysisPhase.RUNNING)
        while analysis.phase is AnalysisPhase.RUNNING:
            judged(measure(spec, url, prometheus, params, colour))
            if analysis.phase is AnalysisPhase.RUNNING:
                time.sleep(spec.interval_seconds)
    if load is not None:
        timeline.add(
            step_key,
            f"synthetic load: {load.total} request(s) to {spec.synthetic_load_path} at "
            f"{spec.synthetic_load_rps:g}/s, {load.failed} not 200",
        )
    passed = analysis.phase is AnalysisPhase.SUCCESSFUL
    timeline.add(step_key, analysis.reason, ok=passed)
    if not passed:
        on_failure()
        raise AnalysisFailed(
            f"{step_key} of {colour.value} ended {analysis.phase.value}: {analysis.reason}",
            target=params.target,
        )


def service_url(state: ServiceState) -> str:
    """Where the runbook reaches a Service: its first nodePort on loopback (the sandbox's
    proxy; a real cluster's runner sits where node ports are reachable)."""
    node_port = state.ports[0].node_port if state.ports else None
    if not node_port:
        raise InvalidRequestError(
            f"Service {state.namespace}/{state.name} has no nodePort to reach it on"
        )
    return f"http://127.0.0.1:{node_port}"


def _warm_up(
    spec: AnalysisSpec,
    url: str,
    judged: Callable[[Measurement], None],
    running: Callable[[], bool],
) -> None:
    """Wait ``initial_delay_seconds`` for the query window to fill, checking health meanwhile.

    Why check during the warm-up: the metrics need it, a dead version does not. A failing
    health check is judged as a measurement (a failure, counted against ``failure_limit``), so
    a broken version is rolled back at once instead of after the delay; a passing one is not a
    measurement (without metrics yet it would be "no data") and is not recorded.
    """
    deadline = time.monotonic() + spec.initial_delay_seconds
    probe = HttpService(base_url=url, health_path=spec.health_path)
    while running() and time.monotonic() < deadline:
        if not check_health(probe).ok:
            judged(Measurement(at=datetime.now(UTC), health_ok=False))
        time.sleep(min(spec.interval_seconds, max(0.0, deadline - time.monotonic())))


def wait_routed(url: str, deadline_seconds: float) -> None:
    """Wait until a new Service routes to a ready pod (proxies and endpoints lag its creation)."""
    deadline = time.monotonic() + deadline_seconds
    probe = HttpService(base_url=url, health_path="/ready")
    while not check_health(probe).ok:
        if time.monotonic() >= deadline:
            raise InvalidRequestError(
                f"the Service at {url} did not route to a ready pod within {deadline_seconds:g}s"
            )
        time.sleep(0.2)
