"""Runbook ``select-regions``: from access logs to the regions that serve the users fastest.

Reads like the "Global Low-Latency Service" recipe, measured instead of eyeballed: parse the
access logs (:mod:`tasks.accesslogs`: vectorised, malformed lines counted, clients geolocated
offline) -> spread each country's demand over its cities (:func:`runbooks.geodata.demand_groups`)
-> for each k, the region set with the lowest demand-weighted P95 round trip, exact up to k = 5
(:func:`decisions.regions.optimise`) -> the recommended k (the smallest meeting the target) and
the country -> region map that ``geo-routing`` applies.

Read-only: it changes nothing, so it takes no lock and has no dry run. Outputs: the result model
(:class:`SelectRegionsResult`), a table artifact per k (global and per-continent P50/P95, share
of demand per region, cost), a markdown report with the routing map, the log summary table, a
progress artifact while parsing, and the event ``runbooks.select-regions.selected``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import Field

from blocks.aws import AwsTarget
from decisions.regions import LatencyModel, RegionReport, optimise
from decisions.selection import SelectRegionsParams, WeightBy
from runbooks.errors import InvalidRequestError
from runbooks.geodata import country_info, demand_groups, load_regions
from runbooks.kit import (
    Outcome,
    RunbookResult,
    Timeline,
    emit,
    publish_markdown,
    publish_table,
    publish_timeline,
)
from runbooks.kit.progress import Progress
from tasks.accesslogs import LogSummary, summarise_logs_task

RUNBOOK = "select-regions"


class SelectRegionsResult(RunbookResult):
    logs: LogSummary = Field(description="What the access logs held.")
    report: RegionReport = Field(description="Per k: the best region set and what it delivers.")
    recommended_k: int | None = Field(description="The smallest k meeting the P95 target.")
    recommended_regions: tuple[str, ...] = ()
    routing_map: dict[str, str] = Field(
        description="Country (ISO 3166-1 alpha-2) -> region: the input of geo-routing."
    )


@flow(name="select-regions", log_prints=False)
def select_regions(
    params: SelectRegionsParams, aws: AwsTarget | None = None
) -> SelectRegionsResult:
    """Choose the AWS regions that serve the users in ``params.sources`` fastest."""
    p = params
    timeline = Timeline()
    regions = _regions(p)
    model = LatencyModel(matrix=read_latency_matrix(p.latency_matrix) if p.latency_matrix else None)
    progress = Progress(f"{RUNBOOK}-parse-{p.target}", f"parsing {len(p.sources)} source(s)")
    logs = summarise_logs_task(p.sources, aws=aws, log_format=p.log_format.value, progress=progress)
    progress.finish()
    timeline.add(
        "parse",
        f"{logs.lines} line(s): {logs.requests} request(s), {logs.malformed} malformed, "
        f"{logs.unique_clients} client(s) in {len(logs.countries)} countries; "
        f"{logs.unknown_country_requests} request(s) from unlocated addresses",
    )
    weights = (
        logs.requests_by_country()
        if p.weight_by is WeightBy.REQUESTS
        else (logs.clients_by_country())
    )
    if not weights:
        raise InvalidRequestError(
            f"sources: none of the {logs.unique_clients} client address(es) could be located in a "
            "country, so there is no demand to place regions for"
        )
    placeable, unplaceable = _placeable(weights)
    groups = demand_groups(placeable)
    timeline.add(
        "demand",
        f"{len(groups)} demand group(s) weighted by {p.weight_by.value}"
        + (f"; left out codes that name no country: {unplaceable}" if unplaceable else ""),
    )
    try:
        report = optimise(
            regions,
            groups,
            k_values=p.k_values,
            target_p95_ms=p.target_p95_ms,
            costs=_costs(p, regions),
            model=model,
        )
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    timeline.add("optimise", report.reason, ok=report.recommended_k is not None)
    _publish(p, logs, report)
    recommended = report.recommended.regions if report.recommended else ()
    emit(
        RUNBOOK,
        "selected",
        p.target,
        payload={
            "recommended_k": report.recommended_k,
            "regions": list(recommended),
            "routed_p95_ms": report.routed_p95_ms,
            "target_p95_ms": p.target_p95_ms,
        },
    )
    publish_timeline(RUNBOOK, p.target, timeline)
    return SelectRegionsResult.from_timeline(
        timeline,
        runbook=RUNBOOK,
        target=p.target,
        outcome=Outcome.SUCCEEDED,
        reason=report.reason,
        dry_run=False,
        logs=logs,
        report=report,
        recommended_k=report.recommended_k,
        recommended_regions=recommended,
        routing_map=report.routing_map,
    )


def _regions(p: SelectRegionsParams) -> tuple[Any, ...]:
    try:
        regions = load_regions(p.regions or None)
    except ValueError as exc:
        raise InvalidRequestError(f"regions: {exc}") from exc
    if p.k_max > len(regions):
        raise InvalidRequestError(
            f"k_max: {p.k_max} is above the number of candidate regions ({len(regions)})"
        )
    return regions


def _placeable(weights: dict[str, int]) -> tuple[dict[str, float], dict[str, int]]:
    """Demand of real countries, and what registries label otherwise (``EU``, ``AP``: blocks
    registered to a region, not a country), which cannot be placed on a map and is reported."""
    placeable: dict[str, float] = {}
    unplaceable: dict[str, int] = {}
    for country, n in weights.items():
        try:
            country_info(country)
        except ValueError:
            unplaceable[country] = n
            continue
        placeable[country] = float(n)
    if not placeable:
        raise InvalidRequestError(
            f"sources: no client could be placed in a country (codes seen: {sorted(weights)})"
        )
    return placeable, unplaceable


def _costs(p: SelectRegionsParams, regions: tuple[Any, ...]) -> dict[str, float] | None:
    """The costs of the candidates (costs of other regions are ignored); all or none."""
    if not p.monthly_cost:
        return None
    missing = [r.code for r in regions if r.code not in p.monthly_cost]
    if missing:
        raise InvalidRequestError(
            f"monthly_cost: no cost for candidate region(s) {', '.join(missing)}: give one for "
            "every candidate, or narrow regions"
        )
    return {r.code: p.monthly_cost[r.code] for r in regions}


def read_latency_matrix(path: str) -> dict[tuple[str, str], float]:
    """A measured latency matrix: CSV with columns ``source,region,rtt_ms``, where ``source`` is
    a country code or a demand group key (``US@35:-80``); errors name the file and line."""
    where = Path(path)
    try:
        with where.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise InvalidRequestError(f"latency_matrix: cannot read {path}: {exc.strerror}") from exc
    matrix: dict[tuple[str, str], float] = {}
    for line, row in enumerate(rows, start=2):
        try:
            source, region = row["source"].strip(), row["region"].strip()
            matrix[(source, region)] = float(row["rtt_ms"])
        except (KeyError, AttributeError, ValueError) as exc:
            raise InvalidRequestError(
                f"latency_matrix: {path} line {line} needs source,region,rtt_ms with a number "
                f"for rtt_ms ({exc})"
            ) from exc
    if not matrix:
        raise InvalidRequestError(f"latency_matrix: {path} holds no row")
    return matrix


def _publish(p: SelectRegionsParams, logs: LogSummary, report: RegionReport) -> None:
    for result in report.per_k:
        rows = []
        for choice, kind in ((result.best, "lowest p95"), (result.cheapest, "cheapest in target")):
            if choice is None:
                continue
            rows.append(_row(choice, kind, "global", choice.p50_ms, choice.p95_ms, 1.0))
            rows += [
                _row(choice, kind, c.continent, c.p50_ms, c.p95_ms, c.demand_share)
                for c in choice.per_continent
            ]
        publish_table(
            f"{RUNBOOK}-k{result.k}-{p.target}",
            rows,
            description=f"{RUNBOOK}: {result.k} region(s) for {p.target}",
        )
    publish_markdown(
        f"{RUNBOOK}-report-{p.target}",
        render_report(p, logs, report),
        description=f"{RUNBOOK} recommendation for {p.target}",
    )


def _row(choice: Any, kind: str, scope: str, p50: float, p95: float, share: float) -> dict:
    return {
        "k": choice.k,
        "set": kind,
        "regions": " ".join(choice.regions),
        "scope": scope,
        "demand_share": round(share, 4),
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "meets_target": choice.meets_target,
        "served_share": " ".join(f"{r}={s:.1%}" for r, s in choice.served_share.items()),
        "monthly_cost": choice.monthly_cost,
        "method": choice.method,
    }


def render_report(p: SelectRegionsParams, logs: LogSummary, report: RegionReport) -> str:
    """The recommendation as markdown: logs, per-k table, routing map."""
    lines = [
        f"# {RUNBOOK}: {p.target}",
        "",
        f"**{report.reason}**",
        "",
        f"Logs: {logs.lines} line(s), {logs.requests} request(s), {logs.malformed} malformed, "
        f"{logs.unique_clients} client(s); {logs.unknown_country_requests} request(s) from "
        f"{logs.unknown_country_clients} unlocated client(s). Geolocation: {logs.geolocation}.",
        "",
        "| k | regions | P50 ms | P95 ms | meets target | method |",
        "|---|---|---|---|---|---|",
    ]
    for result in report.per_k:
        best = result.best
        lines.append(
            f"| {best.k} | {' '.join(best.regions)} | {best.p50_ms:.1f} | {best.p95_ms:.1f} | "
            f"{'yes' if best.meets_target else 'no'} | {best.method} |"
        )
    lines += [
        "",
        f"Routing map (k = {report.routing_k}; P95 as routed by country "
        f"{report.routed_p95_ms:.1f} ms, by nearest region {report.model_p95_ms:.1f} ms):",
        "",
        "| country | region |",
        "|---|---|",
        *(f"| {c} | {r} |" for c, r in sorted(report.routing_map.items())),
    ]
    return "\n".join(lines) + "\n"
