"""Generalisation hierarchies: each leaf value and what it becomes at every level.

A :class:`Hierarchy` is a table with one row per leaf value (level 0) and one column per
level: ``Bachelors;Undergraduate;Higher education;*``. It is read from ARX's CSV hierarchy
files (:meth:`Hierarchy.from_csv`) or built from the values of a column by a generator:

- ``date``  — ``2024-03-17`` → ``2024-03`` → ``2024`` → ``2020-2024`` → ``*``
- ``zip``   — ``12345`` → ``123**`` (ZIP-3) → ``1****`` (region, the first digit) → ``*``
- ``age``   — ``42`` → ``40-44`` → ``40-49`` → ``40-59`` → ``*`` (band widths configurable)
- ``icd10`` — ``E11.9`` → ``E11`` (category) → ``IV`` (chapter, by code prefix) → ``*``

Generators return the values they cannot place (with a reason) instead of guessing; the
caller rejects those rows. Every hierarchy is checked to be a tree: a value at one level has
exactly one generalisation at the next, or generalising could split an equivalence class
and the lattice search would be wrong.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

import numpy as np

from healthmesh.privacy.anonymize.errors import HierarchyError

__all__ = [
    "BUILDERS",
    "MAX_HIERARCHY_BYTES",
    "Hierarchy",
    "age_hierarchy",
    "date_hierarchy",
    "icd10_hierarchy",
    "zip_hierarchy",
]

MAX_HIERARCHY_BYTES = 64 * 1024 * 1024  # a hierarchy file bigger than this is refused
MAX_LEVELS = 32
TOP = "*"


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """Leaf values and their generalisations; ``levels[l][i]`` is leaf ``i`` at level ``l``.

    Level 0 is the leaf value itself. Build with :meth:`from_rows`, :meth:`from_csv` or a
    generator; the constructor checks that the table is a tree.
    """

    levels: tuple[tuple[str, ...], ...]
    name: str = ""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self.levels, self.name)
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.levels[0])})

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[str]], name: str = "") -> Hierarchy:
        """A hierarchy from rows ``(leaf, level 1, ..., level h)``, all of one length."""
        rows = [tuple(str(v).strip() for v in row) for row in rows]
        if not rows:
            raise HierarchyError(f"hierarchy {name!r} has no rows")
        width = len(rows[0])
        for number, row in enumerate(rows, 1):
            if len(row) != width:
                raise HierarchyError(f"hierarchy {name!r} row {number} has {len(row)} levels, "
                                     f"row 1 has {width}")
        return cls(tuple(zip(*rows, strict=True)), name)

    @classmethod
    def from_csv(cls, path: Path, delimiter: str = ";", name: str = "") -> Hierarchy:
        """Read an ARX hierarchy file: one row per leaf, ``value;level1;level2;...``."""
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_HIERARCHY_BYTES:
                raise HierarchyError(f"hierarchy file {path} is {size} bytes, over the "
                                     f"{MAX_HIERARCHY_BYTES} byte limit")
            with path.open(newline="", encoding="utf-8") as handle:
                rows = [row for row in csv.reader(handle, delimiter=delimiter) if row]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise HierarchyError(f"cannot read hierarchy file {path}: {exc}") from exc
        return cls.from_rows(rows, name or path.stem)

    @property
    def height(self) -> int:
        """Number of levels, the leaf level included."""
        return len(self.levels)

    @property
    def leaves(self) -> tuple[str, ...]:
        return self.levels[0]

    def index_of(self, values: Sequence[str]) -> np.ndarray:
        """Leaf index of each value, -1 where the value is not a leaf of this hierarchy."""
        get = self._index.get
        return np.fromiter((get(v, -1) for v in values), dtype=np.int64, count=len(values))

    @cached_property
    def _encoded(self) -> tuple[tuple[np.ndarray, tuple[str, ...]], ...]:
        out = []
        for column in self.levels:
            labels, codes = np.unique(np.asarray(column, dtype=object), return_inverse=True)
            out.append((codes.astype(np.int64), tuple(str(v) for v in labels)))
        return tuple(out)

    def codes(self, level: int) -> np.ndarray:
        """Code of each leaf's generalisation at ``level`` (leaf index → code)."""
        return self._encoded[level][0]

    def labels(self, level: int) -> tuple[str, ...]:
        """The distinct values of ``level``, indexed by code."""
        return self._encoded[level][1]

    def leaf_counts(self, level: int) -> np.ndarray:
        """Number of leaves under each generalised value of ``level`` (indexed by code)."""
        return np.bincount(self.codes(level), minlength=len(self.labels(level)))

    def generalise(self, value: str, level: int) -> str:
        """The generalisation of one leaf value at ``level``."""
        try:
            return self.levels[level][self._index[value]]
        except KeyError:
            raise HierarchyError(f"{value!r} is not a leaf of hierarchy {self.name!r}") from None


def _validate(levels: tuple[tuple[str, ...], ...], name: str) -> None:
    if not levels or not levels[0]:
        raise HierarchyError(f"hierarchy {name!r} has no rows")
    if len(levels) > MAX_LEVELS:
        raise HierarchyError(f"hierarchy {name!r} has {len(levels)} levels (max {MAX_LEVELS})")
    leaves = levels[0]
    if len(set(leaves)) != len(leaves):
        dup = next(v for v, n in Counter(leaves).items() if n > 1)
        raise HierarchyError(f"hierarchy {name!r} lists the leaf {dup!r} twice")
    if any(v == "" for v in leaves):
        raise HierarchyError(f"hierarchy {name!r} has an empty leaf value")
    for level in range(len(levels) - 1):
        parent: dict[str, str] = {}
        for low, high in zip(levels[level], levels[level + 1], strict=True):
            if parent.setdefault(low, high) != high:
                raise HierarchyError(
                    f"hierarchy {name!r} is not a tree: {low!r} at level {level} generalises "
                    f"to both {parent[low]!r} and {high!r} at level {level + 1}")


# --- generators --------------------------------------------------------------------------
# Written by hand: no maintained library builds ARX-style value hierarchies; each is a few
# lines of string arithmetic over the column's distinct values.

Built = tuple[Hierarchy, dict[str, str]]  # hierarchy and {value: why it was not placed}


def _build(name: str, values: Iterable[str], place: Callable[[str], tuple[str, ...]]) -> Built:
    rows, bad = [], {}
    for value in sorted(set(values)):
        try:
            rows.append((value, *place(value)))
        except ValueError as exc:
            bad[value] = str(exc)
    if not rows:
        raise HierarchyError(f"no value of column {name!r} fits its hierarchy "
                             f"(first problem: {next(iter(bad.values()), 'no values')})")
    return Hierarchy.from_rows(rows, name), bad


def date_hierarchy(values: Iterable[str], name: str = "date") -> Built:
    """Dates → month → year → 5-year band → ``*``; partial or invalid dates are returned."""

    def place(value: str) -> tuple[str, ...]:
        if len(value) < 10:
            raise ValueError(f"{value!r} is not a full date (YYYY-MM-DD)")
        try:
            day = date.fromisoformat(value[:10])
        except ValueError:
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
        band = day.year - day.year % 5
        return (f"{day.year:04d}-{day.month:02d}", f"{day.year:04d}",
                f"{band:04d}-{band + 4:04d}", TOP)

    return _build(name, values, place)


_ZIP = re.compile(r"^(\d{5})(-\d{4})?$")


def zip_hierarchy(values: Iterable[str], name: str = "zip") -> Built:
    """US ZIP codes (``12345`` or ``12345-6789``) → ZIP-3 → region (first digit) → ``*``."""

    def place(value: str) -> tuple[str, ...]:
        if not _ZIP.match(value):
            raise ValueError(f"{value!r} is not a ZIP code (12345 or 12345-6789)")
        return (value[:3] + "**", value[0] + "****", TOP)

    return _build(name, values, place)


def age_hierarchy(values: Iterable[str], bands: Sequence[int] = (5, 10, 20),
                  name: str = "age", maximum: int = 150) -> Built:
    """Ages → bands of each width in ``bands`` (each a multiple of the previous) → ``*``."""
    bands = [int(b) for b in bands]
    if not bands or any(b < 1 for b in bands) or any(
            high % low for low, high in zip(bands, bands[1:], strict=False)):
        raise HierarchyError(f"age bands {bands} must be positive, each a multiple of the one "
                             "before (5, 10, 20), so that every band lies in one wider band")

    def place(value: str) -> tuple[str, ...]:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an age") from None
        if not number.is_integer() or not 0 <= number <= maximum:
            raise ValueError(f"{value!r} is not a whole age in 0..{maximum}")
        age = int(number)
        return (*(f"{age - age % b}-{age - age % b + b - 1}" for b in bands), TOP)

    return _build(name, values, place)


# ICD-10 (WHO 2019) chapters by the first code of each; a code belongs to the last chapter
# whose first code is <= its category.
_ICD10_CHAPTERS = [
    ("A00", "I"), ("C00", "II"), ("D50", "III"), ("E00", "IV"), ("F00", "V"), ("G00", "VI"),
    ("H00", "VII"), ("H60", "VIII"), ("I00", "IX"), ("J00", "X"), ("K00", "XI"),
    ("L00", "XII"), ("M00", "XIII"), ("N00", "XIV"), ("O00", "XV"), ("P00", "XVI"),
    ("Q00", "XVII"), ("R00", "XVIII"), ("S00", "XIX"), ("U00", "XXII"), ("V01", "XX"),
    ("Z00", "XXI"),
]
_ICD10 = re.compile(r"^[A-Z]\d{2}(\.?[0-9A-Z]{1,4})?$")


def icd10_chapter(category: str) -> str:
    """The ICD-10 chapter (roman numeral) of a three-character category such as ``E11``."""
    chapter = _ICD10_CHAPTERS[0][1]
    for first, roman in _ICD10_CHAPTERS:
        if category >= first:
            chapter = roman
    return chapter


def icd10_hierarchy(values: Iterable[str], name: str = "icd10") -> Built:
    """ICD-10 codes → category (3 characters) → chapter → ``*``."""

    def place(value: str) -> tuple[str, ...]:
        if not _ICD10.match(value):
            raise ValueError(f"{value!r} is not an ICD-10 code (e.g. E11 or E11.9)")
        category = value[:3]
        return (category, icd10_chapter(category), TOP)

    return _build(name, values, place)


BUILDERS: dict[str, Callable[..., Built]] = {
    "date": date_hierarchy, "zip": zip_hierarchy, "age": age_hierarchy,
    "icd10": icd10_hierarchy}
