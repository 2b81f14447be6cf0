"""Re-identification risk of a table, by ARX's sample-summary formulas (El Emam's models).

Records are grouped into equivalence classes on their quasi-identifiers; suppressed
records are left out. For a class of ``f`` records in the sample and ``F`` in the
population:

- **prosecutor** (the attacker knows the person is in the table): a record's risk is
  ``1/f``. Reported: the share of records whose risk exceeds the threshold
  (``records_at_risk``), the highest risk ``1/min f`` and the average risk, the number of
  classes over the number of records (the expected share re-identified).
- **journalist** (the attacker does not know who is in the table and matches against a
  population register): the same with ``1/F``; the average is
  ``max(classes / sum F, mean f/F)``.
- **marketer** (the attacker re-identifies as many as possible): ``mean f/F``.

Without a population table the sample is its own population (``F = f``, ARX's default), so
journalist risk equals prosecutor risk and marketer risk equals the average prosecutor
risk — an upper bound for a sample drawn from a larger population.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from healthmesh.privacy.anonymize.errors import AnonymizationConfigError
from healthmesh.privacy.anonymize.table import as_text

__all__ = ["DEFAULT_THRESHOLD", "RiskReport", "risk", "risk_from_sizes"]

DEFAULT_THRESHOLD = 0.2


@dataclass(frozen=True)
class RiskReport:
    """Risk measures of one table; shares and probabilities are in [0, 1]."""

    records: int
    classes: int
    threshold: float
    unique_share: float
    prosecutor_records_at_risk: float
    prosecutor_highest: float
    prosecutor_average: float
    journalist_records_at_risk: float
    journalist_highest: float
    journalist_average: float
    marketer_average: float
    population_model: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def risk_from_sizes(sample: np.ndarray, population: np.ndarray | None = None,
                    threshold: float = DEFAULT_THRESHOLD) -> RiskReport:
    """Risk from class sizes in the sample (and the same classes' sizes in the population)."""
    if not 0 <= threshold <= 1:
        raise AnonymizationConfigError(f"risk threshold must be in [0, 1], not {threshold!r}")
    f = np.asarray(sample, dtype=np.float64)
    f = f[f > 0]
    model = "sample is the population" if population is None else "population table"
    if len(f) == 0:
        return RiskReport(0, 0, threshold, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, model)
    big_f = f if population is None else np.asarray(population, dtype=np.float64)[
        np.asarray(sample) > 0]
    if np.any(big_f < f):
        raise AnonymizationConfigError("a population class is smaller than the same sample "
                                       "class: the population must contain the sample")
    n = f.sum()
    return RiskReport(
        records=int(n), classes=len(f), threshold=threshold,
        unique_share=float(f[f == 1].sum() / n),
        prosecutor_records_at_risk=float(f[1 / f > threshold].sum() / n),
        prosecutor_highest=float(1 / f.min()),
        prosecutor_average=float(len(f) / n),
        journalist_records_at_risk=float(f[1 / big_f > threshold].sum() / n),
        journalist_highest=float(1 / big_f.min()),
        journalist_average=float(max(len(f) / big_f.sum(), (f / big_f).sum() / n)),
        marketer_average=float((f / big_f).sum() / n),
        population_model=model,
    )


def _class_keys(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnonymizationConfigError(f"quasi-identifiers not in the table: {missing}")
    return pd.DataFrame({c: as_text(frame[c]).fillna("\x00NA") for c in columns})


def risk(frame: pd.DataFrame, quasi_identifiers: Sequence[str],
         threshold: float = DEFAULT_THRESHOLD, population: pd.DataFrame | None = None,
         suppressed: np.ndarray | None = None) -> RiskReport:
    """Re-identification risk of ``frame`` on ``quasi_identifiers`` (see the module doc).

    ``population`` is an optional larger table with the same quasi-identifiers that
    contains the sample; ``suppressed`` marks rows left out of the risk (ARX excludes
    suppressed records). Missing values count as one value.
    """
    if not quasi_identifiers:
        raise AnonymizationConfigError("risk needs at least one quasi-identifier")
    keys = _class_keys(frame, quasi_identifiers)
    if suppressed is not None:
        keys = keys[~np.asarray(suppressed, dtype=bool)]
    sizes = keys.value_counts(sort=False)
    if population is None:
        return risk_from_sizes(sizes.to_numpy(), None, threshold)
    pop = _class_keys(population, quasi_identifiers).value_counts(sort=False)
    matched = pop.reindex(sizes.index)
    if matched.isna().any():
        raise AnonymizationConfigError("the population table does not contain every sample "
                                       "record's quasi-identifiers")
    return risk_from_sizes(sizes.to_numpy(), matched.to_numpy(), threshold)
