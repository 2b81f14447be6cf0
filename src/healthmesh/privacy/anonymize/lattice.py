"""Optimal search of the generalisation lattice.

A lattice node is one generalisation level per quasi-identifier. The search finds the node
with the lowest utility metric among those whose classes satisfy every privacy model with
at most the suppression limit of records suppressed — the global optimum, as ARX's Flash
finds it, by a different route:

1. Every node gets a lower bound of the metric computed from its levels alone (for
   ``loss`` and ``entropy``: the value without suppression, which only grows with
   generalisation). A node whose bound exceeds the best value found is never checked.
2. Predictive tagging, as ARX does: when a node fails on the monotone models alone
   (k-anonymity, distinct l-diversity; the others only without suppression), every node
   below it fails too and is tagged without being checked. This stays exact when other,
   non-monotone models are combined with them, as more models only suppress more.
3. For a metric with no bound from levels (``discernibility``), an evaluated node's value
   without suppression bounds every node above it.
4. Order: with a monotone model, a greedy walk down from the top node finds a good first
   solution, then nodes are checked from the top down so that each failure tags many
   nodes; without one, nodes are checked by increasing bound and the search stops at the
   first bound above the best value.

Ties are broken by the lower sum of levels, then by the levels in column order, so the
result does not depend on the order of evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from healthmesh.privacy.anonymize.metrics import UtilityMetric
from healthmesh.privacy.anonymize.models import PrivacyModel
from healthmesh.privacy.anonymize.table import Classes, EncodedTable

__all__ = ["MAX_LATTICE_NODES", "Evaluation", "SearchResult", "evaluate", "search"]

MAX_LATTICE_NODES = 500_000  # nodes x attributes int64s are held in memory
TIE = 1e-10  # ARX rounds per-attribute losses; values this close are equal


@dataclass(frozen=True)
class Evaluation:
    """One lattice node checked: its classes, which are released, and the metric."""

    levels: tuple[int, ...]
    classes: Classes
    released: np.ndarray  # per class: satisfies every model
    suppressed: int
    acceptable: bool
    value: float = float("nan")
    fails_below: bool = False  # the monotone models alone fail: so does every node below

    @property
    def released_classes(self) -> int:
        return int(self.released.sum())


@dataclass
class SearchResult:
    """The optimum (None if no node is acceptable) and how the search went."""

    best: Evaluation | None
    lattice_size: int
    checked: int
    tagged: int
    seconds: float
    stats: dict[str, int] = field(default_factory=dict)


def evaluate(table: EncodedTable, levels: Sequence[int], models: Sequence[PrivacyModel],
             max_suppressed: int) -> Evaluation:
    """Check one node: classes, the released mask, suppressed records, acceptability.

    The monotone models are applied first: if they alone suppress too many records, every
    node below fails as well (``fails_below``) — even when other models are not monotone,
    since adding models only suppresses more.
    """
    classes = table.classes(levels)
    released = np.ones(classes.count, dtype=bool)
    suppression = max_suppressed > 0
    ordered = sorted(models, key=lambda m: not m.monotone(suppression))
    fails_below = False
    for position, model in enumerate(ordered):
        released &= model.check(table, classes)
        last_monotone = model.monotone(suppression) and (
            position + 1 == len(ordered) or not ordered[position + 1].monotone(suppression))
        if last_monotone and int(classes.sizes[~released].sum()) > max_suppressed:
            fails_below = True
            break
    suppressed = int(classes.sizes[~released].sum())
    return Evaluation(tuple(int(v) for v in levels), classes, released, suppressed,
                      suppressed <= max_suppressed and not fails_below,
                      fails_below=fails_below)


def _lattice(heights: Sequence[int]) -> np.ndarray:
    total = int(np.prod(heights)) if heights else 1
    if total > MAX_LATTICE_NODES:
        from healthmesh.privacy.anonymize.errors import AnonymizationConfigError

        raise AnonymizationConfigError(
            f"the generalisation lattice has {total} nodes (limit {MAX_LATTICE_NODES}); "
            "use fewer quasi-identifiers or shorter hierarchies")
    # row-major order: the index of levels (l0, ..., lm) is sum(l_a * prod(heights[a+1:]))
    return np.indices(tuple(heights), dtype=np.int64).reshape(len(heights), total).T


def _better(value: float, levels: tuple[int, ...], best: Evaluation | None) -> bool:
    if best is None:
        return True
    if value < best.value - TIE:
        return True
    if value > best.value + TIE:
        return False
    return (sum(levels), levels) < (sum(best.levels), best.levels)


def search(table: EncodedTable, models: Sequence[PrivacyModel], metric: UtilityMetric,
           max_suppressed: int) -> SearchResult:
    """Find the acceptable node with the lowest ``metric`` (see the module docstring)."""
    started = time.perf_counter()
    state = _Search(table, models, metric, max_suppressed)
    if state.prunable:  # failures tag nodes below: go top-down to tag many at once
        state.descend()
        state.sweep(np.lexsort((state.bound, -state.height)))
    else:
        state.sweep(np.lexsort((state.height, state.bound)))
    return SearchResult(state.best, len(state.nodes), state.checked, state.tagged,
                        time.perf_counter() - started)


class _Search:
    """The state of one search: the lattice, bounds, failed tags and the best node."""

    def __init__(self, table: EncodedTable, models: Sequence[PrivacyModel],
                 metric: UtilityMetric, max_suppressed: int) -> None:
        self.table, self.models, self.metric = table, models, metric
        self.max_suppressed = max_suppressed
        self.nodes = _lattice(table.heights)
        self.height = self.nodes.sum(axis=1)
        static = metric.static_bounds(self.nodes)
        self.static = static is not None
        self.bound = np.zeros(len(self.nodes)) if static is None else static.astype(float)
        self.monotone = all(m.monotone(max_suppressed > 0) for m in models)
        self.prunable = any(m.monotone(max_suppressed > 0) for m in models)
        self.failed = np.zeros(len(self.nodes), dtype=bool)
        self.done = np.zeros(len(self.nodes), dtype=bool)
        self.best: Evaluation | None = None
        self.checked = self.tagged = 0
        self.strides = np.cumprod([1, *table.heights[:0:-1]])[::-1]

    def index(self, levels: Sequence[int]) -> int:
        return int(np.dot(levels, self.strides))

    def check(self, index: int) -> Evaluation | None:
        """Evaluate one node; tag what its outcome implies; return it if acceptable."""
        levels = self.nodes[index]
        node = evaluate(self.table, levels, self.models, self.max_suppressed)
        self.checked += 1
        self.done[index] = True
        if not node.acceptable:
            if node.fails_below:
                below = np.all(self.nodes <= levels, axis=1)
                self.tagged += int((below & ~self.failed).sum()) - 1
                self.failed |= below
            return None
        value, above_bound = self.metric.score(node.levels, node.classes, node.released)
        if above_bound is not None:
            above = np.all(self.nodes >= levels, axis=1)
            np.maximum(self.bound, np.where(above, above_bound, 0.0), out=self.bound)
        node = Evaluation(node.levels, node.classes, node.released, node.suppressed, True, value)
        if _better(value, node.levels, self.best):
            self.best = node
        return node

    def descend(self) -> None:
        """Greedy walk down from the top node: a good first optimum to bound the sweep."""
        current = self.check(len(self.nodes) - 1)
        while current is not None:
            options = []
            for attribute, level in enumerate(current.levels):
                if level == 0:
                    continue
                child = list(current.levels)
                child[attribute] -= 1
                index = self.index(child)
                if not self.failed[index] and not self.done[index]:
                    node = self.check(index)
                    if node is not None:
                        options.append(node)
            current = min(options, key=lambda n: (n.value, n.levels), default=None)

    def sweep(self, order: np.ndarray) -> None:
        """Check every node in ``order`` that may still beat the best (see module doc)."""
        for index in order:
            if self.done[index] or self.failed[index]:
                continue
            if self.best is not None and self.bound[index] > self.best.value + TIE:
                if self.static and not self.prunable:
                    break  # bounds are sorted: nothing left can beat the best
                continue
            self.check(index)
