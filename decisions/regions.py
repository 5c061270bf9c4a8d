"""Which k regions serve our users best: the pure core of the ``select-regions`` runbook.

The question the recipe card answers by eyeballing a map: *given where the demand is, which k
regions minimise the latency of the slow tail, how many do we need to meet the target, and
which region should each country be routed to?* This module answers it from demand points and
candidate regions alone (no I/O: :mod:`runbooks.geodata` loads both).

Model, and why:

- **Latency**: RTT = ``base_ms + ms_per_100km * great-circle km / 100``. The defaults (14 ms,
  1.57 ms per 100 km) are a fit on published cloud inter-region RTT matrices (see
  ``DESIGN.md``, "Reference figures"); general Internet paths are slower (~2.1 per 100 km), so
  a measured matrix, when there is one, overrides the formula pair by pair.
- **Routing**: every demand group is served by its lowest-RTT region of the chosen set. This is
  what latency-based routing approximates and keeps the objective monotone: adding a region
  never makes anyone slower, so P95 never gets worse with k. What Route 53 *geolocation*
  delivers (one region per country) is reported next to it as the "as routed" P95.
- **Quantiles** are demand-weighted and exact on the data: ``P_q`` is the smallest RTT ``x``
  such that the groups at or below ``x`` hold at least ``q`` of the demand (no interpolation,
  so every figure is the RTT of a real group).

Optimisation, and why it is exact *and* fast: ``P95(S) <= T`` holds exactly when the groups
within ``T`` of some region of ``S`` hold 95 % of the demand, i.e. when a weighted max-coverage
problem at threshold ``T`` reaches 95 %. So the optimal P95 is the smallest RTT value of the
matrix at which some k-set covers 95 %: a binary search over those values, first probing just
below a greedy + local-search incumbent (usually optimal, so one probe proves it). Each probe
enumerates k-sets in lexicographic order, level by level, vectorised over the whole frontier,
and prunes a partial set when even its coverage plus the largest marginal gains still open to
it (an upper bound, by submodularity of coverage) cannot reach 95 %; the gains of a whole
frontier are one matrix product. Ties are broken as stated: lower P50 (searched the same way,
among the sets of optimal P95), then the lexicographically smallest sorted region codes (the
first set the lexicographic enumeration meets). The cheapest set meeting the target is found
the same way, with a cost budget bisected and pruned alongside coverage. Brute force
(:func:`brute_force_best`) stays as the reference the tests and the benchmark compare against
(34 regions, 250 groups, k = 5: ~0.05-0.1 s against ~5 s on two cores). Above ``exact_limit``
the result comes from the greedy + local search and is flagged ``method="greedy"`` (greedy
max-coverage is within 1 - 1/e of the best coverage; no bound holds for the P95 itself).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

EARTH_RADIUS_KM = 6371.0088
P95 = 0.95
P50 = 0.5
# Coverage sums are compared with this relative slack, the same in every path (exact, brute
# force, greedy), so that summation order never decides a tie.
_SLACK = 1e-9
# A probe listing more sets than this bisects on, instead of evaluating each to jump down.
_EVALUATE_LIMIT = 20_000
_CHUNK = 4096
# Partial sets expanded at once: large for whole listings (vectorised), small when only the
# lexicographically first set is wanted (it stops early).
_FRONTIER_CHUNK = 1 << 16
_FIRST_CHUNK = 512


class Region(BaseModel):
    """A candidate region and where it is (AWS publishes no coordinates: see geodata)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(min_length=1)
    name: str = ""
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class DemandGroup(BaseModel):
    """Demand located at one point: the unit the optimiser routes.

    ``key`` names the group in a measured latency matrix (e.g. ``US@35:-80``, the grid cell
    :func:`runbooks.geodata.demand_groups` made it from); ``country`` is used when no key entry
    exists, and by the geolocation routing map.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    country: str = Field(min_length=2, max_length=2)
    continent: str = Field(min_length=2, max_length=2)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    weight: float = Field(gt=0, allow_inf_nan=False)
    key: str | None = None


class LatencyModel(BaseModel):
    """RTT from distance, overridden pair by pair by measurements.

    ``matrix`` maps ``(group key or country, region code)`` to a measured RTT in ms; a group's
    own key wins over its country.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_ms: float = Field(14.0, ge=0, allow_inf_nan=False)
    ms_per_100km: float = Field(1.57, gt=0, allow_inf_nan=False)
    matrix: dict[tuple[str, str], float] | None = None

    @field_validator("matrix", mode="before")
    @classmethod
    def _pairs_from_json(cls, value: object) -> object:
        """JSON has no tuple keys: ``"US,eu-west-1"`` (how pydantic dumps a pair) reads back."""
        if isinstance(value, Mapping):
            return {
                tuple(key.rsplit(",", 1)) if isinstance(key, str) else key: rtt
                for key, rtt in value.items()
            }
        return value

    @field_validator("matrix")
    @classmethod
    def _positive_rtts(
        cls, value: dict[tuple[str, str], float] | None
    ) -> dict[tuple[str, str], float] | None:
        for (source, region), rtt in (value or {}).items():
            if not math.isfinite(rtt) or rtt < 0:
                raise ValueError(f"matrix: RTT for ({source}, {region}) must be >= 0, got {rtt}")
        return value

    def rtt_ms(self, km: np.ndarray | float) -> np.ndarray | float:
        """The formula alone: RTT for a great-circle distance in km."""
        return self.base_ms + self.ms_per_100km * np.asarray(km) / 100.0


class ContinentLatency(BaseModel):
    """Latency of one continent's demand under a region set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    continent: str
    demand_share: float
    p50_ms: float
    p95_ms: float


class RegionChoice(BaseModel):
    """One region set and what it delivers (model routing: each group to its nearest region)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int
    regions: tuple[str, ...]
    p50_ms: float
    p95_ms: float
    meets_target: bool
    per_continent: tuple[ContinentLatency, ...]
    served_share: dict[str, float] = Field(description="Region -> share of the demand it serves.")
    monthly_cost: float | None = None
    method: Literal["exact", "greedy"]


class KResult(BaseModel):
    """The answers for one k: the lowest-P95 set, and the cheapest set meeting the target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int
    best: RegionChoice
    cheapest: RegionChoice | None = Field(
        None, description="With costs: the cheapest set meeting the target, None if none does."
    )


class RegionReport(BaseModel):
    """Everything ``select-regions`` decides, for the artifacts and for ``geo-routing``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_p95_ms: float
    candidates: tuple[str, ...]
    demand_groups: int
    total_weight: float
    model: LatencyModel
    per_k: tuple[KResult, ...]
    recommended_k: int | None
    recommended: RegionChoice | None = Field(
        None, description="The lowest-P95 set of the recommended k."
    )
    reason: str
    routing_k: int = Field(description="The k whose best set the routing map routes to.")
    routing_map: dict[str, str] = Field(description="Country (ISO 3166-1 alpha-2) -> region.")
    routed_p50_ms: float = Field(description="P50 when each country goes to its mapped region.")
    routed_p95_ms: float = Field(description="P95 when each country goes to its mapped region.")
    model_p95_ms: float = Field(description="P95 of the same set, each group to its nearest.")


# --- distances and latencies ---------------------------------------------------------------


def haversine_km(
    lat1: np.ndarray | float,
    lon1: np.ndarray | float,
    lat2: np.ndarray | float,
    lon2: np.ndarray | float,
) -> np.ndarray:
    """Great-circle distance in km (broadcasting), on a sphere of the mean Earth radius.

    The sphere errs by < 0.5 % against the ellipsoid: far below the spread of real RTTs.
    """
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlambda = np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def rtt_matrix(
    groups: Sequence[DemandGroup], regions: Sequence[Region], model: LatencyModel | None = None
) -> np.ndarray:
    """RTT in ms, groups x regions: the formula, then the measured entries over it."""
    model = model or LatencyModel()
    glat = np.array([g.lat for g in groups], dtype=float)[:, None]
    glon = np.array([g.lon for g in groups], dtype=float)[:, None]
    rlat = np.array([r.lat for r in regions], dtype=float)[None, :]
    rlon = np.array([r.lon for r in regions], dtype=float)[None, :]
    rtt = np.asarray(model.rtt_ms(haversine_km(glat, glon, rlat, rlon)), dtype=float)
    if model.matrix:
        for j, region in enumerate(regions):
            for i, group in enumerate(groups):
                measured = model.matrix.get((group.key or "", region.code))
                if measured is None:
                    measured = model.matrix.get((group.country, region.code))
                if measured is not None:
                    rtt[i, j] = measured
    return rtt


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative weight reaches ``q`` of the total (no interpolation).

    Every quantile this module reports is computed by this one definition (vectorised in
    :func:`_quantiles`), so the exact search, brute force and the report agree to the bit.
    """
    values = np.asarray(values, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if values.ndim != 1 or values.shape != weights.shape or values.size == 0:
        raise ValueError("values and weights must be non-empty 1-D arrays of the same length")
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    if np.any(weights <= 0) or not np.all(np.isfinite(weights)):
        raise ValueError("weights must be positive and finite")
    return float(_quantiles(values[:, None], weights, q)[0, 0])


def _need(weights: np.ndarray, q: float) -> float:
    total = float(weights.sum())
    return q * total - _SLACK * total


def _quantiles(latency: np.ndarray, weights: np.ndarray, *qs: float) -> np.ndarray:
    """Weighted quantiles of each column of ``latency`` (groups x sets): shape (len(qs), sets).

    One sort serves every quantile asked for.
    """
    order = np.argsort(latency, axis=0)
    ordered = np.take_along_axis(latency, order, axis=0)
    cumulative = np.cumsum(weights[order], axis=0)
    columns = np.arange(latency.shape[1])
    return np.stack(
        [ordered[np.argmax(cumulative >= _need(weights, q), axis=0), columns] for q in qs]
    )


def _evaluate(rtt: np.ndarray, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """P95 and P50 of each row of region indices, chunked: shape (n, 2)."""
    out = np.empty((len(rows), 2))
    for start in range(0, len(rows), _CHUNK):
        latency = rtt[:, rows[start : start + _CHUNK]].min(axis=2)  # groups x sets
        out[start : start + _CHUNK] = _quantiles(latency, weights, P95, P50).T
    return out


def _best_row(rows: np.ndarray, scores: np.ndarray) -> tuple[int, ...]:
    """The row with the lowest (P95, P50), then the lexicographically smallest."""
    keys = [rows[:, c] for c in reversed(range(rows.shape[1]))]
    best = np.lexsort([*keys, scores[:, 1], scores[:, 0]])[0]
    return tuple(int(i) for i in rows[best])


# --- exact search ----------------------------------------------------------------------------


def _suffix_top_sums(values: np.ndarray, m: int, pad: float = 0.0) -> np.ndarray:
    """``out[:, r]`` = sum of the ``m`` largest values in columns after ``r`` (0 if m == 0).

    Where fewer than ``m`` columns follow, ``pad`` fills in: 0 for gains (>= 0, so it only
    loosens the bound), -inf for negated costs (no set can be completed there).
    """
    rows, cols = values.shape
    out = np.zeros((rows, cols))
    if m == 0:
        return out
    top = np.full((rows, m), pad)
    for r in range(cols - 1, -1, -1):
        out[:, r] = top.sum(axis=1)
        if m == 1:
            np.maximum(top[:, 0], values[:, r], out=top[:, 0])
        else:
            top = np.sort(np.concatenate([top, values[:, r : r + 1]], axis=1), axis=1)[:, 1:]
    return out


def feasible_sets(
    rtt: np.ndarray,
    weights: np.ndarray,
    k: int,
    constraints: Sequence[tuple[float, float]],
    budget: tuple[np.ndarray, float] | None = None,
    *,
    first: bool = False,
) -> np.ndarray:
    """Every k-set (sorted column indices, in lexicographic order) meeting all constraints.

    A constraint ``(threshold_ms, q)`` holds when the groups within ``threshold_ms`` of the set
    hold ``q`` of the demand, i.e. when the set's ``P_q <= threshold_ms``. Level by level, a
    partial set followed by region ``r`` survives only if its coverage + the gain of ``r`` +
    the ``j - 1`` largest gains after ``r`` (an upper bound: coverage is submodular) can still
    reach ``q``; the gains of a whole frontier are one matrix product per constraint.
    ``budget`` = (cost per column, most a set may cost) also prunes by cost: a partial set's cost
    + the cost of ``r`` + the ``j - 1`` cheapest columns after ``r`` must fit in it.
    Frontiers are expanded depth first in chunks, in lexicographic order, so ``first`` (only
    the lexicographically first set, or none) stops at the first chunk holding one.
    """
    n_groups, n_regions = rtt.shape
    covers = [(rtt <= threshold).astype(float) for threshold, _ in constraints]
    needs = [_need(weights, q) for _, q in constraints]
    columns = np.arange(n_regions)
    chunk = _FIRST_CHUNK if first else _FRONTIER_CHUNK
    found: list[np.ndarray] = []

    def expand(
        rows: np.ndarray, uncovered: list[np.ndarray], covered: list[np.ndarray], spent: np.ndarray
    ) -> bool:
        """Expands one chunk of partial sets; True once ``first`` has its set."""
        level = rows.shape[1]
        left = k - level
        last = rows[:, -1] if level else np.full(len(rows), -1)
        ok = (columns[None, :] > last[:, None]) & (columns[None, :] <= n_regions - left)
        gains_per = []
        for c, cover in enumerate(covers):
            gains = np.where(uncovered[c], weights, 0.0) @ cover
            gains_per.append(gains)
            ok &= covered[c][:, None] + gains + _suffix_top_sums(gains, left - 1) >= needs[c]
        if budget is not None:
            cost, most = budget
            cheapest_after = -_suffix_top_sums(-cost[None, :], left - 1, -np.inf)[0]
            ok &= spent[:, None] + cost + cheapest_after <= most
        parent, region = np.nonzero(ok)  # row-major: lexicographic order is kept
        if left == 1:
            if len(parent):
                found.append(np.concatenate([rows[parent], region[:, None]], axis=1))
            return first and bool(found)
        for start in range(0, len(parent), chunk):
            p, r = parent[start : start + chunk], region[start : start + chunk]
            if expand(
                np.concatenate([rows[p], r[:, None]], axis=1),
                [u[p] & (cover[:, r].T == 0) for u, cover in zip(uncovered, covers, strict=True)],
                [cv[p] + g[p, r] for cv, g in zip(covered, gains_per, strict=True)],
                spent[p] + (budget[0][r] if budget is not None else 0.0),
            ):
                return True
        return False

    expand(
        np.zeros((1, 0), dtype=np.int64),
        [np.ones((1, n_groups), dtype=bool) for _ in constraints],
        [np.zeros(1) for _ in constraints],
        np.zeros(1),
    )
    if not found:
        return np.zeros((0, k), dtype=np.int64)
    return found[0][:1] if first else np.concatenate(found)


def _greedy(rtt: np.ndarray, weights: np.ndarray, k: int) -> tuple[int, ...]:
    """Greedy additions, then best-improvement swaps until none helps: the incumbent."""
    n_regions = rtt.shape[1]
    chosen: list[int] = []
    while len(chosen) < k:
        options = [r for r in range(n_regions) if r not in chosen]
        rows = np.array([sorted([*chosen, r]) for r in options])
        chosen = list(_best_row(rows, _evaluate(rtt, weights, rows)))
    current = tuple(sorted(chosen))
    current_score = _evaluate(rtt, weights, np.array([current]))[0]
    while k < n_regions:
        swaps = [
            tuple(sorted((*(c for c in current if c != out), into)))
            for out in current
            for into in range(n_regions)
            if into not in current
        ]
        rows = np.array(swaps)
        scores = _evaluate(rtt, weights, rows)
        best = _best_row(rows, scores)
        best_score = scores[swaps.index(best)]
        if (best_score[0], best_score[1]) >= (current_score[0], current_score[1]):
            break
        current, current_score = best, best_score
    return current


def exact_best(rtt: np.ndarray, weights: np.ndarray, k: int) -> tuple[int, ...]:
    """The k columns minimising weighted P95, then P50, then lexicographically: exact.

    The smallest RTT value at which some k-set covers 95 % of the demand is the optimal P95;
    among the sets reaching it, the smallest value at which one also covers 50 % is the optimal
    P50 (both searched by :func:`_smallest_level`, from the greedy incumbent down). Every set
    meeting both ties on both, and :func:`feasible_sets` lists them in lexicographic order: the
    first one is the answer, whatever the number of ties.
    """
    _check_k(k, rtt.shape[1])
    return _exact(rtt, weights, k, _greedy(rtt, weights, k))


def _exact(
    rtt: np.ndarray,
    weights: np.ndarray,
    k: int,
    incumbent: tuple[int, ...],
    budget: tuple[np.ndarray, float] | None = None,
) -> tuple[int, ...]:
    """:func:`exact_best` from a given incumbent, among the sets within ``budget`` if given."""
    levels = np.unique(rtt)
    inc95, inc50 = _evaluate(rtt, weights, np.array([incumbent]))[0]
    p95, bound50 = _smallest_level(rtt, weights, k, levels, inc95, [], P95, budget)
    if inc95 == p95:
        bound50 = inc50 if bound50 is None else min(bound50, inc50)
    if bound50 is None:
        bound50 = float(levels[levels <= p95][-1])  # P50 <= P95, always
    p50, _ = _smallest_level(rtt, weights, k, levels, bound50, [(p95, P95)], P50, budget)
    first = feasible_sets(rtt, weights, k, [(p95, P95), (p50, P50)], budget, first=True)[0]
    return tuple(int(i) for i in first)


def _smallest_level(
    rtt: np.ndarray,
    weights: np.ndarray,
    k: int,
    levels: np.ndarray,
    feasible: float,
    fixed: list[tuple[float, float]],
    q: float,
    budget: tuple[np.ndarray, float] | None = None,
) -> tuple[float, float | None]:
    """The smallest RTT value ``x`` such that some k-set has ``P_q <= x`` and meets ``fixed``.

    ``feasible`` is a value known to be reached. Probes just below the best value known (a
    local optimum usually is the optimum: one probe proves it), bisects after a failed probe,
    and jumps down to the best value among the sets a successful probe lists. Also returns,
    when known, the lowest P50 among sets reaching the answer (for the P50 search).
    """
    lo, hi = 0, int(np.searchsorted(levels, feasible))
    best50: float | None = None
    probe = hi - 1
    while lo < hi:
        rows = feasible_sets(rtt, weights, k, [*fixed, (float(levels[probe]), q)], budget)
        if len(rows):
            hi, best50 = probe, None
            if len(rows) <= _EVALUATE_LIMIT:
                scores = _evaluate(rtt, weights, rows)[:, 0 if q == P95 else 1]
                hi = int(np.searchsorted(levels, scores.min()))
                if q == P95:
                    best50 = float(_evaluate(rtt, weights, rows)[scores == scores.min(), 1].min())
            probe = hi - 1
        else:
            lo = probe + 1
            probe = (lo + hi) // 2
    return float(levels[hi]), best50


def brute_force_best(rtt: np.ndarray, weights: np.ndarray, k: int) -> tuple[int, ...]:
    """The reference: every k-set evaluated (vectorised in chunks), same tie-breaks."""
    _check_k(k, rtt.shape[1])
    rows = np.array(list(itertools.combinations(range(rtt.shape[1]), k)), dtype=np.int64)
    return _best_row(rows, _evaluate(rtt, weights, rows))


def greedy_best(rtt: np.ndarray, weights: np.ndarray, k: int) -> tuple[int, ...]:
    """Greedy additions + swap local search: no optimality guarantee, flagged as such."""
    _check_k(k, rtt.shape[1])
    return _greedy(rtt, weights, k)


def _check_k(k: int, n_regions: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n_regions:
        raise ValueError(f"k ({k}) is above the number of candidate regions ({n_regions})")


# --- the report ------------------------------------------------------------------------------


def optimise(
    regions: Sequence[Region],
    groups: Sequence[DemandGroup],
    *,
    k_values: Iterable[int] = range(2, 6),
    target_p95_ms: float = 100.0,
    costs: Mapping[str, float] | None = None,
    model: LatencyModel | None = None,
    exact_limit: int = 5,
) -> RegionReport:
    """For each k, the lowest-P95 region set (and the cheapest meeting the target), the
    recommended k, and the country -> region map for Route 53 geolocation.

    ``recommended_k`` is the smallest k whose best set meets ``target_p95_ms``; the routing map
    routes to that set, or to the best set of the k with the lowest P95 when none meets it.
    """
    model = model or LatencyModel()
    candidates, weights, cost_vector = _validated(regions, groups, costs, target_p95_ms)
    ks = sorted(set(k_values))
    if not ks:
        raise ValueError("k_values must not be empty")
    for k in ks:
        _check_k(k, len(candidates))
    if exact_limit < 0:
        raise ValueError(f"exact_limit must be >= 0, got {exact_limit}")
    rtt = rtt_matrix(groups, candidates, model)
    codes = tuple(r.code for r in candidates)

    def choice(rows: tuple[int, ...], method: Literal["exact", "greedy"]) -> RegionChoice:
        return _choice(rtt, weights, groups, codes, rows, method, target_p95_ms, cost_vector)

    per_k = []
    for k in ks:
        exact = k <= exact_limit or k == len(codes)
        method: Literal["exact", "greedy"] = "exact" if exact else "greedy"
        best_rows = exact_best(rtt, weights, k) if exact else greedy_best(rtt, weights, k)
        best = choice(best_rows, method)
        cheapest = None
        if cost_vector is not None:
            cheap_rows = (
                _cheapest_exact(rtt, weights, k, target_p95_ms, cost_vector, best, best_rows)
                if exact
                else _cheapest_greedy(rtt, weights, target_p95_ms, cost_vector, best, best_rows)
            )
            cheapest = None if cheap_rows is None else choice(cheap_rows, method)
        per_k.append(KResult(k=k, best=best, cheapest=cheapest))

    meeting = [r for r in per_k if r.best.meets_target]
    if meeting:
        routed = meeting[0]
        recommended_k: int | None = routed.k
        reason = (
            f"k={routed.k} is the smallest k whose P95 ({routed.best.p95_ms:.1f} ms) meets "
            f"the {target_p95_ms:g} ms target"
        )
    else:
        routed = min(per_k, key=lambda r: (r.best.p95_ms, r.k))
        recommended_k = None
        reason = (
            f"no k in {ks[0]}..{ks[-1]} meets the {target_p95_ms:g} ms P95 target; the best is "
            f"k={routed.k} at {routed.best.p95_ms:.1f} ms (routing map built for it)"
        )
    routing_map, routed_p95, routed_p50 = _routing(rtt, weights, groups, codes, routed.best)
    return RegionReport(
        target_p95_ms=target_p95_ms,
        candidates=codes,
        demand_groups=len(groups),
        total_weight=float(weights.sum()),
        model=model,
        per_k=tuple(per_k),
        recommended_k=recommended_k,
        recommended=routed.best if meeting else None,
        reason=reason,
        routing_k=routed.k,
        routing_map=routing_map,
        routed_p50_ms=routed_p50,
        routed_p95_ms=routed_p95,
        model_p95_ms=routed.best.p95_ms,
    )


def _validated(
    regions: Sequence[Region],
    groups: Sequence[DemandGroup],
    costs: Mapping[str, float] | None,
    target_p95_ms: float,
) -> tuple[tuple[Region, ...], np.ndarray, np.ndarray | None]:
    """Candidates sorted by code (so index order is code order), weights, cost per candidate."""
    if not regions:
        raise ValueError("regions: no candidate regions")
    codes = [r.code for r in regions]
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise ValueError(f"regions: duplicate region codes {', '.join(duplicates)}")
    if not groups:
        raise ValueError("demand: no demand groups (empty demand)")
    weights = np.array([g.weight for g in groups], dtype=float)
    if np.any(weights <= 0) or not np.all(np.isfinite(weights)):
        raise ValueError("demand: weights must be positive and finite")
    if not math.isfinite(target_p95_ms) or target_p95_ms <= 0:
        raise ValueError(f"target_p95_ms must be > 0, got {target_p95_ms}")
    candidates = tuple(sorted(regions, key=lambda r: r.code))
    cost_vector = None
    if costs is not None:
        unknown = sorted(set(costs) - set(codes))
        if unknown:
            raise ValueError(f"costs: unknown region codes {', '.join(unknown)}")
        missing = [r.code for r in candidates if r.code not in costs]
        if missing:
            raise ValueError(f"costs: no monthly cost for {', '.join(missing)}")
        cost_vector = np.array([float(costs[r.code]) for r in candidates])
        bad = [c for c, v in zip(candidates, cost_vector, strict=True) if not v >= 0]
        if bad or not np.all(np.isfinite(cost_vector)):
            raise ValueError(f"costs: must be finite and >= 0 ({', '.join(r.code for r in bad)})")
    return candidates, weights, cost_vector


def _choice(
    rtt: np.ndarray,
    weights: np.ndarray,
    groups: Sequence[DemandGroup],
    codes: tuple[str, ...],
    rows: tuple[int, ...],
    method: Literal["exact", "greedy"],
    target_p95_ms: float,
    cost_vector: np.ndarray | None,
) -> RegionChoice:
    columns = np.array(rows)
    sub = rtt[:, columns]
    latency = sub.min(axis=1)
    served = columns[np.argmin(sub, axis=1)]  # ties: the lower code
    total = float(weights.sum())
    p95, p50 = _quantiles(latency[:, None], weights, P95, P50)[:, 0]
    continents = np.array([g.continent for g in groups])
    per_continent = []
    for continent in sorted(set(continents.tolist())):
        mask = continents == continent
        c95, c50 = _quantiles(latency[mask][:, None], weights[mask], P95, P50)[:, 0]
        per_continent.append(
            ContinentLatency(
                continent=continent,
                demand_share=float(weights[mask].sum()) / total,
                p50_ms=float(c50),
                p95_ms=float(c95),
            )
        )
    share = {codes[c]: float(weights[served == c].sum()) / total for c in rows}
    return RegionChoice(
        k=len(rows),
        regions=tuple(codes[c] for c in rows),
        p50_ms=float(p50),
        p95_ms=float(p95),
        meets_target=bool(p95 <= target_p95_ms),
        per_continent=tuple(per_continent),
        served_share=share,
        monthly_cost=None if cost_vector is None else float(cost_vector[columns].sum()),
        method=method,
    )


def _cheapest_exact(
    rtt: np.ndarray,
    weights: np.ndarray,
    k: int,
    target_p95_ms: float,
    cost_vector: np.ndarray,
    best: RegionChoice,
    best_rows: tuple[int, ...],
) -> tuple[int, ...] | None:
    """The cheapest k-set meeting the target; ties: lower P95, P50, then codes. Exact.

    The least cost is bisected between the k cheapest regions and the lowest-P95 set (which
    meets the target whenever any set does): each probe lists the sets meeting the target
    within a budget, pruned by coverage and cost alike, and a successful probe drops the upper
    end to the cheapest set it found; the probe just below that proves it. Then the lowest-P95
    set within that least cost is searched exactly as :func:`exact_best` does.
    """
    if not best.meets_target:  # the lowest P95 misses it: so does every set
        return None
    target = [(target_p95_ms, P95)]
    hi = float(cost_vector[list(best_rows)].sum())
    cheapest_rows = best_rows
    lo = float(np.sort(cost_vector)[:k].sum())  # no k-set costs less
    probe = _below(hi)
    while probe >= lo:
        rows = feasible_sets(rtt, weights, k, target, (cost_vector, probe))
        if len(rows):
            costs = cost_vector[rows].sum(axis=1)
            hi = float(costs.min())
            cheapest_rows = tuple(int(i) for i in rows[int(np.argmin(costs))])
            probe = _below(hi)
        else:
            lo = probe
            probe = (lo + hi) / 2 if hi - lo > _tolerance(hi) else _below(lo)
    if float(cost_vector[list(best_rows)].sum()) <= hi + _tolerance(hi):
        return best_rows  # the lowest (P95, P50, codes) of all sets is among the cheapest
    return _exact(rtt, weights, k, cheapest_rows, (cost_vector, hi + _tolerance(hi)))


def _tolerance(cost: float) -> float:
    """Sums of the same costs in another order may differ in the last bits: not a real gap."""
    return 1e-9 * max(1.0, abs(cost))


def _below(cost: float) -> float:
    return cost - 2 * _tolerance(cost)


def _cheapest_greedy(
    rtt: np.ndarray,
    weights: np.ndarray,
    target_p95_ms: float,
    cost_vector: np.ndarray,
    best: RegionChoice,
    best_rows: tuple[int, ...],
) -> tuple[int, ...] | None:
    """From the greedy set, swaps that lower the cost while meeting the target (heuristic)."""
    if not best.meets_target:
        return None
    current = best_rows
    n_regions = rtt.shape[1]
    while True:
        swaps = np.array(
            [
                sorted((*(c for c in current if c != out), into))
                for out in current
                for into in range(n_regions)
                if into not in current and cost_vector[into] < cost_vector[out]
            ],
            dtype=np.int64,
        ).reshape(-1, len(current))
        if not len(swaps):
            return current
        scores = _evaluate(rtt, weights, swaps)
        ok = scores[:, 0] <= target_p95_ms
        if not ok.any():
            return current
        cost = cost_vector[swaps[ok]].sum(axis=1)
        cheapest = swaps[ok][cost == cost.min()]
        current = _best_row(cheapest, _evaluate(rtt, weights, cheapest))


def _routing(
    rtt: np.ndarray,
    weights: np.ndarray,
    groups: Sequence[DemandGroup],
    codes: tuple[str, ...],
    choice: RegionChoice,
) -> tuple[dict[str, str], float, float]:
    """Country -> the region serving most of its demand; and P95, P50 when routed that way."""
    index = {code: i for i, code in enumerate(codes)}
    columns = np.array([index[c] for c in choice.regions])
    served = columns[np.argmin(rtt[:, columns], axis=1)]
    demand: dict[str, dict[int, float]] = {}
    for group, region, weight in zip(groups, served, weights, strict=True):
        per_region = demand.setdefault(group.country, {})
        per_region[int(region)] = per_region.get(int(region), 0.0) + float(weight)
    mapping = {
        country: codes[min(per_region, key=lambda r: (-per_region[r], r))]
        for country, per_region in sorted(demand.items())
    }
    routed_columns = np.array([index[mapping[g.country]] for g in groups])
    latency = rtt[np.arange(len(groups)), routed_columns]
    p95, p50 = _quantiles(latency[:, None], weights, P95, P50)[:, 0]
    return mapping, float(p95), float(p50)
