"""Anonymise a table: encode, search the lattice, transform, measure risk, decide release.

:func:`anonymize` is the one entry point: it takes a pandas DataFrame and an
:class:`AnonymizationConfig` and returns an :class:`AnonymizationResult` with the released
table, the rows rejected before anonymisation (and why), the chosen generalisation levels,
suppressed records, equivalence classes, utility, and the risk before and after — or raises
:class:`ReleaseRefused` when the result's risk is above the configured limits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from healthmesh.privacy.anonymize.config import AnonymizationConfig, HierarchySpec
from healthmesh.privacy.anonymize.errors import (
    AnonymizationConfigError,
    NoAnonymousTransformation,
    ReleaseRefused,
)
from healthmesh.privacy.anonymize.hierarchy import BUILDERS, TOP, Hierarchy
from healthmesh.privacy.anonymize.lattice import Evaluation, search
from healthmesh.privacy.anonymize.metrics import make_metric
from healthmesh.privacy.anonymize.reidentification import RiskReport, risk_from_sizes
from healthmesh.privacy.anonymize.table import EncodedTable, factorize_text

__all__ = ["AnonymizationResult", "anonymize", "build_hierarchies"]


@dataclass
class AnonymizationResult:
    """What :func:`anonymize` produced; ``table`` is safe to release under the config."""

    table: pd.DataFrame
    rejects: pd.DataFrame  # rejected input rows: ``row`` (0-based position) and ``reason``
    levels: dict[str, int]
    suppressed: int
    classes: int
    metric: str
    utility: float
    utility_per_attribute: dict[str, float]
    risk_before: RiskReport
    risk_after: RiskReport
    dropped_columns: list[str]
    search: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the tables, as JSON-ready values."""
        return {
            "records": int(len(self.table)), "rejected": int(len(self.rejects)),
            "released_records": int(len(self.table)) - self.suppressed,
            "levels": self.levels, "suppressed": self.suppressed,
            "classes": self.classes, "metric": self.metric, "utility": self.utility,
            "utility_per_attribute": self.utility_per_attribute,
            "risk_before": self.risk_before.to_dict(), "risk_after": self.risk_after.to_dict(),
            "dropped_columns": self.dropped_columns, "search": self.search,
        }


def build_hierarchies(frame: pd.DataFrame, specs: Mapping[str, HierarchySpec]
                      ) -> tuple[dict[str, Hierarchy], dict[str, dict[str, str]]]:
    """The hierarchy of each quasi-identifier, and values a builder could not place."""
    hierarchies, unplaced = {}, {}
    for column, spec in specs.items():
        if spec.hierarchy is not None:
            hierarchies[column] = spec.hierarchy
        elif spec.file is not None:
            hierarchies[column] = Hierarchy.from_csv(spec.file, name=column, **spec.options)
        else:
            _, values = factorize_text(frame[column])
            builder = BUILDERS[str(spec.builder)]
            hierarchy, bad = builder([v for v in values if v], name=column, **spec.options)
            hierarchies[column], unplaced[column] = hierarchy, bad
    return hierarchies, unplaced


def _check_columns(frame: pd.DataFrame, config: AnonymizationConfig) -> list[str]:
    if frame.columns.duplicated().any():
        twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise AnonymizationConfigError(f"the table names columns more than once: {twice}")
    declared = [*config.quasi_identifiers, *config.sensitive, *config.identifiers,
                *config.insensitive]
    absent = [c for c in declared if c not in frame.columns and c not in config.identifiers]
    if absent:
        raise AnonymizationConfigError(f"declared columns not in the table: {absent}")
    undeclared = [str(c) for c in frame.columns if c not in declared]
    if undeclared and config.undeclared == "error":
        raise AnonymizationConfigError(
            f"columns not declared in any role: {undeclared} (declare them as identifiers, "
            "insensitive or sensitive, or set undeclared: drop)")
    return [c for c in frame.columns if c in config.identifiers] + undeclared


def _transform(frame: pd.DataFrame, table: EncodedTable, best: Evaluation,
               keep: list[str]) -> pd.DataFrame:
    suppressed = ~best.released[table.record_classes(best.classes)]
    out = {}
    for column in frame.columns:
        if column in table.names:
            a = table.names.index(column)
            labels = np.asarray(table.hierarchies[a].labels(best.levels[a]), dtype=object)
            values = labels[table.codes(a, best.levels[a])[table.record_item]]
            values[suppressed] = TOP
            out[column] = values
        elif column in keep:
            out[column] = frame[column].to_numpy()
    return pd.DataFrame(out, index=frame.index)


def anonymize(frame: pd.DataFrame, config: AnonymizationConfig) -> AnonymizationResult:
    """Anonymise ``frame`` as ``config`` says (see the module docstring)."""
    started = time.perf_counter()
    frame = frame.reset_index(drop=True)  # positions: rejects name the 0-based input row
    dropped = _check_columns(frame, config)
    hierarchies, unplaced = build_hierarchies(frame, config.quasi_identifiers)
    table, reasons = EncodedTable.encode(frame, hierarchies, config.sensitive, unplaced)
    if table.rows == 0:
        why = f"every row was rejected (first: {reasons.iloc[0]})" if len(reasons) else (
            "the table has no rows")
        raise NoAnonymousTransformation(f"nothing to anonymise: {why}")
    accepted = frame.drop(index=reasons.index) if len(reasons) else frame
    max_suppressed = math.floor(config.suppression_limit * table.rows + 1e-9)
    metric = make_metric(config.metric, table, config.aggregate)
    found = search(table, config.models, metric, max_suppressed)
    if found.best is None:
        raise NoAnonymousTransformation(
            "no generalisation satisfies " + ", ".join(m.describe() for m in config.models)
            + f" with at most {max_suppressed} suppressed records "
            f"({config.suppression_limit:.2%} of {table.rows})")
    best = found.best
    threshold = config.release.threshold
    before = risk_from_sizes(table.classes([0] * len(table.names)).sizes, None, threshold)
    after = risk_from_sizes(best.classes.sizes[best.released], None, threshold)
    violations = config.release.violations(after.to_dict())
    if violations:
        raise ReleaseRefused(violations, after.to_dict())
    keep = [*config.quasi_identifiers, *config.sensitive, *config.insensitive]
    rejects = pd.DataFrame({"row": reasons.index.to_numpy(dtype=np.int64),
                            "reason": reasons.astype(object).to_numpy()})
    return AnonymizationResult(
        table=_transform(accepted, table, best, keep), rejects=rejects,
        levels=dict(zip(table.names, best.levels, strict=True)),
        suppressed=best.suppressed, classes=best.released_classes,
        metric=config.metric, utility=best.value,
        utility_per_attribute=metric.per_attribute(best.levels, best.classes, best.released),
        risk_before=before, risk_after=after, dropped_columns=dropped,
        search={"lattice_size": found.lattice_size, "checked": found.checked,
                "tagged": found.tagged, "search_seconds": round(found.seconds, 4),
                "total_seconds": round(time.perf_counter() - started, 4),
                "max_suppressed": max_suppressed},
    )
