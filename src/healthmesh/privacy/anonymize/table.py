"""A table encoded for the lattice search: integer codes per quasi-identifier and level.

Rows are first collapsed into *items*: the distinct combinations of quasi-identifier and
sensitive values, each with a weight (its number of records) — UCI Adult's 30,162 rows are
18,109 items. Every quasi-identifier is encoded once, per hierarchy level, as an int64 array
of item codes (level-major), so that the equivalence classes of any generalisation are found
with one mixed-radix key and a hash factorisation (or ``np.bincount`` when the key space is
small) instead of string work. Text is factorised before it is looked up, so per-value Python
work is done once per distinct value, not per row. Rows whose values cannot be placed —
missing, or not a leaf of the column's hierarchy — are split off with a reason first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from healthmesh.privacy.anonymize.hierarchy import Hierarchy

__all__ = ["Classes", "EncodedTable", "Sensitive", "as_text", "factorize_text"]

INT64_KEY_LIMIT = 1 << 62


def as_text(series: pd.Series) -> pd.Series:
    """A column as text (values are compared with hierarchy leaves as strings); NA stays NA."""
    return series.astype("string").str.strip()


def factorize_text(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes (-1 for NA) and the distinct stripped text values of a column."""
    codes, uniques = pd.factorize(series.astype("string"), use_na_sentinel=True)
    return codes.astype(np.int64), [str(v).strip() for v in uniques]


@dataclass(frozen=True, eq=False)
class Sensitive:
    """One sensitive attribute: a code per item, its labels and numeric order if any."""

    name: str
    codes: np.ndarray
    labels: tuple[str, ...]
    weights: np.ndarray

    @cached_property
    def size(self) -> int:
        return len(self.labels)

    @cached_property
    def distribution(self) -> np.ndarray:
        """Share of each value in the whole table (t-closeness compares classes with it)."""
        counts = np.bincount(self.codes, weights=self.weights, minlength=self.size)
        return counts / counts.sum()

    @cached_property
    def rank(self) -> np.ndarray:
        """Position of each code in the value order: numeric if all values are numbers."""
        try:
            keys: list[float] | list[str] = [float(v) for v in self.labels]
        except ValueError:
            keys = list(self.labels)
        order = sorted(range(self.size), key=lambda i: keys[i])
        rank = np.empty(self.size, dtype=np.int64)
        rank[order] = np.arange(self.size)
        return rank


def _leaf_indices(frame: pd.DataFrame, name: str, hierarchy: Hierarchy, reasons: pd.Series,
                  why: Mapping[str, str]) -> np.ndarray:
    codes, uniques = factorize_text(frame[name])
    found = hierarchy.index_of(uniques) if uniques else np.zeros(0, dtype=np.int64)
    index = np.where(codes < 0, -1, found[np.maximum(codes, 0)] if len(found) else -1)
    empty = np.array([u == "" for u in uniques], dtype=bool)
    missing = (codes < 0) | (empty[np.maximum(codes, 0)] if len(empty) else True)
    _note(reasons, missing, f"{name}: missing value")
    unknown = np.flatnonzero((index < 0) & ~missing & reasons.isna().to_numpy())
    if len(unknown):
        reasons.iloc[unknown] = [
            f"{name}: {why[uniques[c]]}" if uniques[c] in why
            else f"{name}: value {uniques[c]!r:.80} is not in the hierarchy"
            for c in codes[unknown]]
    return index


def _note(reasons: pd.Series, mask: np.ndarray, text: str) -> None:
    """Record ``text`` for each row in ``mask`` that has no reason yet (first problem wins)."""
    mask = mask & reasons.isna().to_numpy()
    if mask.any():
        reasons[mask] = text


@dataclass(frozen=True, eq=False)
class EncodedTable:
    """Item codes per quasi-identifier level, sensitive codes, weights and the record map."""

    names: tuple[str, ...]
    hierarchies: tuple[Hierarchy, ...]
    leaf_index: tuple[np.ndarray, ...]  # per QI: leaf index of each item
    sensitive: Mapping[str, Sensitive]
    weights: np.ndarray  # records per item
    record_item: np.ndarray  # the item of each accepted record, in input order
    _codes: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def encode(cls, frame: pd.DataFrame, hierarchies: Mapping[str, Hierarchy],
               sensitive: Sequence[str] = (),
               unplaced: Mapping[str, Mapping[str, str]] | None = None
               ) -> tuple[EncodedTable, pd.Series]:
        """Encode ``frame``; return the table and a reason per rejected row (by index).

        ``unplaced`` gives, per column, why a hierarchy builder left a value out; a row with
        such a value is rejected with that reason instead of "not in the hierarchy".
        """
        reasons = pd.Series(pd.NA, index=frame.index, dtype="string")
        unplaced = unplaced or {}
        leaves = [_leaf_indices(frame, n, h, reasons, unplaced.get(n, {}))
                  for n, h in hierarchies.items()]
        sens_codes = []
        for name in sensitive:
            codes, uniques = factorize_text(frame[name])
            _note(reasons, codes < 0, f"{name}: missing sensitive value")
            sens_codes.append((codes, uniques))
        keep = reasons.isna().to_numpy()
        columns = [index[keep] for index in leaves]
        sens_columns = []
        for codes, uniques in sens_codes:  # re-code: only values of accepted rows remain
            labels, recoded = np.unique(np.asarray(uniques, dtype=object)[codes[keep]],
                                        return_inverse=True)
            sens_columns.append((recoded.astype(np.int64), tuple(map(str, labels))))
        key, span = np.zeros(int(keep.sum()), dtype=np.int64), 1
        for column, card in [*((c, len(h.leaves)) for c, h in zip(columns, hierarchies.values(),
                                                                   strict=True)),
                             *((c, len(lab)) for c, lab in sens_columns)]:
            key, span = _extend(key, span, column, card)
        items = Classes.from_key(key, span)
        first = _first(items.inverse, items.count)
        weights = items.sizes
        sens = {name: Sensitive(name, codes[first], labels, weights)
                for name, (codes, labels) in zip(sensitive, sens_columns, strict=True)}
        table = cls(tuple(hierarchies), tuple(hierarchies.values()),
                    tuple(c[first] for c in columns), sens, weights, items.inverse)
        return table, reasons[~keep]

    @property
    def rows(self) -> int:
        """Number of accepted records."""
        return len(self.record_item)

    @property
    def items(self) -> int:
        return len(self.weights)

    @property
    def heights(self) -> tuple[int, ...]:
        return tuple(h.height for h in self.hierarchies)

    def codes(self, attribute: int, level: int) -> np.ndarray:
        """Code of every item's value of ``attribute`` generalised to ``level``."""
        key = (attribute, level)
        if key not in self._codes:
            self._codes[key] = self.hierarchies[attribute].codes(level)[self.leaf_index[attribute]]
        return self._codes[key]

    def cardinality(self, attribute: int, level: int) -> int:
        return len(self.hierarchies[attribute].labels(level))

    def classes(self, levels: Sequence[int]) -> Classes:
        """The equivalence classes of the generalisation ``levels``."""
        key, span = np.zeros(self.items, dtype=np.int64), 1
        for attribute, level in enumerate(levels):
            card = self.cardinality(attribute, level)
            if card > 1:
                key, span = _extend(key, span, self.codes(attribute, level), card)
        return Classes.from_key(key, span, self.weights)

    def record_classes(self, classes: Classes) -> np.ndarray:
        """The class of each accepted record, in input order."""
        return classes.inverse[self.record_item]


def _extend(key: np.ndarray, span: int, codes: np.ndarray, card: int) -> tuple[np.ndarray, int]:
    """Append a digit of radix ``card`` to a mixed-radix key, re-numbering before overflow."""
    if span * card >= INT64_KEY_LIMIT:
        key = pd.factorize(key)[0].astype(np.int64)
        span = int(key.max()) + 1 if len(key) else 1
    return key * card + codes, span * card


def _first(inverse: np.ndarray, count: int) -> np.ndarray:
    """Index of the first element of each group."""
    first = np.full(count, len(inverse), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(inverse)))
    return first


@dataclass(frozen=True, eq=False)
class Classes:
    """Equivalence classes: the class of each item and the records in each class."""

    inverse: np.ndarray  # item → class id
    sizes: np.ndarray  # class id → number of records
    keys: np.ndarray  # class id → its key
    _pairs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False)

    @classmethod
    def from_key(cls, key: np.ndarray, span: int, weights: np.ndarray | None = None
                 ) -> Classes:
        """Group equal keys; ``weights`` are the records each element stands for."""
        # A dense bincount is several times faster than hashing when the key space is small,
        # and pandas' hash factorisation is faster than np.unique's sort when it is not.
        if span <= 4 * len(key) + 1024:
            counts = np.bincount(key, minlength=span)
            present = np.flatnonzero(counts)
            remap = np.empty(span, dtype=np.int64)
            remap[present] = np.arange(len(present))
            inverse, keys = remap[key], present
        else:
            codes, keys = pd.factorize(key)
            inverse = codes.astype(np.int64)
        sizes = np.bincount(inverse) if weights is None else np.bincount(
            inverse, weights=weights).astype(np.int64)
        return cls(inverse, sizes, np.asarray(keys, dtype=np.int64))

    @property
    def count(self) -> int:
        return len(self.sizes)

    def pairs(self, sensitive: Sensitive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct (class, sensitive value) pairs and how many records each has."""
        cached = self._pairs.get(id(sensitive))
        if cached is None:
            key = self.inverse * sensitive.size + sensitive.codes
            inner = Classes.from_key(key, self.count * sensitive.size, sensitive.weights)
            cached = (inner.keys // sensitive.size, inner.keys % sensitive.size, inner.sizes)
            self._pairs[id(sensitive)] = cached
        return cached
