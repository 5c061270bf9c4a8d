"""Shipped regions, GeoNames countries, and country demand turned into demand points."""

from __future__ import annotations

import numpy as np
import pytest

from decisions.regions import brute_force_best, optimise, rtt_matrix, weighted_quantile
from runbooks import geodata
from runbooks.geodata import FALLBACK_POINTS, country_info, demand_groups, load_regions


def test_shipped_regions() -> None:
    regions = load_regions()
    assert len(regions) == 34
    assert len({r.code for r in regions}) == 34
    virginia = next(r for r in regions if r.code == "us-east-1")
    assert virginia.name == "US East (N. Virginia)"
    assert (virginia.lat, virginia.lon) == (39.04, -77.49)
    assert [r.code for r in load_regions(["eu-west-1", "us-east-1"])] == ["eu-west-1", "us-east-1"]


def test_unknown_region_code_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown region code\(s\) mars-north-1; valid: af-south"):
        load_regions(["eu-west-1", "mars-north-1"])


def test_country_info() -> None:
    assert country_info("DE") == ("Germany", "EU")
    assert country_info("br") == ("Brazil", "SA")
    with pytest.raises(ValueError, match="'XX'"):
        country_info("XX")


def test_demand_groups_conserve_weight_and_split_big_countries() -> None:
    groups = demand_groups({"US": 700.0, "LU": 2.0, "de": 300.0})
    assert sum(g.weight for g in groups) == pytest.approx(1002.0)
    by_country = {c: [g for g in groups if g.country == c] for c in ("US", "LU", "DE")}
    assert len(by_country["US"]) >= 10  # coasts, south, midwest... not one point
    assert len(by_country["LU"]) == 1
    assert sum(g.weight for g in by_country["DE"]) == pytest.approx(300.0)
    assert {g.continent for g in by_country["US"]} == {"NA"}
    assert all(g.key and g.key.startswith(g.country + "@") for g in groups)
    assert len({g.key for g in groups}) == len(groups)
    # Bigger cells, fewer points; conservation does not depend on the cell size.
    coarse = demand_groups({"US": 700.0}, cell_degrees=20.0)
    assert 1 <= len(coarse) < len(by_country["US"])
    assert sum(g.weight for g in coarse) == pytest.approx(700.0)


def test_world_wide_demand_stays_in_the_hundreds() -> None:
    countries = geodata._countries()
    groups = demand_groups({c: max(float(v["population"]), 1.0) for c, v in countries.items()})
    assert {g.country for g in groups} == set(countries)
    assert 250 <= len(groups) < 1000


def test_countries_without_cities_fall_back_to_a_documented_point() -> None:
    without = set(geodata._countries()) - set(geodata._cities_by_country())
    assert without <= set(FALLBACK_POINTS)
    (group,) = demand_groups({"AQ": 3.0})
    assert (group.lat, group.lon, group.weight, group.continent) == (-77.85, 166.67, 3.0, "AN")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "empty demand"),
        ({"ZZ": 1.0}, "'ZZ'"),
        ({"US": 0.0}, "weight of 'US'"),
        ({"US": -1.0}, "weight of 'US'"),
        ({"US": float("nan")}, "weight of 'US'"),
    ],
)
def test_bad_demand_is_refused(weights: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        demand_groups(weights)


def test_known_geography_exact_equals_brute_force_and_meets_the_target() -> None:
    """Issue 5's acceptance on the shipped regions: demand from a known set of countries."""
    weights = {"US": 40.0, "BR": 8.0, "DE": 12.0, "GB": 9.0, "IN": 10.0, "JP": 8.0, "AU": 4.0}
    groups = demand_groups(weights | {"ZA": 1.0, "SG": 1.0, "MX": 1.0})
    regions = load_regions()
    report = optimise(regions, groups, k_values=range(1, 5))
    rtt = rtt_matrix(groups, sorted(regions, key=lambda r: r.code))
    codes = sorted(r.code for r in regions)
    w = np.array([g.weight for g in groups])
    for result in report.per_k:
        brute = brute_force_best(rtt, w, result.k)
        assert result.best.regions == tuple(codes[i] for i in brute)
        latency = rtt[:, list(brute)].min(axis=1)
        assert result.best.p95_ms == weighted_quantile(latency, w, 0.95)
    assert report.recommended is not None
    assert report.recommended.p95_ms < 100.0
    assert set(report.routing_map) == {g.country for g in groups}
    assert report.routed_p95_ms >= report.model_p95_ms  # one region per country is no better
