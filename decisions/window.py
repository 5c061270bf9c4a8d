"""A time-bucketed sliding window of counters, shared by the retry budget and the breaker.

Both need "how many X happened in the last N seconds" for a handful of counters, cheaply and
without keeping one timestamp per event: a ring of fixed-width buckets gives that in O(buckets)
memory and O(1) amortised updates, at the price of a resolution of one bucket width
(``window_seconds / buckets``), which is the same trade Finagle and Resilience4j make.

Not thread-safe on its own: its owners hold their lock around every call.
"""

from __future__ import annotations

import math


class SlidingCounts:
    """Counters over the last ``window_seconds``, in ``buckets`` buckets.

    ``add(now, **counts)`` adds to the bucket for ``now``; ``totals(now)`` sums the buckets still
    inside the window. ``now`` must not go backwards (use a monotonic clock).
    """

    __slots__ = ("_counts", "_epochs", "_names", "_width")

    def __init__(self, window_seconds: float, buckets: int, names: tuple[str, ...]):
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets}")
        self._names = names
        self._width = window_seconds / buckets
        self._epochs = [-1] * buckets
        self._counts = [[0] * len(names) for _ in range(buckets)]

    def _slot(self, now: float) -> int:
        epoch = math.floor(now / self._width)
        slot = epoch % len(self._epochs)
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._counts[slot] = [0] * len(self._names)
        return slot

    def add(self, now: float, **counts: int) -> None:
        row = self._counts[self._slot(now)]
        for name, value in counts.items():
            row[self._names.index(name)] += value

    def totals(self, now: float) -> dict[str, int]:
        oldest = math.floor(now / self._width) - len(self._epochs) + 1
        sums = [0] * len(self._names)
        for epoch, row in zip(self._epochs, self._counts, strict=True):
            if epoch >= oldest:
                for i, value in enumerate(row):
                    sums[i] += value
        return dict(zip(self._names, sums, strict=True))

    def clear(self) -> None:
        self._epochs = [-1] * len(self._epochs)
