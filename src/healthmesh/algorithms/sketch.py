"""A mergeable fixed-bin histogram: the quantile sketch of ``summary``.

The bins are fixed by the *parameters* (``[lo, hi]`` cut into ``bins`` equal bins, plus an
underflow and an overflow bin), never by the data, so every site builds the same layout
and merging is exact: add the counts bin by bin. It is also what disclosure control can
work on (each count has sensitivity 1 when a patient contributes one value).

Error: a quantile whose rank falls inside ``[lo, hi]`` is interpolated linearly within its
bin, so it is at most one bin width ``(hi - lo) / bins`` away from the exact quantile of the
pooled values (the standard ``rank = q * n`` definition). A rank that falls in the
underflow (overflow) bin is reported as ``lo`` (``hi``) and flagged: choose a range that
covers the plausible values. A t-digest would adapt to the data but its centroids are not
releasable aggregates; a histogram is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Histogram", "bin_index_sql"]


class Histogram:
    """Counts over ``bins`` equal bins of ``[lo, hi]``; ``counts[0]`` is the underflow bin
    (values below ``lo``), ``counts[bins + 1]`` the overflow bin (values above ``hi``)."""

    __slots__ = ("bins", "counts", "hi", "lo")

    def __init__(self, lo: float, hi: float, bins: int,
                 counts: Sequence[float] | None = None) -> None:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and bins >= 1):
            raise ValueError("a histogram needs finite lo < hi and at least one bin")
        self.lo, self.hi, self.bins = float(lo), float(hi), bins
        self.counts = list(counts) if counts is not None else [0.0] * (bins + 2)
        if len(self.counts) != bins + 2:
            raise ValueError(f"expected {bins + 2} counts, got {len(self.counts)}")

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.bins

    @property
    def total(self) -> float:
        return sum(max(0.0, c) for c in self.counts)

    def index(self, x: float) -> int:
        """The bin of ``x`` (the same formula as :func:`bin_index_sql`)."""
        if x < self.lo:
            return 0
        if x > self.hi:
            return self.bins + 1
        return 1 + min(self.bins - 1, math.floor((x - self.lo) * self.bins / (self.hi - self.lo)))

    def add(self, x: float, n: float = 1) -> None:
        self.counts[self.index(x)] += n

    def merge(self, other: Histogram) -> Histogram:
        """A new histogram with the counts of both (same layout required)."""
        if (self.lo, self.hi, self.bins) != (other.lo, other.hi, other.bins):
            raise ValueError("cannot merge histograms with different bins")
        return Histogram(self.lo, self.hi, self.bins,
                         [a + b for a, b in zip(self.counts, other.counts, strict=True)])

    def quantile(self, q: float) -> tuple[float, bool] | None:
        """``(estimate, exact_range)`` of the ``q`` quantile, or None when empty.

        ``exact_range`` is False when the rank falls outside ``[lo, hi]`` (the estimate is
        then the range bound). Negative counts (noise) count as zero."""
        if not 0 <= q <= 1:
            raise ValueError("q must be within [0, 1]")
        counts = [max(0.0, c) for c in self.counts]
        total = sum(counts)
        if total <= 0:
            return None
        rank, seen = q * total, 0.0
        for i, c in enumerate(counts):
            if c > 0 and seen + c >= rank:
                if i == 0 or i == self.bins + 1:
                    return (self.lo if i == 0 else self.hi), False
                left = self.lo + (i - 1) * self.width
                return left + (rank - seen) / c * self.width, True
            seen += c
        return self.hi, counts[-1] == 0


def bin_index_sql(value: str, lo: str, hi: str, bins: str) -> str:
    """SQL computing :meth:`Histogram.index` of ``value`` (all arguments are SQL)."""
    return (f"CASE WHEN {value} < {lo} THEN 0 WHEN {value} > {hi} THEN {bins} + 1 "
            f"ELSE 1 + least({bins} - 1, CAST(floor(({value} - {lo}) * {bins} / ({hi} - {lo})) "
            "AS INTEGER)) END")
