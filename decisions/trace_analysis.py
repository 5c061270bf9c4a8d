"""What ``tracing-rollout`` concludes from spans: coverage, the dependency map, where time goes,
and whether the head sampler keeps the share it was asked to. Pure: spans in, rows out.

Every function reads :class:`decisions.spans.Span`, whichever backend stored them.

Definitions used throughout:

- a **call** between services is a parent/child pair of spans, in one trace, whose services
  differ (typically the caller's CLIENT span and the callee's SERVER span);
- the **self time** of a span is its duration minus the time covered by its children (their
  union, clipped to the span): the time the service spent in its own code or waiting on
  something it did not trace;
- the **critical path** of a trace is the chain of spans that determined its end-to-end
  latency, computed as Jaeger does: from the root's end, walk back to the child that finished
  last (clipped to its parent's end), attribute the gap after it to the parent, recurse into
  that child, then continue from the child's start with the last child that had *finished*
  by then (one still running was not what the parent waited for). Each moment of the root's
  duration is attributed to exactly one span, so the shares add up to 100 %.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from decisions.spans import Span

Edge = tuple[str, str]
"""(caller service, callee service)."""


# --------------------------------------------------------------------------- dependency map


def dependency_edges(spans: Iterable[Span]) -> dict[Edge, int]:
    """Calls between services, counted, sorted by (caller, callee).

    A child whose parent is not among ``spans`` (not sampled, not yet exported, or in another
    backend) is not counted: the map shows what was observed, never what was guessed.
    """
    spans = list(spans)
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    counts: Counter[Edge] = Counter()
    for span in spans:
        if span.parent_span_id is None:
            continue
        parent = by_id.get((span.trace_id, span.parent_span_id))
        if parent is not None and parent.service != span.service:
            counts[(parent.service, span.service)] += 1
    return dict(sorted(counts.items()))


def _mermaid_label(name: str) -> str:
    # Mermaid entity codes inside a quoted label: '#' first, since the codes start with it.
    text = " ".join(name.split())
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def mermaid_graph(edges: Mapping[Edge, int], services: Iterable[str] = ()) -> str:
    """A ``graph LR`` with one node per service and one arrow per edge labelled by its count.

    Nodes get generated ids (``s0``, ``s1``...) and quoted, escaped labels, so any service
    name (dots, spaces, quotes, Mermaid keywords such as ``end``) renders. ``services`` adds
    nodes with no call observed (a service that reports but neither calls nor is called).
    """
    names = sorted({*services, *(name for edge in edges for name in edge)})
    ids = {name: f"s{index}" for index, name in enumerate(names)}
    lines = ["graph LR"]
    lines += [f'    {ids[name]}["{_mermaid_label(name)}"]' for name in names]
    lines += [
        f"    {ids[caller]} -->|{count}| {ids[callee]}"
        for (caller, callee), count in sorted(edges.items())
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- coverage


class CoverageRow(BaseModel):
    """One service: did it report, and which share of the requests sent did it trace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    spans: int
    traces: int
    sample_ratio: float | None
    """Traces containing the service per request sent; ``None`` when none were sent."""

    @property
    def reporting(self) -> bool:
        return self.spans > 0


def coverage(
    spans: Iterable[Span], services: Sequence[str], requests_sent: int
) -> list[CoverageRow]:
    """One row per expected service, in the order given (services not listed are ignored).

    Each request sent starts one trace, so traces seen / requests sent is the share the head
    sampler kept (1.0 with ``always_on``); a service with no span does not report.
    """
    if requests_sent < 0:
        raise ValueError(f"requests_sent must be >= 0, got {requests_sent}")
    span_counts: Counter[str] = Counter()
    traces: defaultdict[str, set[str]] = defaultdict(set)
    for span in spans:
        span_counts[span.service] += 1
        traces[span.service].add(span.trace_id)
    return [
        CoverageRow(
            service=name,
            spans=span_counts[name],
            traces=len(traces[name]),
            sample_ratio=len(traces[name]) / requests_sent if requests_sent else None,
        )
        for name in services
    ]


# --------------------------------------------------------------------------- latency attribution


class LatencyRow(BaseModel):
    """One (service, operation): its latency and its part of the traces' critical paths."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    operation: str
    count: int
    p50_ms: float
    p99_ms: float
    self_p50_ms: float
    critical_path_share: float
    """Its self time on the critical paths / the critical paths' total (0 to 1)."""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in (0, 100]): always an observed value, never interpolated,
    so a p99 over 20 samples is honestly the slowest one."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"q must be within (0, 100], got {q}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def self_time_ns(span: Span, children: Iterable[Span]) -> int:
    """``span``'s duration minus the union of its children's intervals, clipped to it."""
    intervals = sorted(
        (max(c.start_ns, span.start_ns), min(c.end_ns, span.end_ns))
        for c in children
        if c.end_ns > span.start_ns and c.start_ns < span.end_ns
    )
    covered, cursor = 0, span.start_ns
    for start, end in intervals:
        start = max(start, cursor)
        if end > start:
            covered += end - start
            cursor = end
    return span.end_ns - span.start_ns - covered


def critical_path(trace: Sequence[Span]) -> dict[str, int]:
    """Nanoseconds of the trace's critical path attributed to each span id (see the module
    docstring). The root is the parentless span (or whose parent is missing) that ends last."""
    ids = {s.span_id for s in trace}
    roots = [s for s in trace if s.parent_span_id is None or s.parent_span_id not in ids]
    if not roots:
        return {}
    children: defaultdict[str, list[Span]] = defaultdict(list)
    for span in trace:
        if span.parent_span_id in ids and span.parent_span_id != span.span_id:
            children[span.parent_span_id].append(span)
    root = max(roots, key=lambda s: (s.end_ns - s.start_ns, s.end_ns))
    attributed: Counter[str] = Counter()
    # Iterative walk: (span, upper, lower) = attribute the span's time within [lower, upper).
    # ``lower`` keeps a child that started before its parent from adding time the root's
    # duration does not hold, so the attributed times sum to exactly the root's duration.
    stack: list[tuple[Span, int, int]] = [(root, root.end_ns, root.start_ns)]
    while stack:  # ends: each span is pushed by its one parent, and a cycle has no root
        span, upper, lower = stack.pop()
        floor = max(span.start_ns, lower)
        cursor = min(upper, span.end_ns)
        top = cursor
        for child in sorted(children[span.span_id], key=lambda c: c.end_ns, reverse=True):
            if cursor <= floor:
                break
            child_end = min(child.end_ns, top)  # a child outliving its parent is clipped
            if child_end > cursor or child.start_ns >= cursor or child_end <= floor:
                continue  # still running at the cursor: in the shadow of the path
            attributed[span.span_id] += cursor - child_end
            stack.append((child, child_end, floor))
            cursor = max(child.start_ns, floor)
        attributed[span.span_id] += max(0, cursor - floor)
    return dict(attributed)


def latency_attribution(spans: Iterable[Span]) -> list[LatencyRow]:
    """Per (service, operation): p50 / p99 of span durations, median self time, and the share
    of all the traces' critical-path time spent in it. Sorted by that share, largest first:
    the top row is where shortening code shortens requests.
    """
    traces: defaultdict[str, list[Span]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    durations: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    self_ms: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    on_path: Counter[tuple[str, str]] = Counter()
    total = 0
    for trace in traces.values():
        children: defaultdict[str, list[Span]] = defaultdict(list)
        for span in trace:
            if span.parent_span_id is not None:
                children[span.parent_span_id].append(span)
        by_id = {s.span_id: s for s in trace}
        for span in trace:
            key = (span.service, span.name)
            durations[key].append(span.duration_ms)
            self_ms[key].append(self_time_ns(span, children[span.span_id]) / 1e6)
        for span_id, nanos in critical_path(trace).items():
            span = by_id[span_id]
            on_path[(span.service, span.name)] += nanos
            total += nanos
    rows = [
        LatencyRow(
            service=service,
            operation=operation,
            count=len(values),
            p50_ms=percentile(values, 50),
            p99_ms=percentile(values, 99),
            self_p50_ms=percentile(self_ms[(service, operation)], 50),
            critical_path_share=on_path[(service, operation)] / total if total else 0.0,
        )
        for (service, operation), values in durations.items()
    ]
    return sorted(rows, key=lambda r: (-r.critical_path_share, r.service, r.operation))


# --------------------------------------------------------------------------- sampling check


class ShareCheck(NamedTuple):
    ok: bool
    low: float
    high: float
    """The acceptance band, as shares of the requests sent."""


def _log_pmf(k: int, n: int, p: float) -> float:
    if p == 0.0:
        return 0.0 if k == 0 else -math.inf
    if p == 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def sampled_share_within(
    observed: int, sent: int, ratio: float, *, confidence: float = 0.999
) -> ShareCheck:
    """Whether ``observed`` sampled traces out of ``sent`` requests fit a head ratio of ``ratio``.

    Each request's trace id is random, so under a correct sampler the count is
    Binomial(sent, ratio). The band is its exact equal-tailed acceptance region: the smallest
    ``low`` and largest ``high`` counts such that each tail outside holds at most
    ``(1 - confidence) / 2`` of the probability. A correct sampler fails the check with
    probability at most ``1 - confidence``. Exact rather than Wilson or a normal
    approximation because both are poor where this runbook lives: small ratios (1 %) and few
    requests, where the normal band even goes negative. For 1,000 requests at 0.1 and 99.9 %
    the band is about 70 to 132 traces (the normal approximation's 100 ± 31).
    """
    if sent <= 0:
        raise ValueError(f"sent must be > 0, got {sent}")
    if not 0 <= observed <= sent:
        raise ValueError(f"observed must be within [0, sent={sent}], got {observed}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be within [0, 1], got {ratio}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2
    pmf = [math.exp(_log_pmf(k, sent, ratio)) for k in range(sent + 1)]
    low, below = 0, 0.0
    while low < sent and below + pmf[low] <= tail:
        below += pmf[low]
        low += 1
    high, above = sent, 0.0
    while high > 0 and above + pmf[high] <= tail:
        above += pmf[high]
        high -= 1
    return ShareCheck(ok=low <= observed <= high, low=low / sent, high=high / sent)
