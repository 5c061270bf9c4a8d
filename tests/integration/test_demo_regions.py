"""The demo's regions step on the session sandbox: logs on moto's S3 -> select-regions ->
geo-routing on moto's Route 53 -> regional-health probing a real shop's Services.

The shop runs in a namespace of its own, one pod per role; the zone and the bucket are named
per test, so nothing collides with the other tests on the shared sandbox.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import numpy as np
import pytest
from pydantic import BaseModel
from shops import own_shop

from decisions.regions import brute_force_best, rtt_matrix, weighted_quantile
from runbooks import catalogue
from runbooks.demo_regions import DEMAND, K_MAX, K_MIN, TARGET_P95_MS, format_regions, regions_step
from runbooks.geodata import demand_groups, load_regions
from sandbox.blocks_registration import main as save_sandbox_blocks

RUNBOOKS = ["select-regions", "geo-routing", "regional-health"]


@pytest.fixture(scope="module")
def shop(sandbox: Any) -> Iterator[dict[str, Any]]:
    """The demo shop, one pod per role, in a namespace of its own."""
    with own_shop(sandbox, "regions") as (_, services):
        yield services


@pytest.fixture
def blocks(prefect_server: str, sandbox: Any) -> list[str]:
    """The sandbox's blocks saved on the test server (other tests save them elsewhere)."""
    return save_sandbox_blocks(sandbox.endpoints)


def _route53(moto: str) -> Any:
    return boto3.client(
        "route53",
        region_name="us-east-1",
        endpoint_url=moto,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _brute_force() -> dict[int, tuple[set[str], float]]:
    """Per k, the regions and P95 that trying every k-set gives on the demo's demand."""
    regions = load_regions()
    groups = demand_groups({c: float(n) for c, n in DEMAND.items()})
    rtt = rtt_matrix(groups, regions)
    weights = np.array([g.weight for g in groups])
    answers = {}
    for k in range(K_MIN, K_MAX + 1):
        best = brute_force_best(rtt, weights, k)
        p95 = weighted_quantile(rtt[:, list(best)].min(axis=1), weights, 0.95)
        answers[k] = ({regions[i].code for i in best}, p95)
    return answers


def test_the_step_selects_routes_and_probes_the_regions(
    sandbox: Any, blocks: list[str], shop: dict[str, Any]
) -> None:
    assert "aws-target/sandbox" in blocks
    launched: list[str] = []

    def launch(
        entry: catalogue.Runbook, params: BaseModel, blocks: Mapping[str, Any]
    ) -> catalogue.Launched:
        launched.append(entry.name)
        return catalogue.run_in_process(entry, params, blocks)

    zone = f"r{uuid.uuid4().hex[:8]}.example"
    said: list[str] = []
    figures = regions_step(
        sandbox.endpoints,
        shop,
        said.append,
        launch=launch,
        zone=zone,
        bucket=f"logs-{uuid.uuid4().hex[:8]}",
    )

    assert launched == RUNBOOKS
    assert json.loads(json.dumps(figures)) == figures
    assert set(figures["ui_urls"]) == set(RUNBOOKS)
    assert len(said) == 4

    # select-regions: the regions brute force picks, the smallest k meeting the target
    selection = figures["select_regions"]
    assert selection["requests"] == sum(DEMAND.values()) == figures["log_lines"]
    answers = _brute_force()
    for k, (regions, p95) in answers.items():
        assert set(selection["regions_per_k"][str(k)]) == regions, k
        assert selection["p95_ms_per_k"][str(k)] == pytest.approx(p95, abs=0.05), k
    meeting = [k for k, (_, p95) in answers.items() if p95 <= TARGET_P95_MS]
    assert meeting, "the demo's demand must have a k meeting the target"
    assert selection["recommended_k"] == meeting[0]
    chosen = selection["regions"]
    assert set(chosen) == answers[meeting[0]][0]
    assert set(selection["routing_map"]) == set(DEMAND)
    assert set(selection["routing_map"].values()) <= set(chosen)

    # geo-routing: one geolocation record per country (plus the default), read back from moto
    routing = figures["geo_routing"]
    assert routing["outcome"] == "succeeded", routing["reason"]
    assert routing["records_written"] == routing["records"] == len(DEMAND) + 1
    assert routing["health_checks"] == len(set(selection["routing_map"].values()))
    route53 = _route53(sandbox.endpoints["moto"])
    zone_id = route53.list_hosted_zones_by_name(DNSName=f"{zone}.")["HostedZones"][0]["Id"]
    records = {
        r["SetIdentifier"]: r
        for r in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        if "SetIdentifier" in r
    }
    assert set(records) == {f"country-{c}" for c in DEMAND} | {"default"}
    for country, region in selection["routing_map"].items():
        record = records[f"country-{country}"]
        assert record["ResourceRecords"][0]["Value"] == routing["endpoints"][region]
        assert record["GeoLocation"] == {"CountryCode": country}
        assert record.get("HealthCheckId")

    # regional-health: every chosen region probed over real HTTP, all healthy
    health = figures["regional_health"]
    assert health["outcome"] == "no_change"
    assert health["regions"] == {region: "healthy" for region in sorted(chosen)}
    assert set(health["status"].values()) == {"200 ok"}
    for region, url in health["urls"].items():
        assert url == f"{shop[health['roles'][region]].url}/health"

    table = format_regions(figures)
    assert f"k={meeting[0]}" in table
    assert "<- recommended" in table
    assert f"regional-health: {sorted(chosen)[0]} healthy" in table


def test_a_failed_run_is_raised(sandbox: Any, blocks: list[str], shop: dict[str, Any]) -> None:
    """What the launcher reports as the run's error is what the step raises (the demo names it)."""
    boom = RuntimeError("the select-regions run crashed")

    def launch(entry: Any, params: BaseModel, blocks: Mapping[str, Any]) -> catalogue.Launched:
        return catalogue.Launched(None, boom, "run-1", "http://ui/runs/flow-run/run-1")

    with pytest.raises(RuntimeError) as raised:
        regions_step(
            sandbox.endpoints,
            shop,
            lambda _: None,
            launch=launch,
            zone=f"r{uuid.uuid4().hex[:8]}.example",
            bucket=f"logs-{uuid.uuid4().hex[:8]}",
        )
    assert raised.value is boom


def test_a_block_pointing_elsewhere_is_refused(sandbox: Any, blocks: list[str]) -> None:
    elsewhere = {**sandbox.endpoints, "moto": "http://127.0.0.1:9"}
    with pytest.raises(catalogue.BlockError, match=r"not this sandbox's moto at http://127"):
        regions_step(elsewhere, {}, lambda _: None)


FIGURES: dict[str, Any] = {
    "demand": {"DE": 600, "US": 500},
    "log_lines": 1100,
    "select_regions": {
        "recommended_k": 2,
        "target_p95_ms": 100.0,
        "p95_ms_per_k": {"1": 120.5, "2": 72.8},
        "regions_per_k": {"1": ["us-east-1"], "2": ["eu-central-1", "us-east-2"]},
        "routing_map": {"DE": "eu-central-1", "US": "us-east-2"},
        "routing_map_size": 2,
    },
    "geo_routing": {
        "outcome": "succeeded",
        "record_name": "www.shop.example.",
        "records": 3,
        "records_written": 3,
        "health_checks": 2,
        "detection_seconds": 50,
    },
    "regional_health": {
        "outcome": "failed",
        "regions": {"eu-central-1": "healthy", "us-east-2": "unhealthy"},
        "roles": {"eu-central-1": "frontend", "us-east-2": "checkout"},
    },
}


def test_format_regions() -> None:
    assert format_regions(FIGURES).splitlines() == [
        "select-regions (1100 log lines from 2 countries, P95 target 100 ms)",
        "  k=1  us-east-1               P95  120.5 ms",
        "  k=2  eu-central-1 us-east-2  P95   72.8 ms  <- recommended",
        "  routing map (2 countries): DE->eu-central-1, US->us-east-2",
        "geo-routing www.shop.example.: succeeded, 3 of 3 records written, 2 health checks, "
        "failover detection ~50 s",
        "regional-health: eu-central-1 healthy (frontend), us-east-2 unhealthy (checkout)",
    ]
