"""Runbook ``regional-health``: probe every region's health endpoint, report, raise events.

Meant to run every minute (a deployment with ``cron: "* * * * *"``, issue 9): each run GETs
every region's health endpoint in parallel (one Prefect task per region,
:func:`tasks.health.check_health`, through the resilience layer: explicit timeouts, breaker
and budget per host; one attempt, since a probe that retries hides the failure it measures),
with a 5 s timeout by default, so a run ends within about that long.

What it reports:

- a table artifact ``regional-health-<target>``: region, ok, status, latency in ms, failing
  checks (the service's ``checks``: database, cache, dependencies) or the error;
- one event per region, ``runbooks.regional-health.healthy`` or ``.unhealthy``, whose resource
  is the region (``runbooks.target.<region>``), so an automation can act on one region (e.g.
  "unhealthy twice in 3 minutes -> run geo-routing without it") without parsing the table;
- the result: ``no_change`` when every region is healthy, ``failed`` when any is not (a probe
  that finds a failure is a completed run whose outcome says so; it does not raise).
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from blocks._common import check_http_url
from blocks.http import HttpService
from decisions.georouting import check_region_shape
from runbooks.errors import InvalidRequestError
from runbooks.kit import Outcome, RunbookResult, Timeline, emit, publish_table
from tasks.health import HealthCheck, check_health

RUNBOOK = "regional-health"


class RegionalHealthParams(BaseModel):
    """Parameters of the ``regional-health`` runbook (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    regions: dict[str, str] = Field(
        default_factory=dict,
        description="AWS region -> its health URL, e.g. https://eu-west-1.shop.example/health.",
    )
    timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Connect and read timeout of each probe."
    )

    @field_validator("regions")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        return {
            check_region_shape(region, "regions"): check_http_url(url, f"regions.{region}")
            for region, url in value.items()
        }


class RegionHealth(BaseModel):
    """One region's probe, as the table and the result show it."""

    model_config = ConfigDict(frozen=True)

    region: str
    ok: bool
    status: str = Field(description="HTTP status and the body's status, or the error kind.")
    latency_ms: float
    failing_checks: tuple[str, ...] = ()
    url: str
    error: str | None = None

    @classmethod
    def of(cls, region: str, check: HealthCheck) -> RegionHealth:
        if check.status_code is None:
            status = "unreachable"
        else:
            status = f"{check.status_code} {check.status or ''}".strip()
        return cls(
            region=region,
            ok=check.ok,
            status=status,
            latency_ms=round(check.latency_ms, 1),
            failing_checks=tuple(check.failing_checks),
            url=check.url,
            error=check.error,
        )


class RegionalHealthResult(RunbookResult):
    regions: tuple[RegionHealth, ...] = ()
    healthy: tuple[str, ...] = ()
    unhealthy: tuple[str, ...] = ()


@flow(name="regional-health", log_prints=False)
def regional_health(
    params: RegionalHealthParams, services: dict[str, HttpService] | None = None
) -> RegionalHealthResult:
    """Probe each region's health endpoint in parallel; table, events and result per region.

    ``services`` are ``HttpService`` blocks by region (for tokens, TLS settings, a saved
    block); ``params.regions`` are plain URLs. A region may be given one way only.
    """
    timeline = Timeline()
    probes = _probes(params, services or {})
    target = "regions:" + ",".join(sorted(probes))
    futures = {
        region: check_health.submit(service, url)
        for region, (service, url) in sorted(probes.items())
    }
    rows = [RegionHealth.of(region, future.result()) for region, future in futures.items()]
    for row in rows:
        timeline.add(row.region, row.error or f"{row.status} in {row.latency_ms} ms", ok=row.ok)
        payload = row.model_dump(mode="json", exclude={"region"})
        emit(RUNBOOK, "healthy" if row.ok else "unhealthy", row.region, payload=payload)
    publish_table(
        f"{RUNBOOK}-{target}",
        [
            {
                "region": row.region,
                "ok": row.ok,
                "status": row.status,
                "latency_ms": row.latency_ms,
                "failing_checks": ", ".join(row.failing_checks) or row.error or "",
            }
            for row in rows
        ],
        description=f"{RUNBOOK}: one probe per region",
    )
    unhealthy = tuple(row.region for row in rows if not row.ok)
    if unhealthy:
        said = "; ".join(
            f"{row.region} ({', '.join(row.failing_checks) or row.status})"
            for row in rows
            if not row.ok
        )
        outcome, reason = Outcome.FAILED, f"{len(unhealthy)} of {len(rows)} unhealthy: {said}"
    else:
        outcome, reason = Outcome.NO_CHANGE, f"all {len(rows)} regions healthy"
    return RegionalHealthResult.from_timeline(
        timeline,
        runbook=RUNBOOK,
        target=target,
        outcome=outcome,
        reason=reason,
        dry_run=False,
        regions=tuple(rows),
        healthy=tuple(row.region for row in rows if row.ok),
        unhealthy=unhealthy,
    )


def _probes(
    params: RegionalHealthParams, services: dict[str, HttpService]
) -> dict[str, tuple[HttpService, str | None]]:
    """Region -> (block, URL override): URLs become blocks with the run's timeout."""
    both = sorted(set(params.regions) & set(services))
    if both:
        raise InvalidRequestError(
            f"regions: {', '.join(both)} given both as a URL and as a service block; keep one"
        )
    if not params.regions and not services:
        raise InvalidRequestError("regions: give at least one region -> health URL")
    probes: dict[str, tuple[HttpService, str | None]] = {
        region: (service, None) for region, service in services.items()
    }
    for region, url in params.regions.items():
        service = HttpService(
            base_url=url,
            connect_timeout_seconds=params.timeout_seconds,
            read_timeout_seconds=params.timeout_seconds,
        )
        probes[region] = (service, url)
    return probes
