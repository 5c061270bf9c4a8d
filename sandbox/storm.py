"""The retry-storm drill: a fleet of clients against a backend that goes down, then heals.

One :func:`run_drill` runs two client configurations, one after the other, each against a fresh
:class:`~sandbox.outage.OutageServer`, with the same offered load and the same phases
(warm-up healthy, outage answering 503 to everything, recovery healed):

- **naive**: the recipe card's ``exponential_backoff_retry`` loop as written (``2**attempt``
  base, ``+ uniform(0, 10 %)`` jitter, ``min(..., 60)`` cap, 5 attempts, no budget, no
  breaker) around a plain ``httpx.Client`` (``HTTPTransport(retries=0)``), retrying any failure
  (5xx via ``raise_for_status`` or a transport error);
- **ours**: an ``httpx.Client`` on :class:`~runbooks.resilience.ResilientTransport` with the
  default :class:`~runbooks.resilience.ResiliencePolicy` (3 attempts, full jitter, retry budget
  10 % with a floor of 3 per window, Resilience4j-like breaker), changed only by time scaling.

Why time is scaled, and how. In real seconds the naive loop sleeps 1 + 2 + 4 + 8 s per failed
request, so a meaningful outage would take minutes. Every duration in :class:`DrillSettings`
is in *modelled* seconds (the incident being simulated), and ``time_scale`` compresses all of
them by one factor: the drill's phases and request interval, the naive loop's delays (base
1 s -> 20 ms and cap 60 s -> 1.2 s at 0.02), and every ``*_seconds`` field of our policy
(backoff base / cap / total, budget window, breaker window / open wait / slow-call threshold).
Counts (attempts, budget floor, minimum calls, probes) are not times and stay as they are, so
both configurations see the same incident, only faster. What cannot be scaled is the machine:
a loopback round trip (~1-2 ms) is ~50-100 modelled ms at 0.02; the per-attempt HTTP timeout is
a wall-clock safety bound (the backend answers at once, so it never fires).

Why the fleet shares one layer: the threads model the workers of one client process, and the
layer is one per process by design (its budget and breaker are shared by every thread calling a
target), which is also how the budget's "10 % per client" is meant (Google SRE).

Offered load: each client thread starts a logical request every ``interval_seconds`` at a
seeded random phase (identical for both configurations); the next one starts at its scheduled
time, or right after the previous one finishes if that is later (no catch-up burst). With the
defaults the naive loop's whole retry chain (~15.5 modelled s) fits in one interval, so neither
configuration falls behind and both start the same logical requests.

Measured per configuration, from the backend's own counters where the backend can know:
backend requests during the outage (its failure counter: every request fails during the
outage and none outside it), logical requests started during the outage (the client threads'
log; a call our breaker refuses never reaches the backend), amplification, backend load, and
recovery (from the heal until every client had a successful logical request that *started*
after the heal). The run is not deterministic (threads, the machine); the seed fixes the
schedule and the naive jitter only (our layer draws its jitter from ``random``).

Where our figures hold (measured, default pace of one request per 20 s per client): with 16
clients the breaker does most of the work (amplification ~0.3); with 2 clients ~1.2; a lone
client gets 3x (every request spends its 3 attempts), because the budget's floor (3 retries
per 10 s window) and the breaker's ``minimum_calls`` (10 per 30 s window) are sized for busier
processes. The budget alone (breaker disabled) gives 1 + max(10 %, floor / requests per window):
~1.37 at 16 clients, 1.1 from about 3 requests/s per process.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from decisions.breaker import BreakerState, Transition
from runbooks.errors import RunbookError
from runbooks.resilience import Resilience, ResiliencePolicy, ResilientTransport
from runbooks.resilience import engine as _engine
from sandbox.outage import OutageServer

T = TypeVar("T")
Config = Literal["naive", "ours"]
TARGET = "backend"


class DrillSettings(BaseModel):
    """The incident to simulate; durations in modelled seconds (wall = modelled x time_scale)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clients: int = Field(16, ge=1, le=64, description="Client threads (workers of one process).")
    interval_seconds: float = Field(
        20.0, gt=0, description="Each client starts a logical request this often."
    )
    warmup_seconds: float = Field(20.0, ge=0, description="Healthy phase before the outage.")
    outage_seconds: float = Field(300.0, gt=0, description="The backend answers 503 this long.")
    recovery_seconds: float = Field(
        120.0, gt=0, description="Longest wait after the heal for every client to recover."
    )
    time_scale: float = Field(0.02, gt=0, le=1, description="Wall seconds per modelled second.")
    seed: int = Field(0, description="Fixes client phases and the naive loop's jitter.")
    budget_percent: float = Field(10.0, ge=0, le=100, description="Our retry budget.")
    timeout_seconds: float = Field(
        2.0, gt=0, description="Per-attempt HTTP timeout, wall seconds (a safety bound only)."
    )
    max_logical_requests: int = Field(
        50_000, ge=1, description="Cap on logical requests per configuration."
    )
    max_wall_seconds: float = Field(
        60.0, gt=0, description="Refuse settings whose one configuration would run longer."
    )
    max_offered_per_wall_second: float = Field(
        400.0, gt=0, description="Refuse a fleet offering more logical requests per wall second."
    )

    @model_validator(mode="after")
    def _bounded(self) -> DrillSettings:
        planned = self.wall(self.warmup_seconds + self.outage_seconds + self.recovery_seconds)
        if planned > self.max_wall_seconds:
            raise ValueError(
                f"one configuration would run {planned:.1f} wall seconds, over "
                f"max_wall_seconds ({self.max_wall_seconds}); lower outage_seconds or time_scale"
            )
        offered = self.clients / self.wall(self.interval_seconds)
        if offered > self.max_offered_per_wall_second:
            raise ValueError(
                f"clients / interval_seconds offers {offered:.0f} logical requests per wall "
                f"second, over max_offered_per_wall_second ({self.max_offered_per_wall_second})"
            )
        return self

    def wall(self, modelled_seconds: float) -> float:
        return modelled_seconds * self.time_scale


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """What one configuration did to the backend; seconds are modelled unless named wall."""

    name: Config
    logical_requests_outage: int
    backend_requests_outage: int
    amplification: float
    backend_requests_per_second: float
    backend_requests_per_wall_second: float
    recovery_seconds: float | None  # None: some client had not recovered at the deadline
    recovery_wall_seconds: float | None
    clients_recovered: int
    logical_requests_total: int
    backend_requests_total: int
    outage_wall_seconds: float
    # from our layer's own counters during the outage (None for the naive loop, which has none);
    # "granted" = passed backoff and budget: the layer counts it before the breaker's verdict on
    # it, so a retry the breaker then refuses is counted here and in breaker_rejections_outage
    retries_sent_outage: int | None = None
    retries_refused_outage: int | None = None
    breaker_rejections_outage: int | None = None
    breaker_openings: int | None = None


@dataclass(frozen=True, slots=True)
class DrillReport:
    settings: DrillSettings
    naive: ConfigResult
    ours: ConfigResult
    wall_seconds: float

    @property
    def load_reduction(self) -> float:
        """1 - ours / naive backend requests during the outage (same load, same duration)."""
        naive = self.naive.backend_requests_outage
        return 1.0 - self.ours.backend_requests_outage / naive if naive else 0.0

    def figures(self) -> dict[str, Any]:
        """Flat snake_case figures whose names carry their unit (the benchmark's JSON)."""
        s = self.settings
        out: dict[str, Any] = {
            "clients": s.clients,
            "interval_seconds": s.interval_seconds,
            "outage_seconds": s.outage_seconds,
            "time_scale": s.time_scale,
            "seed": s.seed,
            "budget_percent": s.budget_percent,
            "offered_logical_requests_outage": round(
                s.clients * s.outage_seconds / s.interval_seconds
            ),
            "load_reduction_percent": round(100.0 * self.load_reduction, 1),
            "wall_seconds": round(self.wall_seconds, 2),
        }
        for result in (self.naive, self.ours):
            n = result.name
            out |= {
                f"logical_requests_outage_{n}": result.logical_requests_outage,
                f"backend_requests_outage_{n}": result.backend_requests_outage,
                f"amplification_{n}": round(result.amplification, 3),
                f"backend_requests_per_second_{n}": round(result.backend_requests_per_second, 3),
                f"backend_requests_per_wall_second_{n}": round(
                    result.backend_requests_per_wall_second, 1
                ),
                f"recovery_seconds_{n}": _round(result.recovery_seconds, 1),
                f"recovery_wall_seconds_{n}": _round(result.recovery_wall_seconds, 3),
                f"clients_recovered_{n}": result.clients_recovered,
                f"outage_wall_seconds_{n}": round(result.outage_wall_seconds, 3),
            }
        o = self.ours
        out |= {
            "retries_sent_outage_ours": o.retries_sent_outage,
            "retries_refused_outage_ours": o.retries_refused_outage,
            "breaker_rejections_outage_ours": o.breaker_rejections_outage,
            "breaker_openings_ours": o.breaker_openings,
        }
        return out


def scaled_policy(time_scale: float, budget_percent: float = 10.0) -> ResiliencePolicy:
    """The default policy with every ``*_seconds`` field multiplied by ``time_scale``.

    Only times change (and the budget percentage, 10 % by default like the policy's own), so
    the policy under test is the one the project ships, on a compressed clock.
    """
    default = ResiliencePolicy()

    def scale(model: BaseModel, **extra: float) -> dict[str, Any]:
        values = model.model_dump()
        return {
            k: (v * time_scale if k.endswith("_seconds") else v) for k, v in values.items()
        } | extra

    return ResiliencePolicy(
        backoff=type(default.backoff)(**scale(default.backoff)),
        budget=type(default.budget)(**scale(default.budget, budget_percent=budget_percent)),
        breaker=type(default.breaker)(**scale(default.breaker)),
    )


def exponential_backoff_retry(
    func: Callable[[], T],
    max_retries: int = 5,
    *,
    time_scale: float = 1.0,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """The recipe card's loop, line for line; ``time_scale`` multiplies the final delay, and
    ``rng``/``sleep`` are seams for the drill (defaults: the ``random`` module, ``time.sleep``).
    It is the baseline, flaws included (10 % jitter, no budget, no breaker): do not use it."""
    uniform = (rng or random).uniform
    for attempt in range(max_retries):
        try:
            return func()
        except Exception:
            if attempt == max_retries - 1:
                raise

            # Exponential backoff with jitter
            base_delay = 2**attempt
            jitter = uniform(0, base_delay * 0.1)
            delay = min(base_delay + jitter, 60)  # Cap at 60s

            sleep(delay * time_scale)
    raise AssertionError("unreachable: the last attempt returns or raises")


def run_drill(settings: DrillSettings | None = None) -> DrillReport:
    """Run the naive loop, then our layer, through the same outage; servers and threads are
    always stopped and joined, even on error."""
    settings = settings or DrillSettings()
    if _engine._testing is not None:  # the only switch there is; see runbooks.resilience.testing
        raise RuntimeError(
            "the resilience layer's waits are off (runbooks.resilience.testing() is active); "
            "the storm drill needs real waits"
        )
    began = time.monotonic()
    phases = random.Random(settings.seed).uniform
    offsets = [settings.wall(phases(0, settings.interval_seconds)) for _ in range(settings.clients)]
    naive = _run_config("naive", settings, offsets)
    ours = _run_config("ours", settings, offsets)
    return DrillReport(settings, naive, ours, time.monotonic() - began)


# -- one configuration ------------------------------------------------------------------------


@dataclass(slots=True)
class _Logical:
    started: float
    finished: float
    ok: bool


@dataclass(slots=True)
class _Fleet:
    """Per-thread logs (each written by one thread only) and the first error of any thread."""

    logs: list[list[_Logical]]
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def recovered_at(self, healed: float) -> list[float | None]:
        """Per client: end of its first successful logical request started after ``healed``."""
        firsts: list[float | None] = []
        for log in self.logs:
            done = next((r.finished for r in list(log) if r.ok and r.started >= healed), None)
            firsts.append(done)
        return firsts


def _run_config(name: Config, settings: DrillSettings, offsets: list[float]) -> ConfigResult:
    limits = httpx.Limits(
        max_connections=settings.clients, max_keepalive_connections=settings.clients
    )
    transport = httpx.HTTPTransport(retries=0, limits=limits)
    layer: Resilience | None = None
    openings = [0]
    if name == "ours":

        def opened(transition: Transition) -> None:
            openings[0] += transition.to_state is BreakerState.OPEN

        layer = Resilience(
            scaled_policy(settings.time_scale, settings.budget_percent), on_transition=opened
        )
        transport = ResilientTransport(TARGET, resilience=layer, transport=transport)
    fleet = _Fleet([[] for _ in range(settings.clients)])
    per_thread_cap = max(1, settings.max_logical_requests // settings.clients)
    clock = time.monotonic

    with (
        OutageServer() as backend,
        httpx.Client(
            base_url=backend.url, transport=transport, timeout=settings.timeout_seconds
        ) as client,
    ):
        call = _naive_call(client, settings) if name == "naive" else _ours_call(client)
        start = clock() + 0.05  # let every thread reach its first wait
        threads = [
            threading.Thread(
                target=_client_thread,
                args=(call, start + offsets[i], settings, fleet, fleet.logs[i], per_thread_cap),
                name=f"storm-{name}-{i}",
                daemon=True,
            )
            for i in range(settings.clients)
        ]
        try:
            for thread in threads:
                thread.start()
            _wait_until(fleet, start + settings.wall(settings.warmup_seconds))
            before = _layer_counts(layer)
            backend.fail(503)
            failed_at = clock()
            _wait_until(fleet, failed_at + settings.wall(settings.outage_seconds))
            during = _layer_counts(layer)
            backend.heal()
            healed_at = clock()
            deadline = healed_at + settings.wall(settings.recovery_seconds)
            while clock() < deadline and None in fleet.recovered_at(healed_at):
                if fleet.stop.wait(min(0.01, max(0.0, deadline - clock()))):
                    break
        finally:
            fleet.stop.set()
            for thread in threads:
                thread.join(timeout=5 * settings.timeout_seconds + 5)
        if fleet.errors:
            raise RuntimeError(f"a {name} client thread failed") from fleet.errors[0]
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            raise RuntimeError(f"client threads did not stop: {stuck}")
        backend_total, backend_outage = backend.counts()

    outage_wall = healed_at - failed_at
    logical_outage = sum(failed_at <= r.started < healed_at for log in fleet.logs for r in log)
    recovered = [t - healed_at for t in fleet.recovered_at(healed_at) if t is not None]
    everyone = len(recovered) == settings.clients
    recovery_wall = max(recovered, default=0.0) if everyone else None
    delta = {k: during[k] - before[k] for k in during}
    return ConfigResult(
        name=name,
        logical_requests_outage=logical_outage,
        backend_requests_outage=backend_outage,
        amplification=backend_outage / logical_outage if logical_outage else 0.0,
        backend_requests_per_second=backend_outage / (outage_wall / settings.time_scale),
        backend_requests_per_wall_second=backend_outage / outage_wall,
        recovery_seconds=None if recovery_wall is None else recovery_wall / settings.time_scale,
        recovery_wall_seconds=recovery_wall,
        clients_recovered=len(recovered),
        logical_requests_total=sum(len(log) for log in fleet.logs),
        backend_requests_total=backend_total,
        outage_wall_seconds=outage_wall,
        retries_sent_outage=delta.get("retries"),
        retries_refused_outage=delta.get("retries_refused"),
        breaker_rejections_outage=delta.get("breaker_rejections"),
        breaker_openings=openings[0] if layer is not None else None,
    )


def _naive_call(client: httpx.Client, settings: DrillSettings) -> Callable[[], bool]:
    jitter = random.Random(settings.seed + 1)

    def attempt() -> httpx.Response:
        return client.get("/work").raise_for_status()

    def call() -> bool:
        try:
            exponential_backoff_retry(attempt, time_scale=settings.time_scale, rng=jitter)
        except httpx.HTTPError:
            return False
        return True

    return call


def _ours_call(client: httpx.Client) -> Callable[[], bool]:
    def call() -> bool:
        try:
            return client.get("/work").status_code < 400
        except (httpx.HTTPError, RunbookError):  # RunbookError: CircuitOpenError, no call made
            return False

    return call


def _client_thread(
    call: Callable[[], bool],
    first: float,
    settings: DrillSettings,
    fleet: _Fleet,
    log: list[_Logical],
    cap: int,
) -> None:
    """Start a logical request at ``first``, then every interval, or right after the previous
    one if it ran late; record each; stop on ``fleet.stop`` or after ``cap`` requests."""
    interval = settings.wall(settings.interval_seconds)
    scheduled = first
    try:
        while len(log) < cap:
            if fleet.stop.wait(max(0.0, scheduled - time.monotonic())):
                return
            started = time.monotonic()
            ok = call()
            finished = time.monotonic()
            log.append(_Logical(started, finished, ok))
            scheduled = max(scheduled + interval, finished)
    except BaseException as exc:  # surfaced by the main thread after join
        fleet.errors.append(exc)
        fleet.stop.set()


def _wait_until(fleet: _Fleet, when: float) -> None:
    """Sleep until ``when``; give up at once if a client thread failed."""
    if fleet.stop.wait(max(0.0, when - time.monotonic())):
        raise RuntimeError("a client thread failed") from (fleet.errors or [None])[0]


_SAMPLES = {
    "retries": "runbooks_client_retries_total",
    "retries_refused": "runbooks_client_retries_refused_total",
    "breaker_rejections": "runbooks_client_breaker_rejections_total",
}


def _layer_counts(layer: Resilience | None) -> dict[str, int]:
    if layer is None:
        return {}
    registry = layer.metrics.registry
    return {
        key: int(registry.get_sample_value(sample, {"target": TARGET}) or 0)
        for key, sample in _SAMPLES.items()
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def format_table(report: DrillReport) -> str:
    """The readable report: one row per configuration, then the ratio line."""
    s = report.settings
    header = (
        f"retry storm: {s.clients} clients, a request every {s.interval_seconds:g} s each, "
        f"{s.outage_seconds:g} s outage (503), time scale {s.time_scale:g} "
        f"(modelled seconds; wall = x {s.time_scale:g})"
    )
    columns = (
        "config",
        "logical in outage",
        "backend in outage",
        "amplification",
        "backend req/s",
        "recovery s",
        "refused retries",
        "breaker rejections",
    )
    rows = [columns]
    for r in (report.naive, report.ours):
        rows.append(
            (
                r.name,
                str(r.logical_requests_outage),
                str(r.backend_requests_outage),
                f"{r.amplification:.2f}",
                f"{r.backend_requests_per_second:.2f}",
                "not recovered" if r.recovery_seconds is None else f"{r.recovery_seconds:.1f}",
                "-" if r.retries_refused_outage is None else str(r.retries_refused_outage),
                "-" if r.breaker_rejections_outage is None else str(r.breaker_rejections_outage),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [header, ""]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines += [
        "",
        f"backend load reduction vs naive: {100 * report.load_reduction:.1f} %",
        f"(ours: {report.ours.retries_sent_outage} retries sent in the outage, "
        f"breaker opened {report.ours.breaker_openings} times; "
        f"drill took {report.wall_seconds:.1f} wall s)",
    ]
    return "\n".join(lines)
