"""Utility metrics: how much information a generalisation with suppression loses.

- ``loss`` — Iyengar's general loss metric as ARX implements it (``MetricMDNMLoss``, the
  default of ``Metric.createLossMetric()``): a cell generalised to a value covering ``c``
  of the hierarchy's ``s`` leaves loses ``(c - 1) / (s - 1)``; a suppressed cell loses 1;
  each attribute's loss is the mean over records, and attributes are combined with ARX's
  default aggregate, the geometric mean ``prod(1 + loss_a) ** (1/m) - 1`` (``arithmetic``,
  ``sum`` and ``max`` can be chosen instead).
- ``discernibility`` — the non-monotone discernibility metric: each released record costs
  the size of its class, each suppressed record the size of the table.
- ``entropy`` — non-uniform entropy: each cell costs ``-log2(P(leaf | generalised value))``
  with frequencies from the table; a suppressed cell costs as if generalised to ``*``;
  summed over attributes (bits per table).

Each metric gives the search a lower bound: ``loss`` and ``entropy`` from the levels alone
(the value without suppression, which only grows with generalisation: every suppressed
cell costs at least what it would cost released); ``discernibility`` from the number of
classes a node can have at most, and from an evaluated node for every node above it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from healthmesh.privacy.anonymize.errors import AnonymizationConfigError
from healthmesh.privacy.anonymize.table import Classes, EncodedTable

__all__ = ["AGGREGATES", "METRICS", "Discernibility", "Loss", "NonUniformEntropy",
           "UtilityMetric", "make_metric"]


class UtilityMetric(Protocol):
    """A utility metric bound to one encoded table; lower is better."""

    name: str

    def static_bounds(self, nodes: np.ndarray) -> np.ndarray | None:
        """A lower bound of the metric for each node (rows of levels), or None."""
        ...

    def score(self, levels: Sequence[int], classes: Classes, released: np.ndarray
              ) -> tuple[float, float | None]:
        """The metric of a node and, if the metric has one, a bound for all nodes above it."""
        ...

    def per_attribute(self, levels: Sequence[int], classes: Classes, released: np.ndarray
                      ) -> dict[str, float]:
        """The metric's value for each quasi-identifier (for reports)."""
        ...


AGGREGATES = {
    "geometric": lambda v: float(np.prod(1.0 + v, axis=-1) ** (1.0 / v.shape[-1]) - 1.0),
    "arithmetic": lambda v: float(np.mean(v, axis=-1)),
    "sum": lambda v: float(np.sum(v, axis=-1)),
    "max": lambda v: float(np.max(v, axis=-1)),
}
_VECTOR_AGGREGATES = {
    "geometric": lambda v: np.prod(1.0 + v, axis=-1) ** (1.0 / v.shape[-1]) - 1.0,
    "arithmetic": lambda v: np.mean(v, axis=-1),
    "sum": lambda v: np.sum(v, axis=-1),
    "max": lambda v: np.max(v, axis=-1),
}


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # not ``a @ b``: a BLAS call may start a thread pool, costly next to these small vectors
    return float(np.multiply(a, b).sum())


class _PerCellMetric:
    """A metric that is a sum of per-cell costs, suppressed cells costing a fixed amount."""

    name = ""

    def __init__(self, table: EncodedTable, aggregate: str) -> None:
        if aggregate not in AGGREGATES:
            raise AnonymizationConfigError(
                f"unknown aggregate {aggregate!r}; choose one of {sorted(AGGREGATES)}")
        self.table = table
        self.aggregate = aggregate
        self.weights = table.weights.astype(np.float64)
        self._cells: dict[tuple[int, int], np.ndarray] = {}
        # raw[a][l]: the attribute's weighted cost at level l without suppression
        self.raw = [np.array([_dot(self.cells(a, lvl), self.weights) for lvl in range(h)])
                    for a, h in enumerate(table.heights)]
        self.totals = [np.array([self._finish(v, a) for v in raw])
                       for a, raw in enumerate(self.raw)]

    def cells(self, attribute: int, level: int) -> np.ndarray:
        """The cost of each item's cell of ``attribute`` at ``level`` (per record)."""
        key = (attribute, level)
        if key not in self._cells:
            self._cells[key] = self._cell_costs(attribute, level)
        return self._cells[key]

    def _cell_costs(self, attribute: int, level: int) -> np.ndarray:
        raise NotImplementedError

    def _suppressed_costs(self, attribute: int) -> np.ndarray:
        raise NotImplementedError

    def _finish(self, total: float, attribute: int) -> float:
        return total

    def static_bounds(self, nodes: np.ndarray) -> np.ndarray:
        per = np.stack([self.totals[a][nodes[:, a]] for a in range(nodes.shape[1])], axis=1)
        return _VECTOR_AGGREGATES[self.aggregate](per)

    def per_attribute(self, levels: Sequence[int], classes: Classes, released: np.ndarray
                      ) -> dict[str, float]:
        suppressed = np.flatnonzero(~released[classes.inverse]) if not released.all() else None
        out = {}
        for a, level in enumerate(levels):
            total = self.raw[a][level]
            if suppressed is not None:
                extra = self._suppressed_costs(a)[suppressed] - self.cells(a, level)[suppressed]
                total += _dot(extra, self.weights[suppressed])
            out[self.table.names[a]] = self._finish(total, a)
        return out

    def score(self, levels: Sequence[int], classes: Classes, released: np.ndarray
              ) -> tuple[float, float | None]:
        values = np.array(list(self.per_attribute(levels, classes, released).values()))
        return AGGREGATES[self.aggregate](values), None


class Loss(_PerCellMetric):
    """ARX's Loss metric (``MetricMDNMLoss`` with gs-factor 0.5): see the module docstring."""

    name = "loss"

    def __init__(self, table: EncodedTable, aggregate: str = "geometric") -> None:
        self._ones = np.ones(table.items)
        super().__init__(table, aggregate)

    def _cell_costs(self, attribute: int, level: int) -> np.ndarray:
        hierarchy = self.table.hierarchies[attribute]
        leaves = len(hierarchy.leaves)
        if leaves == 1:
            return np.zeros(self.table.items)
        per_code = (hierarchy.leaf_counts(level) - 1) / (leaves - 1)
        return per_code[self.table.codes(attribute, level)]

    def _suppressed_costs(self, attribute: int) -> np.ndarray:
        return self._ones

    def _finish(self, total: float, attribute: int) -> float:
        return float(total) / self.table.rows if self.table.rows else 0.0


class NonUniformEntropy(_PerCellMetric):
    """Non-uniform entropy in bits: see the module docstring."""

    name = "entropy"

    def __init__(self, table: EncodedTable, aggregate: str = "sum") -> None:
        super().__init__(table, aggregate)

    def _cell_costs(self, attribute: int, level: int) -> np.ndarray:
        leaf = self.table.codes(attribute, 0)
        general = self.table.codes(attribute, level)
        leaf_freq = np.bincount(leaf, weights=self.table.weights)[leaf]
        general_freq = np.bincount(general, weights=self.table.weights)[general]
        return np.log2(general_freq / leaf_freq)

    def _suppressed_costs(self, attribute: int) -> np.ndarray:
        leaf = self.table.codes(attribute, 0)
        return np.log2(self.table.rows / np.bincount(leaf, weights=self.table.weights)[leaf])


class Discernibility:
    """Non-monotone discernibility: sum of class sizes squared, ``n`` per suppressed record."""

    name = "discernibility"

    def __init__(self, table: EncodedTable, aggregate: str = "sum") -> None:
        self.table = table

    def static_bounds(self, nodes: np.ndarray) -> np.ndarray:
        # A suppressed record costs n >= its class size, so the metric is at least the sum
        # of squared class sizes, which is at least n^2 / classes (Cauchy-Schwarz); a node
        # has at most the product of its levels' cardinalities (and of items) classes.
        table = self.table
        product = np.ones(len(nodes))
        for a, height in enumerate(table.heights):
            cards = np.array([table.cardinality(a, lvl) for lvl in range(height)], dtype=float)
            product *= cards[nodes[:, a]]
        classes = np.minimum(product, float(table.items))
        return float(table.rows) ** 2 / np.maximum(classes, 1.0)

    def score(self, levels: Sequence[int], classes: Classes, released: np.ndarray
              ) -> tuple[float, float | None]:
        sizes = classes.sizes.astype(np.float64)
        kept = float((sizes[released] ** 2).sum())
        value = kept + float(sizes[~released].sum()) * self.table.rows
        return value, float((sizes**2).sum())

    def per_attribute(self, levels: Sequence[int], classes: Classes, released: np.ndarray
                      ) -> dict[str, float]:
        return {}


METRICS: dict[str, Callable[..., UtilityMetric]] = {
    "loss": Loss, "entropy": NonUniformEntropy, "discernibility": Discernibility}


def make_metric(name: str, table: EncodedTable, aggregate: str | None = None) -> UtilityMetric:
    """The metric called ``name`` bound to ``table``."""
    try:
        cls = METRICS[name]
    except KeyError:
        raise AnonymizationConfigError(
            f"unknown metric {name!r}; choose one of {sorted(METRICS)}") from None
    return cls(table) if aggregate is None else cls(table, aggregate)
