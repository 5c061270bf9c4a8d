"""What tracing-rollout reads from spans: cross-service calls and their mermaid map, coverage per
service, latency attribution along the critical path, and the binomial check of the head
sampler's share (0.1 of 1,000 requests: 100 within about ±30 at 99.9 %)."""

from __future__ import annotations

import random

import pytest

from decisions.spans import Span, SpanKind, SpanStatus
from decisions.trace_analysis import (
    ShareCheck,
    coverage,
    critical_path,
    dependency_edges,
    latency_attribution,
    mermaid_graph,
    percentile,
    sampled_share_within,
    self_time_ns,
)

pytestmark = pytest.mark.unit

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


def span(
    trace: int,
    sid: int,
    parent: int | None,
    service: str,
    start_ms: float,
    end_ms: float,
    name: str = "op",
    kind: SpanKind = SpanKind.SERVER,
) -> Span:
    return Span(
        trace_id=f"{trace:032x}",
        span_id=f"{sid:016x}",
        parent_span_id=None if parent is None else f"{parent:016x}",
        service=service,
        name=name,
        kind=kind,
        start_ns=T0 + int(start_ms * MS),
        end_ns=T0 + int(end_ms * MS),
        status=SpanStatus.UNSET,
    )


def purchase(trace: int) -> list[Span]:
    """frontend GET /buy (0-100 ms) -> client -> checkout POST /checkout (10-80)
    -> client -> payments POST /pay (30-70)."""
    return [
        span(trace, 1, None, "frontend", 0, 100, "GET /buy"),
        span(trace, 2, 1, "frontend", 5, 85, "POST", SpanKind.CLIENT),
        span(trace, 3, 2, "checkout", 10, 80, "POST /checkout"),
        span(trace, 4, 3, "checkout", 25, 75, "POST", SpanKind.CLIENT),
        span(trace, 5, 4, "payments", 30, 70, "POST /pay"),
    ]


# --------------------------------------------------------------------------- dependency map


def test_edges_follow_parent_child_pairs_across_services() -> None:
    spans = purchase(1) + purchase(2)
    orphan = span(3, 9, 8, "payments", 0, 1)  # its parent was not sampled / not stored
    assert dependency_edges([*spans, orphan]) == {
        ("checkout", "payments"): 2,
        ("frontend", "checkout"): 2,
    }
    assert dependency_edges([]) == {}


def test_parents_are_looked_up_within_their_own_trace() -> None:
    a = span(1, 1, None, "frontend", 0, 10)
    b = span(2, 2, 1, "checkout", 1, 2)  # same parent id, other trace
    assert dependency_edges([a, b]) == {}


def test_mermaid_graph_shows_the_chain_with_counts() -> None:
    text = mermaid_graph(dependency_edges(purchase(1)))
    assert text.splitlines() == [
        "graph LR",
        '    s0["checkout"]',
        '    s1["frontend"]',
        '    s2["payments"]',
        "    s0 -->|1| s2",
        "    s1 -->|1| s0",
    ]


def test_mermaid_names_are_escaped_and_isolated_services_shown() -> None:
    text = mermaid_graph({('we"b <ui>', "end #1"): 3}, services=["lonely\nsvc"])
    assert '["we#quot;b #lt;ui#gt;"]' in text
    assert '["end #35;1"]' in text
    assert '["lonely svc"]' in text
    assert "-->|3|" in text
    assert mermaid_graph({}) == "graph LR"


# --------------------------------------------------------------------------- coverage


def test_coverage_counts_spans_traces_and_the_observed_ratio() -> None:
    spans = purchase(1) + purchase(2) + [span(3, 1, None, "frontend", 0, 1)]
    rows = coverage(spans, ["frontend", "payments", "search"], requests_sent=10)
    assert [(r.service, r.spans, r.traces, r.sample_ratio, r.reporting) for r in rows] == [
        ("frontend", 5, 3, 0.3, True),
        ("payments", 2, 2, 0.2, True),
        ("search", 0, 0, 0.0, False),
    ]
    assert coverage(spans, ["frontend"], requests_sent=0)[0].sample_ratio is None
    with pytest.raises(ValueError, match="requests_sent"):
        coverage(spans, ["frontend"], requests_sent=-1)


# --------------------------------------------------------------------------- latency


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10
    assert percentile(values, 99) == 20
    assert percentile(values, 100) == 20
    assert percentile([7.0], 1) == 7
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 0)


def test_self_time_subtracts_the_union_of_children_clipped() -> None:
    parent = span(1, 1, None, "a", 0, 100)
    children = [
        span(1, 2, 1, "a", 10, 40),
        span(1, 3, 1, "a", 30, 50),  # overlaps the first: counted once
        span(1, 4, 1, "a", 90, 120),  # runs past the parent: clipped at 100
        span(1, 5, 1, "a", 200, 300),  # entirely outside: ignored
        span(1, 6, 1, "a", 45, 48),  # inside an already covered stretch
    ]
    assert self_time_ns(parent, children) == 100 * MS - (40 + 10) * MS
    assert self_time_ns(parent, []) == 100 * MS


def test_critical_path_of_a_chain_sums_to_the_root_duration() -> None:
    path = critical_path(purchase(1))
    ids = {int(k, 16): v / MS for k, v in path.items()}
    assert ids == {1: 20, 2: 10, 3: 20, 4: 10, 5: 40}
    assert sum(path.values()) == 100 * MS


def test_critical_path_follows_the_last_finisher_of_parallel_children() -> None:
    trace = [
        span(1, 1, None, "api", 0, 100),
        span(1, 2, 1, "db", 10, 60),  # still running when cache starts: in its shadow
        span(1, 3, 1, "cache", 20, 90),  # last to finish: on the path
        span(1, 4, 1, "auth", 2, 8),  # finishes before 3 starts: on the path too
        span(1, 5, 1, "late", 95, 130),  # outlives the root: clipped at its end
    ]
    ids = {int(k, 16): v / MS for k, v in critical_path(trace).items()}
    # root: 100..95 late, 95..90 self, 90..20 cache, 20..8 self, 8..2 auth, 2..0 self
    assert ids == {5: 5, 1: 5 + 12 + 2, 3: 70, 4: 6}
    assert 2 not in ids  # db ran in cache's shadow
    assert sum(ids.values()) == 100


def test_critical_path_edge_cases() -> None:
    assert critical_path([]) == {}
    # a child starting before its parent is clipped to the parent's start
    early = [span(1, 1, None, "a", 10, 20), span(1, 2, 1, "b", 0, 15)]
    ids = {int(k, 16): v / MS for k, v in critical_path(early).items()}
    assert ids == {1: 5, 2: 5}
    # two roots (the real root was not stored): the longest one is the trace
    roots = [span(1, 1, 7, "a", 0, 10), span(1, 2, 8, "b", 0, 50)]
    assert {int(k, 16) for k in critical_path(roots)} == {2}
    # once the path reaches the parent's start, earlier children are not looked at
    busy = [span(1, 1, None, "a", 0, 10), span(1, 2, 1, "b", 0, 10), span(1, 3, 1, "c", 0, 5)]
    assert {int(k, 16): v / MS for k, v in critical_path(busy).items()} == {1: 0, 2: 10}
    # a cycle (no root in it) is never walked

    cycle = [span(1, 1, None, "a", 0, 10), span(1, 2, 3, "b", 1, 9), span(1, 3, 2, "c", 2, 8)]
    assert sum(critical_path(cycle).values()) == 10 * MS
    # a span claiming to be its own parent is a root of nothing
    selfish = [span(1, 1, None, "a", 0, 10), span(1, 2, 2, "b", 1, 9)]
    assert sum(critical_path(selfish).values()) == 10 * MS


def test_latency_attribution_ranks_where_time_goes() -> None:
    spans = purchase(1) + purchase(2)
    slow = purchase(3)
    slow[0] = span(3, 1, None, "frontend", 0, 300, "GET /buy")  # 200 ms more in frontend
    rows = latency_attribution(spans + slow)
    top = rows[0]
    assert (top.service, top.operation) == ("frontend", "GET /buy")
    assert top.count == 3
    assert (top.p50_ms, top.p99_ms) == (100.0, 300.0)
    assert top.self_p50_ms == 20.0
    # 20 + 20 + (215 + 5) of 500 ms of critical path
    assert top.critical_path_share == pytest.approx(260 / 500)
    pay = next(r for r in rows if r.service == "payments")
    assert pay.critical_path_share == pytest.approx(120 / 500)
    assert pay.p99_ms == 40.0
    assert sum(r.critical_path_share for r in rows) == pytest.approx(1.0)
    shares = [r.critical_path_share for r in rows]
    assert shares == sorted(shares, reverse=True)
    assert latency_attribution([]) == []


def test_latency_attribution_without_a_root_has_no_share() -> None:
    cycle = [span(1, 1, 2, "a", 0, 10), span(1, 2, 1, "b", 1, 9)]
    rows = latency_attribution(cycle)
    assert {r.critical_path_share for r in rows} == {0.0}


# --------------------------------------------------------------------------- sampling share


def test_the_acceptance_test_tolerance_for_0_1_of_1000() -> None:
    check = sampled_share_within(100, 1000, 0.1)
    assert check == ShareCheck(ok=True, low=0.07, high=0.132)
    ok, low, high = check  # a plain tuple too
    assert ok
    assert low < 0.1 < high
    # about 100 ± 30 traces, as the normal approximation's ±3.29 sigma (31) says
    assert 28 <= 100 - low * 1000 <= 32
    assert 28 <= high * 1000 - 100 <= 34
    assert sampled_share_within(70, 1000, 0.1).ok
    assert not sampled_share_within(69, 1000, 0.1).ok
    assert sampled_share_within(132, 1000, 0.1).ok
    assert not sampled_share_within(133, 1000, 0.1).ok
    assert not sampled_share_within(1000, 1000, 0.1).ok  # always_on instead of 0.1


def test_a_correct_sampler_rarely_fails_and_a_wrong_one_always_does() -> None:
    rng = random.Random(7)
    draws = [sum(rng.random() < 0.1 for _ in range(1000)) for _ in range(300)]
    failures = sum(not sampled_share_within(n, 1000, 0.1).ok for n in draws)
    assert failures <= 2  # expected 0.3 at 99.9 %
    wrong = [sum(rng.random() < 0.2 for _ in range(1000)) for _ in range(50)]
    assert not any(sampled_share_within(n, 1000, 0.1).ok for n in wrong)


def test_the_band_at_the_extremes_and_for_small_samples() -> None:
    assert sampled_share_within(0, 50, 0.0) == ShareCheck(True, 0.0, 0.0)
    assert not sampled_share_within(1, 50, 0.0).ok
    assert sampled_share_within(50, 50, 1.0) == ShareCheck(True, 1.0, 1.0)
    assert not sampled_share_within(49, 50, 1.0).ok
    small = sampled_share_within(0, 100, 0.01)  # the normal band would start below zero
    assert small.ok
    assert small.low == 0.0
    assert sampled_share_within(10, 100, 0.1, confidence=0.5).high < (
        sampled_share_within(10, 100, 0.1, confidence=0.999).high
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "word"),
    [
        ((1, 0, 0.1), {}, "sent"),
        ((11, 10, 0.1), {}, "observed"),
        ((-1, 10, 0.1), {}, "observed"),
        ((1, 10, 1.1), {}, "ratio"),
        ((1, 10, 0.1), {"confidence": 1.0}, "confidence"),
        ((1, 10, 0.1), {"confidence": 0.0}, "confidence"),
    ],
)
def test_sampled_share_refuses_bad_input(
    args: tuple[int, int, float], kwargs: dict[str, float], word: str
) -> None:
    with pytest.raises(ValueError, match=word):
        sampled_share_within(*args, **kwargs)
