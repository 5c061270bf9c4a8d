"""Analysis verdicts in the manner of Argo Rollouts, without its "no data is success" bug.

An analysis takes a :class:`Measurement` every ``interval_seconds`` (a health check of the
colour under test plus two Prometheus queries) and judges each one (:func:`judge`):

- ``failed``: the health check failed, or a value breaks its threshold (``+Inf`` p95 included:
  slower than the largest histogram bucket is slow);
- ``error``: a query could not be run (after the resilience layer's retries) or returned a value
  that cannot be a ratio / a latency (a query override returning percents, say);
- ``inconclusive``: no data. Prometheus answering an empty vector (``None``) or ``NaN`` (``0/0``:
  no requests in the window) is *no data*, never success: the bug most reported against Argo
  Rollouts and Flagger, where an empty result compared as "within threshold";
- ``successful``: health ok and every checked value within its threshold.

:class:`AnalysisRun` folds the verdicts into a phase, like Argo's AnalysisRun:

- ``failed`` as soon as ``failed > failure_limit``, or ``consecutive errors >
  consecutive_error_limit`` (default 4, Argo's); the run stops there, so a broken version is
  rolled back after the first failing check when ``failure_limit`` is 0;
- ``inconclusive`` as soon as ``inconclusive > inconclusive_limit`` (the flow does not promote
  on it; Argo pauses for a human);
- ``successful`` only after ``count`` judged (non-error) measurements, with at least one
  successful among them. Success is never early: the bake time is the point.

One deliberate difference from Argo: an ``error`` does not use up ``count`` (Argo counts it as
a measurement, so ``count=5`` with four errors and one success passes: errors counted as
success). Here errors are extra attempts, bounded by ``consecutive_error_limit``: a run takes
at most ``count * (consecutive_error_limit + 1) + consecutive_error_limit`` measurements.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

PLACEHOLDERS = ("namespace", "service", "colour", "window")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")

# Business traffic only: probes, scrapes and the sandbox's control routes are not what users see.
_TRAFFIC = (
    'namespace="{namespace}",app="{service}",label_colour="{colour}",'
    'route!~"/health|/ready|/metrics|/_sandbox/.*"'
)
DEFAULT_SUCCESS_RATE_QUERY = (
    f'sum(rate(shop_requests_total{{{_TRAFFIC},status!~"5.."}}[{{window}}]))'
    f" / sum(rate(shop_requests_total{{{_TRAFFIC}}}[{{window}}]))"
)
"""Share of non-5xx answers of one colour's pods (labels from the sandbox's Prometheus
file_sd: ``app`` and ``label_colour`` are the pod's labels). ``NaN`` without traffic."""

DEFAULT_P95_QUERY = (
    "1000 * histogram_quantile(0.95, sum by (le) "
    f"(rate(shop_request_duration_seconds_bucket{{{_TRAFFIC}}}[{{window}}])))"
)
"""p95 latency of one colour's business requests, in milliseconds."""


def render_query(template: str, *, namespace: str, service: str, colour: str, window: str) -> str:
    """``template`` with its ``{namespace}``, ``{service}``, ``{colour}``, ``{window}`` filled.

    Plain token replacement rather than ``str.format``: PromQL's own braces (label matchers)
    stay as written, so an override reads like the PromQL one would type.
    """
    values = {"namespace": namespace, "service": service, "colour": colour, "window": window}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class AnalysisSpec(BaseModel):
    """One analysis (pre-promotion through the preview Service, or post-promotion bake)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    health_path: str = Field("/health", description="HTTP path checked on the colour under test.")
    interval_seconds: float = Field(
        5.0, gt=0, le=3600, description="Seconds between two measurements."
    )
    count: int = Field(6, ge=1, le=1000, description="Measurements to judge before success.")
    failure_limit: int = Field(
        0, ge=0, le=1000, description="Failed measurements tolerated; one more fails the run."
    )
    inconclusive_limit: int = Field(
        0, ge=0, le=1000, description="No-data measurements tolerated; one more stops the run."
    )
    consecutive_error_limit: int = Field(
        4, ge=0, le=100, description="Query errors in a row tolerated; one more fails the run."
    )
    success_rate_min: float | None = Field(
        0.99, ge=0, le=1, description="Lowest share of non-5xx answers (0..1); empty: unchecked."
    )
    p95_latency_max_ms: float | None = Field(
        1000.0, gt=0, description="Highest p95 latency in milliseconds; empty: unchecked."
    )
    window: str = Field("30s", description="PromQL range of the queries, e.g. 30s or 1m.")
    success_rate_query: str = Field(
        DEFAULT_SUCCESS_RATE_QUERY,
        description="PromQL giving a ratio 0..1; {namespace} {service} {colour} {window}.",
    )
    p95_latency_query: str = Field(
        DEFAULT_P95_QUERY,
        description="PromQL giving milliseconds; {namespace} {service} {colour} {window}.",
    )
    synthetic_load_rps: float = Field(
        0.0, ge=0, le=1000, description="Requests per second sent to the colour; 0 = off."
    )
    synthetic_load_path: str = Field(
        "/", description="Business path the synthetic load requests (not a probe path)."
    )
    initial_delay_seconds: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Seconds between the start (and its synthetic load) and the first "
        "measurement, so the query window holds data; Argo's initialDelay.",
    )

    @field_validator("health_path", "synthetic_load_path")
    @classmethod
    def _path_shape(cls, value: str, info: ValidationInfo) -> str:
        if not _PATH.match(value):
            raise ValueError(
                f"{info.field_name} must be an absolute path like /health, got {value!r}"
            )
        return value

    @field_validator("window")
    @classmethod
    def _window_shape(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError(f"window must be a Prometheus duration like 30s or 1m, got {value!r}")
        return value

    @field_validator("success_rate_query", "p95_latency_query")
    @classmethod
    def _template_placeholders(cls, value: str) -> str:
        unknown = sorted({n for n in _PLACEHOLDER.findall(value) if n not in PLACEHOLDERS})
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {unknown}; use {{namespace}} {{service}} {{colour}} "
                "{window}"
            )
        if "{colour}" not in value:
            # Without it the query mixes both colours: the idle colour's preview traffic drowns
            # in the active colour's production traffic and a broken version passes.
            raise ValueError("the query must select one colour with {colour}")
        if not value.strip():
            raise ValueError("the query must not be empty")
        return value

    def queries(self, *, namespace: str, service: str, colour: str) -> tuple[str, str]:
        """(success rate, p95) PromQL for one colour."""
        fill = {"namespace": namespace, "service": service, "colour": colour, "window": self.window}
        return render_query(self.success_rate_query, **fill), render_query(
            self.p95_latency_query, **fill
        )

    @property
    def max_measurements(self) -> int:
        """The most measurements a run can take (errors do not use up ``count``)."""
        limit = self.consecutive_error_limit
        return self.count * (limit + 1) + limit


class Verdict(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


class AnalysisPhase(StrEnum):
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


class Measurement(BaseModel):
    """What one check saw. ``None`` is "no value": not measured, or Prometheus had no data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime = Field(description="When the measurement was taken.")
    health_ok: bool | None = Field(None, description="Health check passed; None: not checked.")
    success_rate: float | None = Field(None, description="Non-5xx share 0..1; None: no data.")
    p95_ms: float | None = Field(None, description="p95 latency in ms; None: no data.")
    error: str | None = Field(None, description="Why a query could not be run, if it failed.")


class Judgement(BaseModel):
    """The verdict on one measurement and the sentence saying why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    measurement: Measurement
    verdict: Verdict
    reason: str


def _no_data(value: float | None) -> bool:
    return value is None or math.isnan(value)


def judge(measurement: Measurement, spec: AnalysisSpec) -> Judgement:
    """The verdict on one measurement against ``spec``'s thresholds (see the module docstring)."""
    m = measurement

    def verdict(v: Verdict, reason: str) -> Judgement:
        return Judgement(measurement=m, verdict=v, reason=reason)

    rate, p95 = m.success_rate, m.p95_ms
    if m.health_ok is False:
        return verdict(Verdict.FAILED, f"health check {spec.health_path} failed")
    check_rate = spec.success_rate_min is not None
    check_p95 = spec.p95_latency_max_ms is not None
    if check_rate and not _no_data(rate) and not 0 <= rate <= 1:  # type: ignore[operator]
        return verdict(Verdict.ERROR, f"success rate {rate} is not a ratio 0..1: check the query")
    if check_p95 and not _no_data(p95) and p95 < 0:  # type: ignore[operator]
        return verdict(Verdict.ERROR, f"p95 latency {p95} ms is negative: check the query")
    if check_rate and not _no_data(rate) and rate < spec.success_rate_min:  # type: ignore[operator]
        return verdict(
            Verdict.FAILED, f"success rate {rate:.4f} is below {spec.success_rate_min:.4f}"
        )
    if check_p95 and not _no_data(p95) and p95 > spec.p95_latency_max_ms:  # type: ignore[operator]
        return verdict(
            Verdict.FAILED, f"p95 latency {p95:.0f} ms is above {spec.p95_latency_max_ms:.0f} ms"
        )
    if m.error is not None:
        return verdict(Verdict.ERROR, f"measurement error: {m.error}")
    missing = [
        name
        for name, absent in (
            ("health check", m.health_ok is None),
            ("success rate", check_rate and _no_data(rate)),
            ("p95 latency", check_p95 and _no_data(p95)),
        )
        if absent
    ]
    if missing:
        return verdict(Verdict.INCONCLUSIVE, f"no data for {', '.join(missing)}")
    return verdict(Verdict.SUCCESSFUL, "health ok and every value within its threshold")


class AnalysisRun(BaseModel):
    """An analysis in progress: immutable; :meth:`add` returns the next state.

    Loop: ``run = AnalysisRun(spec=spec)``; while ``run.phase is RUNNING``: measure,
    ``run = run.add(measurement)``, wait ``interval_seconds``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: AnalysisSpec
    judgements: tuple[Judgement, ...] = ()

    def _count(self, verdict: Verdict) -> int:
        return sum(j.verdict is verdict for j in self.judgements)

    @property
    def successful(self) -> int:
        return self._count(Verdict.SUCCESSFUL)

    @property
    def failed(self) -> int:
        return self._count(Verdict.FAILED)

    @property
    def inconclusive(self) -> int:
        return self._count(Verdict.INCONCLUSIVE)

    @property
    def errors(self) -> int:
        return self._count(Verdict.ERROR)

    @property
    def consecutive_errors(self) -> int:
        n = 0
        for j in reversed(self.judgements):
            if j.verdict is not Verdict.ERROR:
                break
            n += 1
        return n

    @property
    def judged(self) -> int:
        """Measurements that count towards ``count`` (all but errors)."""
        return len(self.judgements) - self.errors

    @property
    def remaining(self) -> int:
        """Judged measurements still needed for success (0 once the run is over)."""
        return 0 if self.phase is not AnalysisPhase.RUNNING else self.spec.count - self.judged

    @property
    def phase(self) -> AnalysisPhase:
        return self._outcome()[0]

    @property
    def reason(self) -> str:
        return self._outcome()[1]

    def _outcome(self) -> tuple[AnalysisPhase, str]:
        spec = self.spec
        last = self.judgements[-1].reason if self.judgements else ""
        if self.failed > spec.failure_limit:
            return AnalysisPhase.FAILED, (
                f"{self.failed} failed measurement(s), more than the failure limit "
                f"{spec.failure_limit}; last: {last}"
            )
        if self.consecutive_errors > spec.consecutive_error_limit:
            return AnalysisPhase.FAILED, (
                f"{self.consecutive_errors} errors in a row, more than the consecutive error "
                f"limit {spec.consecutive_error_limit}; last: {last}"
            )
        if self.inconclusive > spec.inconclusive_limit:
            return AnalysisPhase.INCONCLUSIVE, (
                f"{self.inconclusive} inconclusive measurement(s), more than the inconclusive "
                f"limit {spec.inconclusive_limit}; last: {last}"
            )
        if self.judged >= spec.count:
            if self.successful == 0:
                return AnalysisPhase.INCONCLUSIVE, (
                    f"{self.judged} measurement(s) and none successful"
                )
            return AnalysisPhase.SUCCESSFUL, (
                f"{self.successful} of {self.judged} measurement(s) successful "
                f"({self.failed} failed, {self.inconclusive} inconclusive, {self.errors} errors)"
            )
        return AnalysisPhase.RUNNING, (
            f"{self.judged} of {spec.count} measurement(s) judged"
            + (f"; last: {last}" if last else "")
        )

    def add(self, measurement: Measurement) -> AnalysisRun:
        """The run after ``measurement``; ``ValueError`` once the run is over."""
        if self.phase is not AnalysisPhase.RUNNING:
            raise ValueError(f"the analysis is over ({self.phase.value}): {self.reason}")
        judgement = judge(measurement, self.spec)
        return self.model_copy(update={"judgements": (*self.judgements, judgement)})


def evaluate_analysis(spec: AnalysisSpec, measurements: list[Measurement]) -> AnalysisRun:
    """Fold ``measurements`` into a run, stopping at the first decisive one (later ones are
    ignored: the flow would not have taken them)."""
    run = AnalysisRun(spec=spec)
    for measurement in measurements:
        if run.phase is not AnalysisPhase.RUNNING:
            break
        run = run.add(measurement)
    return run
