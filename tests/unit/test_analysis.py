"""Analysis verdicts: no data is inconclusive (never success), early termination on failure,
errors bounded by the consecutive error limit and never counted as success."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from decisions.analysis import (
    DEFAULT_P95_QUERY,
    DEFAULT_SUCCESS_RATE_QUERY,
    AnalysisPhase,
    AnalysisRun,
    AnalysisSpec,
    Measurement,
    Verdict,
    evaluate_analysis,
    judge,
    render_query,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SPEC = AnalysisSpec(count=3, success_rate_min=0.99, p95_latency_max_ms=500)


def m(
    health: bool | None = True,
    rate: float | None = 1.0,
    p95: float | None = 100.0,
    error: str | None = None,
    i: int = 0,
) -> Measurement:
    return Measurement(
        at=T0 + timedelta(seconds=5 * i),
        health_ok=health,
        success_rate=rate,
        p95_ms=p95,
        error=error,
    )


OK, FAIL, NODATA, ERR = m(), m(health=False), m(rate=None), m(rate=None, p95=None, error="timeout")


@pytest.mark.parametrize(
    ("measurement", "verdict", "reason"),
    [
        (m(), Verdict.SUCCESSFUL, "within"),
        (m(rate=0.99, p95=500), Verdict.SUCCESSFUL, "within"),
        (m(health=False), Verdict.FAILED, "health check /health failed"),
        (m(health=False, error="timeout"), Verdict.FAILED, "health"),
        (m(rate=0.5), Verdict.FAILED, "below"),
        (m(p95=501), Verdict.FAILED, "above"),
        (m(p95=math.inf), Verdict.FAILED, "above"),
        (m(rate=None), Verdict.INCONCLUSIVE, "no data for success rate"),
        (m(p95=None), Verdict.INCONCLUSIVE, "no data for p95"),
        (m(rate=math.nan), Verdict.INCONCLUSIVE, "no data"),  # 0/0: no requests in the window
        (m(health=None), Verdict.INCONCLUSIVE, "health check"),
        (m(rate=None, p95=None, error="503 from Prometheus"), Verdict.ERROR, "503"),
        (m(rate=99.5), Verdict.ERROR, "not a ratio"),
        (m(p95=-1), Verdict.ERROR, "negative"),
        (m(rate=0.1, error="p95 query failed"), Verdict.FAILED, "below"),  # data is decisive
    ],
)
def test_judge(measurement: Measurement, verdict: Verdict, reason: str) -> None:
    judgement = judge(measurement, SPEC)
    assert judgement.verdict is verdict
    assert reason in judgement.reason


def test_unchecked_thresholds_need_no_data() -> None:
    spec = AnalysisSpec(success_rate_min=None, p95_latency_max_ms=None)
    assert judge(m(rate=None, p95=None), spec).verdict is Verdict.SUCCESSFUL
    assert judge(m(health=False, rate=None, p95=None), spec).verdict is Verdict.FAILED


@pytest.mark.parametrize(
    ("spec", "measurements", "phase", "taken", "reason"),
    [
        (SPEC, [OK, OK, OK], AnalysisPhase.SUCCESSFUL, 3, "3 of 3"),
        (SPEC, [OK, OK], AnalysisPhase.RUNNING, 2, "2 of 3"),
        (SPEC, [], AnalysisPhase.RUNNING, 0, "0 of 3"),
        # the first failing check ends the run at once (failure_limit 0): fast rollback
        (SPEC, [FAIL, OK, OK], AnalysisPhase.FAILED, 1, "failure limit 0"),
        (SPEC, [OK, OK, FAIL], AnalysisPhase.FAILED, 3, "health check"),
        (
            SPEC.model_copy(update={"failure_limit": 1}),
            [FAIL, OK, OK],
            AnalysisPhase.SUCCESSFUL,
            3,
            "1 failed",
        ),
        (SPEC.model_copy(update={"failure_limit": 1}), [FAIL, FAIL], AnalysisPhase.FAILED, 2, ""),
        # no data is never success
        (SPEC, [NODATA, OK, OK], AnalysisPhase.INCONCLUSIVE, 1, "inconclusive limit 0"),
        (
            SPEC.model_copy(update={"inconclusive_limit": 1}),
            [NODATA, OK, OK],
            AnalysisPhase.SUCCESSFUL,
            3,
            "1 inconclusive",
        ),
        (
            SPEC.model_copy(update={"inconclusive_limit": 3, "count": 3}),
            [NODATA] * 3,
            AnalysisPhase.INCONCLUSIVE,
            3,
            "none successful",
        ),
        # errors do not use up count, and five in a row (> 4) fail the run
        (SPEC, [ERR, OK, ERR, OK, OK], AnalysisPhase.SUCCESSFUL, 5, "2 errors"),
        (SPEC, [ERR] * 4, AnalysisPhase.RUNNING, 4, "0 of 3"),
        (SPEC, [ERR] * 5 + [OK], AnalysisPhase.FAILED, 5, "5 errors in a row"),
        (SPEC, [OK, ERR, ERR, ERR, ERR, OK, OK], AnalysisPhase.SUCCESSFUL, 7, "3 of 3"),
        (
            SPEC.model_copy(update={"consecutive_error_limit": 0}),
            [ERR],
            AnalysisPhase.FAILED,
            1,
            "consecutive error limit 0",
        ),
    ],
)
def test_analysis_run_phases(
    spec: AnalysisSpec,
    measurements: list[Measurement],
    phase: AnalysisPhase,
    taken: int,
    reason: str,
) -> None:
    run = evaluate_analysis(spec, measurements)
    assert run.phase is phase, run.reason
    assert len(run.judgements) == taken
    assert reason in run.reason


def test_incremental_run_stops_accepting_measurements_once_over() -> None:
    run = AnalysisRun(spec=SPEC).add(OK)
    assert (run.phase, run.remaining, run.successful) == (AnalysisPhase.RUNNING, 2, 1)
    run = run.add(FAIL)
    assert run.phase is AnalysisPhase.FAILED
    assert run.remaining == 0
    with pytest.raises(ValueError, match="analysis is over"):
        run.add(OK)


def test_max_measurements_bounds_a_run_full_of_alternating_errors() -> None:
    spec = AnalysisSpec(count=3, consecutive_error_limit=2)
    assert spec.max_measurements == 3 * 3 + 2
    worst = ([ERR, ERR, OK] * 3)[: spec.max_measurements]
    assert evaluate_analysis(spec, worst).phase is AnalysisPhase.SUCCESSFUL


def test_default_queries_select_one_colour_of_one_service() -> None:
    rate, p95 = AnalysisSpec().queries(namespace="shop", service="checkout", colour="green")
    for query in (rate, p95):
        assert 'namespace="shop"' in query
        assert 'app="checkout"' in query
        assert 'label_colour="green"' in query
        assert "[30s]" in query
        assert "{" + "window}" not in query
    assert 'status!~"5.."' in rate
    assert rate.startswith("sum(rate(shop_requests_total{")
    assert "histogram_quantile(0.95" in p95
    assert "shop_request_duration_seconds_bucket" in p95


def test_render_query_keeps_promql_braces() -> None:
    query = render_query(
        'up{job="{service}",c="{colour}"}[{window}]',
        namespace="n",
        service="s",
        colour="blue",
        window="1m",
    )
    assert query == 'up{job="s",c="blue"}[1m]'
    assert "{colour}" in DEFAULT_SUCCESS_RATE_QUERY
    assert "{colour}" in DEFAULT_P95_QUERY


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"count": 0}, "count"),
        ({"failure_limit": -1}, "failure_limit"),
        ({"inconclusive_limit": -1}, "inconclusive_limit"),
        ({"consecutive_error_limit": -1}, "consecutive_error_limit"),
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"success_rate_min": 1.5}, "success_rate_min"),
        ({"p95_latency_max_ms": 0}, "p95_latency_max_ms"),
        ({"synthetic_load_rps": -1}, "synthetic_load_rps"),
        ({"health_path": "health"}, "health_path"),
        ({"synthetic_load_path": "pay"}, "synthetic_load_path"),
        ({"initial_delay_seconds": -1}, "initial_delay_seconds"),
        ({"window": "30 seconds"}, "window"),
        ({"success_rate_query": "sum(up)"}, "success_rate_query"),
        ({"p95_latency_query": 'x{c="{colour}",d="{color}"}'}, "p95_latency_query"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_analysis_settings_name_the_field(update: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AnalysisSpec(**update)  # type: ignore[arg-type]


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        SPEC.count = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        OK.health_ok = False  # type: ignore[misc]
