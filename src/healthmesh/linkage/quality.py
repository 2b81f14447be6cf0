"""Linkage quality against a known truth: pairwise precision, recall and F1.

A *pair* is two records at different sites. The truth links a pair when both records
belong to one person in the synthetic population's ``truth/linkage.csv``; the result
links it when both got the same network person id. Only records present in the result
count, so evaluating two sites' link tables measures those two sites.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from healthmesh.linkage.errors import EncodingFileError

__all__ = ["Quality", "pairwise_quality", "read_truth"]

Key = tuple[str, str]  # (site, local record id)


@dataclass(frozen=True, slots=True)
class Quality:
    """Pair counts and the measures built from them."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """The counts and measures, for JSON output."""
        return {"precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4), "true_positives": self.true_positives,
                "false_positives": self.false_positives,
                "false_negatives": self.false_negatives}


def read_truth(path: Path, resource_type: str = "Patient") -> dict[Key, str]:
    """``(site, resource_id) → person_id`` from a truth/linkage.csv file.

    Raises :class:`EncodingFileError` when the file is missing or lacks the columns.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            needed = {"site", "resource_type", "resource_id", "person_id"}
            if not needed <= set(reader.fieldnames or ()):
                raise EncodingFileError(f"{path}: truth file needs columns {sorted(needed)}")
            return {(row["site"], row["resource_id"]): row["person_id"] for row in reader
                    if row["resource_type"] == resource_type}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EncodingFileError(f"cannot read truth file {path}: {exc}") from exc


def _cross_pairs(members: Iterable[str]) -> int:
    """Pairs among records at different sites (``members`` lists each record's site)."""
    per_site = Counter(members)
    n = sum(per_site.values())
    return n * (n - 1) // 2 - sum(c * (c - 1) // 2 for c in per_site.values())


def pairwise_quality(assigned: Mapping[Key, str], truth: Mapping[Key, str]) -> Quality:
    """Compare ``assigned`` ((site, id) → network person) with ``truth`` over cross-site pairs.

    Records missing from ``truth`` count as people of their own.
    """
    predicted: dict[str, list[str]] = {}
    actual: dict[str, list[str]] = {}
    both: dict[tuple[str, str], list[str]] = {}
    for key, person in assigned.items():
        real = truth.get(key, f"\x00unknown:{key[0]}:{key[1]}")
        predicted.setdefault(person, []).append(key[0])
        actual.setdefault(real, []).append(key[0])
        both.setdefault((person, real), []).append(key[0])
    tp = sum(_cross_pairs(v) for v in both.values())
    found = sum(_cross_pairs(v) for v in predicted.values())
    real_pairs = sum(_cross_pairs(v) for v in actual.values())
    return Quality(tp, found - tp, real_pairs - tp)
