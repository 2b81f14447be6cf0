"""Privacy models: which equivalence classes of a generalisation may be released.

Each model looks at the classes of one generalisation and says, per class, whether the
class satisfies it; the classes that fail any model are suppressed (all their
quasi-identifiers become ``*``), and the generalisation is acceptable when the suppressed
records are within the suppression limit — as ARX applies record suppression.

Monotonicity (what lets the lattice search prune): if a generalisation is acceptable, so is
every more general one. That holds with suppression for k-anonymity and distinct
l-diversity — merging classes never turns a passing class into a failing one, so the
failing records only shrink. Entropy l-diversity and t-closeness are monotone only without
suppression: merging a passing class with a failing one can fail, and then records that
passed are suppressed. :attr:`PrivacyModel.monotone` reports which applies; the search
prunes only on monotone models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from healthmesh.privacy.anonymize.errors import AnonymizationConfigError
from healthmesh.privacy.anonymize.table import Classes, EncodedTable

__all__ = [
    "DistinctLDiversity",
    "EntropyLDiversity",
    "KAnonymity",
    "PrivacyModel",
    "TCloseness",
]


class PrivacyModel(Protocol):
    """A privacy model: a per-class check over a generalisation's classes."""

    def check(self, table: EncodedTable, classes: Classes) -> np.ndarray:
        """One bool per class: does the class satisfy the model?"""
        ...

    def monotone(self, suppression: bool) -> bool:
        """Is the model monotone in the lattice (with record suppression if ``suppression``)?"""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class KAnonymity:
    """Every released record shares its quasi-identifiers with at least ``k - 1`` others."""

    k: int

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise AnonymizationConfigError(f"k-anonymity needs an integer k >= 1, not {self.k!r}")

    def check(self, table: EncodedTable, classes: Classes) -> np.ndarray:
        return classes.sizes >= self.k

    def monotone(self, suppression: bool) -> bool:
        return True

    def describe(self) -> str:
        return f"{self.k}-anonymity"


def _sensitive(table: EncodedTable, attribute: str):  # noqa: ANN202 - internal helper
    try:
        return table.sensitive[attribute]
    except KeyError:
        raise AnonymizationConfigError(
            f"{attribute!r} is not declared as a sensitive attribute") from None


def _check_l(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise AnonymizationConfigError(f"{name} needs l >= 1, not {value!r}")


@dataclass(frozen=True)
class DistinctLDiversity:
    """Every released class holds at least ``l`` distinct values of ``attribute``."""

    attribute: str
    l: int  # noqa: E741 - the model's own letter

    def __post_init__(self) -> None:
        _check_l(self.l, "distinct l-diversity")

    def check(self, table: EncodedTable, classes: Classes) -> np.ndarray:
        cls, _, _ = classes.pairs(_sensitive(table, self.attribute))
        return np.bincount(cls, minlength=classes.count) >= self.l

    def monotone(self, suppression: bool) -> bool:
        return True

    def describe(self) -> str:
        return f"distinct {self.l}-diversity of {self.attribute}"


@dataclass(frozen=True)
class EntropyLDiversity:
    """Every released class has an entropy of ``attribute`` of at least ``log(l)``."""

    attribute: str
    l: float  # noqa: E741

    def __post_init__(self) -> None:
        _check_l(self.l, "entropy l-diversity")

    def check(self, table: EncodedTable, classes: Classes) -> np.ndarray:
        cls, _, counts = classes.pairs(_sensitive(table, self.attribute))
        share = counts / classes.sizes[cls]
        entropy = -np.bincount(cls, weights=share * np.log(share), minlength=classes.count)
        return entropy >= math.log(self.l) - 1e-12

    def monotone(self, suppression: bool) -> bool:
        return not suppression

    def describe(self) -> str:
        return f"entropy {self.l:g}-diversity of {self.attribute}"


@dataclass(frozen=True)
class TCloseness:
    """Every released class's distribution of ``attribute`` is within ``t`` of the table's.

    The distance is the Earth Mover's Distance of Li et al. (2007): with ``equal`` ground
    distance it is half the L1 distance between the distributions; with ``ordered``
    distance (values in numeric order when all are numbers, else text order) it is
    ``sum_i |cumulative difference up to i| / (m - 1)`` for ``m`` distinct values.
    """

    attribute: str
    t: float
    distance: Literal["equal", "ordered"] = "equal"

    def __post_init__(self) -> None:
        if isinstance(self.t, bool) or not isinstance(self.t, int | float) or not 0 <= self.t <= 1:
            raise AnonymizationConfigError(f"t-closeness needs 0 <= t <= 1, not {self.t!r}")
        if self.distance not in ("equal", "ordered"):
            raise AnonymizationConfigError(
                f"t-closeness distance must be 'equal' or 'ordered', not {self.distance!r}")

    def distances(self, table: EncodedTable, classes: Classes) -> np.ndarray:
        """The distance of each class from the whole table."""
        sens = _sensitive(table, self.attribute)
        cls, value, counts = classes.pairs(sens)
        share = counts / classes.sizes[cls]
        overall = sens.distribution
        if self.distance == "equal":
            # sum over present values of |p - q|, plus q for each value absent from the class
            inside = np.abs(share - overall[value]) - overall[value]
            return 0.5 * (np.bincount(cls, weights=inside, minlength=classes.count) + 1.0)
        return self._ordered(sens.rank[value], cls, share, overall[np.argsort(sens.rank)],
                             classes.count)

    @staticmethod
    def _ordered(rank: np.ndarray, cls: np.ndarray, share: np.ndarray, overall: np.ndarray,
                 count: int) -> np.ndarray:
        size = len(overall)
        if size < 2:
            return np.zeros(count)
        out = np.empty(count)
        chunk = max(1, 4_000_000 // size)  # bound the dense class x value matrix
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            inside = (cls >= start) & (cls < stop)
            dense = np.zeros((stop - start, size))
            dense[cls[inside] - start, rank[inside]] = share[inside]
            cumulative = np.cumsum(dense - overall, axis=1)
            out[start:stop] = np.abs(cumulative).sum(axis=1) / (size - 1)
        return out

    def check(self, table: EncodedTable, classes: Classes) -> np.ndarray:
        return self.distances(table, classes) <= self.t + 1e-12

    def monotone(self, suppression: bool) -> bool:
        return not suppression

    def describe(self) -> str:
        return f"{self.t:g}-closeness ({self.distance} distance) of {self.attribute}"
