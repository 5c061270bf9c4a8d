"""Region selection: exact == brute force, the report's figures, and refused input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from decisions.regions import (
    DemandGroup,
    LatencyModel,
    Region,
    brute_force_best,
    exact_best,
    feasible_sets,
    greedy_best,
    haversine_km,
    optimise,
    rtt_matrix,
    weighted_quantile,
)

REGIONS = (
    Region(code="us-east-1", name="N. Virginia", lat=39.04, lon=-77.49),
    Region(code="us-west-2", name="Oregon", lat=45.46, lon=-119.63),
    Region(code="eu-central-1", name="Frankfurt", lat=50.11, lon=8.68),
    Region(code="eu-west-1", name="Ireland", lat=53.35, lon=-6.27),
    Region(code="ap-northeast-1", name="Tokyo", lat=35.69, lon=139.69),
    Region(code="ap-southeast-1", name="Singapore", lat=1.29, lon=103.85),
    Region(code="ap-southeast-2", name="Sydney", lat=-33.87, lon=151.21),
    Region(code="sa-east-1", name="Sao Paulo", lat=-23.53, lon=-46.63),
    Region(code="af-south-1", name="Cape Town", lat=-33.92, lon=18.42),
    Region(code="ap-south-1", name="Mumbai", lat=19.08, lon=72.88),
)
BY_CODE = {r.code: r for r in REGIONS}


def _instance(seed: int, n_regions: int, n_groups: int, ties: bool = False):
    """Random regions and demand; ``ties`` rounds RTTs to 10 ms so many sets tie."""
    rng = np.random.default_rng(seed)
    rlat, rlon = rng.uniform(-45, 60, n_regions), rng.uniform(-180, 180, n_regions)
    glat, glon = rng.uniform(-50, 65, n_groups), rng.uniform(-180, 180, n_groups)
    rtt = np.asarray(LatencyModel().rtt_ms(haversine_km(glat[:, None], glon[:, None], rlat, rlon)))
    if ties:
        rtt = np.round(rtt, -1)
        weights = rng.integers(1, 4, n_groups).astype(float)
    else:
        weights = rng.lognormal(0.0, 1.5, n_groups)
    return rtt, weights


def _group(country: str, continent: str, region: str, weight: float, **kw) -> DemandGroup:
    r = BY_CODE[region]
    return DemandGroup(
        country=country, continent=continent, lat=r.lat, lon=r.lon, weight=weight, **kw
    )


@pytest.mark.parametrize(
    ("seed", "n_regions", "n_groups", "ties"),
    [
        (1, 12, 60, False),
        (2, 14, 120, False),
        (3, 10, 40, True),
        (4, 13, 90, True),
        (5, 8, 5, False),
    ],
)
def test_exact_equals_brute_force_for_every_k(
    seed: int, n_regions: int, n_groups: int, ties: bool
) -> None:
    rtt, weights = _instance(seed, n_regions, n_groups, ties)
    for k in range(1, 6):
        assert exact_best(rtt, weights, k) == brute_force_best(rtt, weights, k), k


def test_exact_equals_brute_force_on_34_regions() -> None:
    rtt, weights = _instance(7, 34, 150)
    for k in (1, 2, 3):
        assert exact_best(rtt, weights, k) == brute_force_best(rtt, weights, k), k


def test_feasible_sets_are_exactly_those_meeting_the_threshold() -> None:
    rtt, weights = _instance(8, 9, 50)
    threshold = float(np.quantile(rtt.min(axis=1), 0.9) + 20)
    found = {tuple(r) for r in feasible_sets(rtt, weights, 3, [(threshold, 0.95)])}
    expected = set()
    for rows in itertools.combinations(range(9), 3):
        latency = rtt[:, list(rows)].min(axis=1)
        if weighted_quantile(latency, weights, 0.95) <= threshold:
            expected.add(rows)
    assert found == expected
    assert found  # the threshold is generous enough to make the test meaningful


def test_clustered_demand_picks_the_three_regions_with_known_p95() -> None:
    groups = [
        _group("US", "NA", "us-east-1", 40.0),
        _group("DE", "EU", "eu-central-1", 35.0),
        _group("JP", "AS", "ap-northeast-1", 24.0),
        _group("ZA", "AF", "af-south-1", 1.0),  # 1 % of demand: outside P95
    ]
    report = optimise(REGIONS, groups, k_values=[3, 4])
    three, four = report.per_k
    assert three.best.regions == ("ap-northeast-1", "eu-central-1", "us-east-1")
    assert three.best.p95_ms == pytest.approx(14.0)  # the model's base: zero distance
    assert three.best.method == "exact"
    assert three.best.served_share == pytest.approx(
        {"ap-northeast-1": 0.24, "eu-central-1": 0.36, "us-east-1": 0.40}
    )
    assert "af-south-1" in four.best.regions
    assert report.recommended_k == 3
    assert report.routing_map == {
        "DE": "eu-central-1",
        "JP": "ap-northeast-1",
        "US": "us-east-1",
        "ZA": "eu-central-1",
    }
    by_continent = {c.continent: c for c in three.best.per_continent}
    assert by_continent["NA"].p95_ms == pytest.approx(14.0)
    assert by_continent["AF"].p95_ms > 100.0
    assert by_continent["EU"].demand_share == pytest.approx(0.35)


def test_p95_never_rises_with_k_and_greedy_is_flagged() -> None:
    rtt, weights = _instance(9, 10, 80)
    rng = np.random.default_rng(9)
    regions = [
        Region(code=f"r{i:02d}", lat=float(lat), lon=float(lon))
        for i, (lat, lon) in enumerate(
            zip(rng.uniform(-45, 60, 10), rng.uniform(-180, 180, 10), strict=True)
        )
    ]
    groups = [
        DemandGroup(country="US", continent="NA", lat=lat, lon=lon, weight=w)
        for lat, lon, w in zip(
            rng.uniform(-50, 65, 80), rng.uniform(-180, 180, 80), weights, strict=True
        )
    ]
    report = optimise(regions, groups, k_values=range(1, 8), exact_limit=4)
    p95s = [r.best.p95_ms for r in report.per_k]
    assert p95s == sorted(p95s, reverse=True)
    assert [r.best.method for r in report.per_k] == ["exact"] * 4 + ["greedy"] * 3
    assert greedy_best(rtt, weights, 2) == tuple(sorted(greedy_best(rtt, weights, 2)))


def _brute_cheapest(rtt, weights, costs, k, target):
    best = None
    for rows in itertools.combinations(range(rtt.shape[1]), k):
        latency = rtt[:, list(rows)].min(axis=1)
        p95 = weighted_quantile(latency, weights, 0.95)
        if p95 > target:
            continue
        key = (
            round(float(costs[list(rows)].sum()), 6),
            p95,
            weighted_quantile(latency, weights, 0.5),
            rows,
        )
        best = min(best or key, key)
    return None if best is None else best[3]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_cheapest_set_meeting_the_target(seed: int) -> None:
    rng = np.random.default_rng(seed)
    regions = [
        Region(code=f"r{i:02d}", lat=float(lat), lon=float(lon))
        for i, (lat, lon) in enumerate(
            zip(rng.uniform(-45, 60, 9), rng.uniform(-180, 180, 9), strict=True)
        )
    ]
    groups = [
        DemandGroup(country="FR", continent="EU", lat=float(lat), lon=float(lon), weight=float(w))
        for lat, lon, w in zip(
            rng.uniform(-50, 65, 50),
            rng.uniform(-180, 180, 50),
            rng.integers(1, 9, 50),
            strict=True,
        )
    ]
    costs = {r.code: float(rng.choice([100.0, 150.0, 200.0])) for r in regions}
    rtt = rtt_matrix(groups, regions)
    weights = np.array([g.weight for g in groups])
    cost_vector = np.array([costs[r.code] for r in regions])
    for target in (120.0, 150.0, 250.0):
        report = optimise(regions, groups, k_values=[2, 3, 4], target_p95_ms=target, costs=costs)
        for result in report.per_k:
            expected = _brute_cheapest(rtt, weights, cost_vector, result.k, target)
            if expected is None:
                assert result.cheapest is None
                continue
            assert result.cheapest is not None
            assert result.cheapest.regions == tuple(regions[i].code for i in expected)
            assert result.cheapest.meets_target
            assert result.cheapest.monthly_cost == pytest.approx(cost_vector[list(expected)].sum())


def test_equal_costs_pick_the_best_set_and_greedy_costs_are_flagged() -> None:
    groups = [_group("US", "NA", "us-east-1", 3.0), _group("DE", "EU", "eu-central-1", 2.0)]
    costs = dict.fromkeys(BY_CODE, 10.0)
    report = optimise(REGIONS, groups, k_values=[2, 3], costs=costs, exact_limit=2)
    assert report.per_k[0].cheapest == report.per_k[0].best
    assert report.per_k[1].cheapest is not None
    assert report.per_k[1].cheapest.method == "greedy"
    assert report.per_k[1].cheapest.monthly_cost == 30.0


def test_no_k_meets_the_target() -> None:
    groups = [_group("US", "NA", "us-east-1", 1.0), _group("AU", "OC", "ap-southeast-2", 1.0)]
    report = optimise(
        REGIONS, groups, k_values=[1], target_p95_ms=10.0, costs=dict.fromkeys(BY_CODE, 1.0)
    )
    assert report.recommended_k is None
    assert report.recommended is None
    assert "no k" in report.reason
    assert report.per_k[0].cheapest is None
    assert report.routing_k == 1
    assert set(report.routing_map) == {"US", "AU"}


def test_routing_map_takes_the_region_serving_most_of_a_country() -> None:
    # The US has demand on both coasts; geolocation sends the whole country to one region.
    groups = [
        _group("US", "NA", "us-east-1", 6.0),
        _group("US", "NA", "us-west-2", 4.0),
        _group("IE", "EU", "eu-west-1", 1.0),
    ]
    report = optimise(REGIONS, groups, k_values=[3], target_p95_ms=50.0)
    assert report.per_k[0].best.regions == ("eu-west-1", "us-east-1", "us-west-2")
    assert report.routing_map == {"IE": "eu-west-1", "US": "us-east-1"}
    assert report.model_p95_ms == pytest.approx(14.0)
    west_to_east = 14.0 + 1.57 * float(haversine_km(45.46, -119.63, 39.04, -77.49)) / 100
    assert report.routed_p95_ms == pytest.approx(west_to_east)
    assert report.routed_p50_ms == pytest.approx(14.0)


@pytest.mark.parametrize(
    ("values", "weights", "q", "expected"),
    [
        ([5.0], [1.0], 0.95, 5.0),
        ([1.0, 2.0], [0.95, 0.05], 0.95, 1.0),  # exactly reaching q counts
        ([1.0, 2.0], [0.94, 0.06], 0.95, 2.0),
        ([3.0, 1.0, 2.0], [1.0, 1.0, 1.0], 0.5, 2.0),
        ([3.0, 1.0, 2.0], [1.0, 1.0, 1.0], 1.0, 3.0),
        ([2.0, 2.0, 9.0], [1.0, 1.0, 0.1], 0.95, 2.0),
        ([2.0, 2.0, 9.0], [1.0, 1.0, 0.2], 0.95, 9.0),
        ([0.1 * i for i in range(1, 21)], [0.05] * 20, 0.95, 1.9),  # float sums near q
    ],
)
def test_weighted_quantile(values, weights, q, expected) -> None:
    assert weighted_quantile(np.array(values), np.array(weights), q) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "weights", "q"),
    [([], [], 0.5), ([1.0], [0.0], 0.5), ([1.0], [1.0], 0.0), ([1.0, 2.0], [1.0], 0.5)],
)
def test_weighted_quantile_refuses(values, weights, q) -> None:
    with pytest.raises(ValueError, match=r"weights|q must"):
        weighted_quantile(np.array(values), np.array(weights), q)


def test_measured_matrix_overrides_the_formula() -> None:
    groups = [
        _group("US", "NA", "us-east-1", 1.0, key="US@35:-80"),
        _group("US", "NA", "us-west-2", 1.0, key="US@45:-120"),
    ]
    regions = [BY_CODE["us-east-1"], BY_CODE["eu-west-1"]]
    model = LatencyModel(matrix={("US", "eu-west-1"): 30.0, ("US@35:-80", "eu-west-1"): 5.0})
    rtt = rtt_matrix(groups, regions, model)
    assert rtt[0, 1] == 5.0  # the group's own key wins over its country
    assert rtt[1, 1] == 30.0
    assert rtt[0, 0] == pytest.approx(14.0)  # no entry: the formula
    report = optimise(regions, groups, k_values=[1], model=model)
    assert report.per_k[0].best.regions == ("eu-west-1",)
    restored = type(report).model_validate_json(report.model_dump_json())
    assert restored == report  # the measured pairs survive JSON (no tuple keys there)
    with pytest.raises(ValidationError, match="matrix"):
        LatencyModel(matrix={("US", "eu-west-1"): -1.0})


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((51.5074, -0.1278), (48.8566, 2.3522), 343.6),  # London - Paris
        ((40.7128, -74.0060), (34.0522, -118.2437), 3935.7),  # New York - Los Angeles
        ((-33.8688, 151.2093), (51.5074, -0.1278), 16993.9),  # Sydney - London
        ((0.0, 0.0), (0.0, 180.0), 20015.1),  # half the equator
        ((10.0, 20.0), (10.0, 20.0), 0.0),
    ],
)
def test_haversine_known_distances(a, b, km) -> None:
    assert float(haversine_km(*a, *b)) == pytest.approx(km, rel=2e-3, abs=0.1)


def test_bad_input_is_refused_naming_it() -> None:
    groups = [_group("US", "NA", "us-east-1", 1.0)]
    with pytest.raises(ValueError, match=r"k \(11\) is above the number of candidate regions"):
        optimise(REGIONS, groups, k_values=[11])
    with pytest.raises(ValueError, match="k must be >= 1"):
        optimise(REGIONS, groups, k_values=[0, 1])
    with pytest.raises(ValueError, match="empty demand"):
        optimise(REGIONS, [])
    with pytest.raises(ValueError, match="duplicate region codes us-east-1"):
        optimise([*REGIONS, BY_CODE["us-east-1"]], groups, k_values=[1])
    with pytest.raises(ValueError, match="no monthly cost for"):
        optimise(REGIONS, groups, k_values=[1], costs={"us-east-1": 1.0})
    with pytest.raises(ValueError, match="unknown region codes mars-1"):
        optimise(REGIONS, groups, k_values=[1], costs=dict.fromkeys([*BY_CODE, "mars-1"], 1.0))
    with pytest.raises(ValueError, match="target_p95_ms"):
        optimise(REGIONS, groups, k_values=[1], target_p95_ms=0.0)
    with pytest.raises(ValueError, match="weight"):
        DemandGroup(country="US", continent="NA", lat=0, lon=0, weight=0.0)
    with pytest.raises(ValueError, match="weight"):
        DemandGroup(country="US", continent="NA", lat=0, lon=0, weight=-2.0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        exact_best(np.ones((2, 3)), np.ones(2), 0)
