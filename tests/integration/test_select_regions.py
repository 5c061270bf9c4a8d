"""The ``select-regions`` flow on generated access logs whose geography is known.

Client addresses are picked per country with the same offline database the runbook uses
(``iptocc``; :mod:`sandbox.access_logs` generates the logs), so the demand per country is known
exactly; the flow's choice for every k is checked against brute force over the same demand
groups.
"""

from __future__ import annotations

import gzip
import itertools
import uuid
from pathlib import Path

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from pydantic import ValidationError

from decisions.regions import brute_force_best, rtt_matrix, weighted_quantile
from decisions.selection import SelectRegionsParams
from flows.select_regions import select_regions
from runbooks.errors import InvalidRequestError, NotFoundError
from runbooks.geodata import demand_groups, load_regions
from runbooks.kit import Outcome, artifact_key
from sandbox import access_logs

# requests per country: Europe heavy, then Japan and the United States
DEMAND = {"DE": 500, "FR": 200, "JP": 250, "US": 300}


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "access.log.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(access_logs.generate(DEMAND, seed=5, garbage_lines=3))
    return path


@pytest.fixture
def service() -> str:
    return f"geo-{uuid.uuid4().hex[:8]}"


def test_choice_per_k_equals_brute_force_and_meets_the_target(
    prefect_server: str, access_log: Path, service: str
) -> None:
    params = SelectRegionsParams(service=service, sources=(str(access_log),), k_min=1, k_max=4)
    result = select_regions(params=params)
    assert result.outcome is Outcome.SUCCEEDED
    assert result.logs.requests == sum(DEMAND.values())
    assert result.logs.malformed == 3
    assert result.logs.requests_by_country() == DEMAND
    # the same demand groups and latency model, every k-set tried
    regions = load_regions()
    groups = demand_groups({c: float(n) for c, n in DEMAND.items()})
    rtt = rtt_matrix(groups, regions)
    weights = np.array([g.weight for g in groups])
    for k_result in result.report.per_k:
        best = brute_force_best(rtt, weights, k_result.k)
        p95 = weighted_quantile(rtt[:, list(best)].min(axis=1), weights, 0.95)
        assert k_result.best.p95_ms == pytest.approx(p95), k_result.k
        assert k_result.best.method == "exact"
    assert [r.best.p95_ms for r in result.report.per_k] == sorted(
        (r.best.p95_ms for r in result.report.per_k), reverse=True
    )
    assert result.recommended_k is not None
    assert result.report.recommended is not None
    assert result.report.recommended.p95_ms < 100
    assert set(result.routing_map) == set(DEMAND)
    assert set(result.routing_map.values()) <= set(result.recommended_regions)
    with get_client(sync_client=True) as client:
        for key in (
            artifact_key("select-regions-report", service),
            artifact_key("select-regions-k1", service),
            artifact_key("select-regions-k4", service),
            artifact_key("select-regions-parse", service),
        ):
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            assert found, key
    assert "| DE |" in str(client_report(service)), "the report lists the routing map"


def client_report(service: str) -> object:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key("select-regions-report", service)])
            )
        )
    return found[0].data


def test_costs_pick_the_cheapest_set_meeting_the_target(
    prefect_server: str, access_log: Path, service: str
) -> None:
    candidates = ("eu-central-1", "eu-west-3", "ap-northeast-1", "us-east-1", "us-west-2")
    cost = {"eu-central-1": 900.0, "eu-west-3": 500.0, "ap-northeast-1": 800.0}
    cost |= {"us-east-1": 400.0, "us-west-2": 450.0}
    params = SelectRegionsParams(
        service=service,
        sources=(str(access_log),),
        regions=candidates,
        k_min=3,
        k_max=3,
        monthly_cost=cost,
    )
    result = select_regions(params=params)
    cheapest = result.report.per_k[0].cheapest
    assert cheapest is not None
    assert cheapest.meets_target
    assert cheapest.monthly_cost == min(
        sum(cost[r] for r in combo)
        for combo in itertools.combinations(candidates, 3)
        if _meets(result, combo)
    )


def _meets(result: object, combo: tuple[str, ...]) -> bool:
    regions = [r for r in load_regions() if r.code in combo]
    groups = demand_groups({c: float(n) for c, n in DEMAND.items()})
    rtt = rtt_matrix(groups, regions)
    weights = np.array([g.weight for g in groups])
    return weighted_quantile(rtt.min(axis=1), weights, 0.95) <= 100.0


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda d: d / "missing.log", NotFoundError, "missing.log"),
        (lambda d: _write(d / "empty.log", ""), InvalidRequestError, "empty.log"),
        (lambda d: _write(d / "junk.log", "junk\nmore junk\n"), InvalidRequestError, "junk.log"),
    ],
    ids=["unreadable", "empty", "only-garbage"],
)
def test_bad_logs_are_named(
    prefect_server: str, tmp_path: Path, make, error: type, message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(error, match=message):
        select_regions(params=SelectRegionsParams(sources=(str(path),)))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_region_and_k_above_candidates_are_named(
    prefect_server: str, access_log: Path
) -> None:
    unknown = SelectRegionsParams(
        sources=(str(access_log),), regions=("eu-nowhere-1",), k_min=1, k_max=1
    )
    with pytest.raises(InvalidRequestError, match=r"regions: .*eu-nowhere-1"):
        select_regions(params=unknown)
    with pytest.raises(ValidationError, match="k_max"):
        SelectRegionsParams(sources=(str(access_log),), regions=("eu-west-1",), k_max=2)


def test_the_routing_map_feeds_geo_routing_on_route53(
    prefect_server: str, sandbox: object, access_log: Path, service: str
) -> None:
    """The pipeline: access logs -> regions and a country map -> geolocation records (moto)."""
    import boto3

    from blocks.aws import AwsTarget
    from decisions.georouting import GeoRoutingParams
    from flows.geo_routing import geo_routing

    chosen = select_regions(params=SelectRegionsParams(service=service, sources=(str(access_log),)))
    assert chosen.recommended_regions
    moto = sandbox.endpoints["moto"]  # type: ignore[attr-defined]
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    route53 = boto3.client("route53", region_name="us-east-1", endpoint_url=moto, **credentials)
    zone = f"{service}.example"
    zone_id = route53.create_hosted_zone(Name=zone, CallerReference=zone)["HostedZone"]["Id"]
    endpoints = {r: f"192.0.2.{10 + i}" for i, r in enumerate(chosen.recommended_regions)}
    params = GeoRoutingParams(
        hosted_zone=zone,
        record_name=f"api.{zone}",
        endpoints=endpoints,
        countries=chosen.routing_map,
        insync_timeout_seconds=5,
    )
    aws = AwsTarget(region_name="us-east-1", endpoint_url=moto, **credentials)
    applied = geo_routing(params=params, aws=aws)
    assert applied.outcome is Outcome.SUCCEEDED, applied.reason
    records = {
        r["SetIdentifier"]: r["ResourceRecords"][0]["Value"]
        for r in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        if "SetIdentifier" in r
    }
    for country, region in chosen.routing_map.items():
        assert records[f"country-{country}"] == endpoints[region]
    assert "default" in records


def test_a_measured_latency_matrix_overrides_the_distance_model(
    prefect_server: str, access_log: Path, tmp_path: Path
) -> None:
    """Measured RTTs win over the formula: São Paulo, far from every user, measured fastest."""
    matrix = tmp_path / "rtt.csv"
    rows = [f"{country},sa-east-1,5" for country in DEMAND]
    matrix.write_text("source,region,rtt_ms\n" + "\n".join(rows) + "\n")
    params = SelectRegionsParams(
        sources=(str(access_log),), k_min=1, k_max=1, latency_matrix=str(matrix)
    )
    result = select_regions(params=params)
    assert result.report.per_k[0].best.regions == ("sa-east-1",)
    assert result.report.per_k[0].best.p95_ms == 5
    broken = tmp_path / "broken.csv"
    broken.write_text("source,region,rtt_ms\nDE,eu-central-1,fast\n")
    with pytest.raises(InvalidRequestError, match=r"latency_matrix: .* line 2"):
        select_regions(params=params.model_copy(update={"latency_matrix": str(broken)}))
    with pytest.raises(InvalidRequestError, match="latency_matrix: cannot read"):
        select_regions(params=params.model_copy(update={"latency_matrix": str(tmp_path / "no")}))
