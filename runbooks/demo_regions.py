"""The regions step of ``runbooks demo``: select-regions -> geo-routing -> regional-health.

The "global low-latency service" recipe end to end on the sandbox, each runbook run the way the
demo runs the others (through ``launch``: in-process, or the runbook's Prefect deployment):

1. access logs of a known demand (six countries on four continents, 2,000 requests; client
   addresses placed with the same offline database the runbook geolocates with,
   :mod:`sandbox.access_logs`) are uploaded gzip-compressed to a bucket on moto through the
   saved ``aws-target/sandbox`` block;
2. ``select-regions`` reads them from ``s3://`` and chooses, for k = 2..4, the regions with the
   lowest demand-weighted P95; the recommended k and its country -> region map come out;
3. ``geo-routing`` writes health-checked geolocation records for that map into a Route 53 zone on
   moto (created here when missing), one endpoint per chosen region (TEST-NET-1 addresses:
   nothing answers DNS in the sandbox, so the records only need to be well formed);
4. ``regional-health`` probes one health URL per chosen region. The sandbox has one shop, not
   one per region, so each region stands for one of the shop's Services (frontend, checkout,
   payments in turn) and its probe is a real HTTP GET of that Service's ``/health``.

Why the step refuses a block that does not point at ``endpoints["moto"]``: the logs and the zone
would be written to one AWS and the runbooks would read another, failing far from the cause.
The figures are plain JSON (the demo prints them with ``--json``), each run's Prefect UI link
under ``ui_urls``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from runbooks import catalogue
from runbooks.catalogue import Launch

Say = Callable[[str], None]

DEMAND = {"DE": 600, "US": 500, "GB": 300, "JP": 250, "BR": 200, "IN": 150}
"""Requests per country in the generated logs (2,000): Europe and North America heavy."""
K_MIN, K_MAX = 2, 4
TARGET_P95_MS = 100.0
BUCKET = "shop-access-logs"
LOG_KEY = "frontend/2026/11/30/access.log.gz"
ZONE = "shop.example"
RECORD = "www"
ROLES = ("frontend", "checkout", "payments")
SEED = 5


def regions_step(
    endpoints: dict[str, str],
    shop: dict[str, Any],
    say: Say,
    *,
    launch: Launch = catalogue.run_in_process,
    zone: str = ZONE,
    bucket: str = BUCKET,
    service: str = "shop",
) -> dict[str, Any]:
    """Run select-regions, geo-routing and regional-health on the sandbox; their figures.

    ``endpoints`` are the sandbox's (``moto`` is used); ``shop`` maps the shop's roles to its
    Services (``.url``, as :func:`sandbox.showcase.deploy_shop` returns them); the sandbox's
    blocks must be saved on the Prefect API first. A run that fails raises its error.
    """
    from sandbox import access_logs

    ui_urls: dict[str, str | None] = {}

    select = catalogue.runbook("select-regions")
    select_blocks = catalogue.load_blocks(select, {})
    aws = _sandbox_aws(select_blocks, endpoints)
    text = access_logs.generate(DEMAND, seed=SEED)
    source = access_logs.upload(aws, bucket, LOG_KEY, text)
    say(f"   {sum(DEMAND.values())} requests from {len(DEMAND)} countries uploaded to {source}")
    params = catalogue.build_params(
        select,
        overrides={
            "service": service,
            "sources": [source],
            "k_min": K_MIN,
            "k_max": K_MAX,
            "target_p95_ms": TARGET_P95_MS,
        },
    )
    chosen = _run(launch, select, params, select_blocks, ui_urls)
    selection = _selection(chosen)
    regions = selection["regions"]
    say(
        f"   select-regions: k={selection['recommended_k']} -> {', '.join(regions)} "
        f"(P95 {selection['p95_ms_per_k'][str(selection['routing_k'])]} ms); "
        f"{selection['routing_map_size']} countries mapped"
    )

    geo = catalogue.runbook("geo-routing")
    geo_blocks = catalogue.load_blocks(geo, {})
    _ensure_zone(_sandbox_aws(geo_blocks, endpoints), zone)
    addresses = {region: f"192.0.2.{10 + n}" for n, region in enumerate(regions)}
    params = catalogue.build_params(
        geo,
        overrides={
            "hosted_zone": zone,
            "record_name": f"{RECORD}.{zone}",
            "endpoints": addresses,
            "countries": selection["routing_map"],
            "health_check": {
                "protocol": "HTTP",
                "path": "/health",
                "request_interval": 10,
                "failure_threshold": 2,
            },
            "ttl_seconds": 30,
            "insync_timeout_seconds": 30,
        },
    )
    routing = _routing(_run(launch, geo, params, geo_blocks, ui_urls), addresses)
    say(
        f"   geo-routing {routing['record_name']}: {routing['outcome']}, "
        f"{routing['records_written']} records written, {routing['health_checks']} health checks, "
        f"failover detection ~{routing['detection_seconds']} s"
    )

    health = catalogue.runbook("regional-health")
    urls = {
        region: f"{_url(shop[ROLES[n % len(ROLES)]])}/health" for n, region in enumerate(regions)
    }
    params = catalogue.build_params(health, overrides={"regions": urls, "timeout_seconds": 5})
    probed = _health(_run(launch, health, params, catalogue.load_blocks(health, {}), ui_urls))
    probed["roles"] = {region: ROLES[n % len(ROLES)] for n, region in enumerate(regions)}
    say(
        f"   regional-health: {probed['outcome']}; "
        + ", ".join(f"{region} {state}" for region, state in probed["regions"].items())
    )
    return {
        "demand": dict(DEMAND),
        "log_source": source,
        "log_lines": text.count("\n"),
        "select_regions": selection,
        "geo_routing": routing,
        "regional_health": probed,
        "ui_urls": ui_urls,
    }


def _run(
    launch: Launch,
    entry: catalogue.Runbook,
    params: BaseModel,
    blocks: Mapping[str, Any],
    ui_urls: dict[str, str | None],
) -> dict[str, Any]:
    """Launch one runbook; its result as JSON data (a model, or already data from an API)."""
    launched = launch(entry, params, blocks)
    ui_urls[entry.name] = launched.ui_url
    result = launched.unwrap()
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)


def _selection(result: dict[str, Any]) -> dict[str, Any]:
    report = result["report"]
    best = {str(k["k"]): k["best"] for k in report["per_k"]}
    routed = best[str(report["routing_k"])]["regions"]
    return {
        "outcome": result["outcome"],
        "requests": result["logs"]["requests"],
        "recommended_k": result["recommended_k"],
        "routing_k": report["routing_k"],
        # no k meeting the target still routes: to the best set of the lowest-P95 k
        "regions": list(result["recommended_regions"] or routed),
        "p95_ms_per_k": {k: round(choice["p95_ms"], 1) for k, choice in best.items()},
        "regions_per_k": {k: list(choice["regions"]) for k, choice in best.items()},
        "target_p95_ms": report["target_p95_ms"],
        "routed_p95_ms": round(report["routed_p95_ms"], 1),
        "routing_map": dict(sorted(result["routing_map"].items())),
        "routing_map_size": len(result["routing_map"]),
        "reason": result["reason"],
    }


def _routing(result: dict[str, Any], addresses: dict[str, str]) -> dict[str, Any]:
    plan = result.get("plan") or {}
    return {
        "outcome": result["outcome"],
        "target": result["target"],
        "record_name": plan.get("record_name", result["target"].partition("/")[2]),
        "endpoints": addresses,
        "records": len(plan.get("records", ())),
        "records_written": result["creates"] + result["updates"] + result["deletes"],
        "health_checks": len(result["health_checks"]),
        "health_checks_created": len(result["health_checks_created"]),
        "detection_seconds": result["detection_seconds"],
        "reason": result["reason"],
    }


def _health(result: dict[str, Any]) -> dict[str, Any]:
    rows = result["regions"]
    return {
        "outcome": result["outcome"],
        "regions": {row["region"]: "healthy" if row["ok"] else "unhealthy" for row in rows},
        "status": {row["region"]: row["status"] for row in rows},
        "latency_ms": {row["region"]: row["latency_ms"] for row in rows},
        "urls": {row["region"]: row["url"] for row in rows},
    }


def _sandbox_aws(blocks: Mapping[str, Any], endpoints: Mapping[str, str]) -> Any:
    """The saved ``aws`` block, refused unless it points at this sandbox's moto."""
    aws = blocks.get("aws")
    moto = endpoints["moto"].rstrip("/")
    where = None if aws is None else (aws.endpoint_url or "").rstrip("/")
    if where != moto:
        raise catalogue.BlockError(
            f"block aws (aws-target/sandbox) points at {where or 'AWS itself'}, not this "
            f"sandbox's moto at {moto}; save the sandbox's blocks first "
            "(sandbox.blocks_registration.main(endpoints))"
        )
    return aws


def _ensure_zone(aws: Any, zone: str) -> str:
    """The id of the public hosted zone ``zone`` on moto, created when there is none (so a
    second demo on the same moto routes the same zone again: geo-routing says no_change)."""
    route53 = aws.get_client("route53")
    name = zone.rstrip(".") + "."
    listed = route53.list_hosted_zones_by_name(DNSName=name, MaxItems="1")["HostedZones"]
    if listed and listed[0]["Name"] == name:
        return listed[0]["Id"].removeprefix("/hostedzone/")
    created = route53.create_hosted_zone(Name=name, CallerReference=f"demo-{uuid.uuid4()}")
    return created["HostedZone"]["Id"].removeprefix("/hostedzone/")


def _url(service: Any) -> str:
    return str(getattr(service, "url", service)).rstrip("/")


def format_regions(figures: dict[str, Any]) -> str:
    """The regions step of the demo, a few lines."""
    selection = figures["select_regions"]
    routing = figures["geo_routing"]
    health = figures["regional_health"]
    recommended = str(selection["recommended_k"])
    countries = len(figures["demand"])
    lines = [
        f"select-regions ({figures['log_lines']} log lines from {countries} countries, "
        f"P95 target {selection['target_p95_ms']:g} ms)"
    ]
    width = max(len(" ".join(regions)) for regions in selection["regions_per_k"].values())
    for k, p95 in selection["p95_ms_per_k"].items():
        regions = " ".join(selection["regions_per_k"][k])
        mark = "  <- recommended" if k == recommended else ""
        lines.append(f"  k={k}  {regions:<{width}}  P95 {p95:>6.1f} ms{mark}")
    mapping = ", ".join(f"{c}->{r}" for c, r in selection["routing_map"].items())
    lines.append(f"  routing map ({selection['routing_map_size']} countries): {mapping}")
    lines.append(
        f"geo-routing {routing['record_name']}: {routing['outcome']}, "
        f"{routing['records_written']} of {routing['records']} records written, "
        f"{routing['health_checks']} health checks, failover detection ~"
        f"{routing['detection_seconds']} s"
    )
    states = ", ".join(
        f"{region} {state} ({health['roles'][region]})"
        for region, state in health["regions"].items()
    )
    lines.append(f"regional-health: {states}")
    return "\n".join(lines)
