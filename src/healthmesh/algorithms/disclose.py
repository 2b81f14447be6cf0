"""Disclosure control of a local result: the algorithms' side of :mod:`healthmesh.privacy`.

:func:`healthmesh.privacy.apply_rules` controls one count column of a table. A result may
have several (``numerator`` and ``denominator``) and statistic or sketch columns
(``summary``), so :func:`disclose`:

* runs ``apply_rules`` on each ``count`` column separately (noise, suppression, rounding;
  the privacy loss of the columns adds up) and suppresses a row's every value when any of
  its counts is suppressed (a superset of protected patterns stays protected);
* blanks the ``statistic`` columns (sums) of a suppressed row, and refuses DP noise when
  there are any: sums and histograms are not noised here;
* in a ``sketch`` (histogram) of a released row, suppresses the bins with
  ``0 < count < min_cell`` and, when that leaves exactly one hidden bin, also the smallest
  other non-zero bin, so that no bin follows from the row's released ``n``.

Every released row carries ``suppressed`` (True or False), which the pooling reads.
"""

from __future__ import annotations

from typing import Any

from .base import LocalResult
from .errors import AlgorithmError

__all__ = ["disclose"]


def disclose(local: LocalResult, rules: Any, *, rng_seed: int | None = None) -> Any:
    """A :class:`healthmesh.privacy.ReleasedTable` of ``local`` under ``rules``."""
    from healthmesh.privacy import ReleasedTable, apply_rules

    strata = [c.name for c in local.columns if c.kind == "stratum"]
    counts = [c.name for c in local.columns if c.kind == "count"]
    others = [c for c in local.columns if c.kind in ("statistic", "sketch")]
    if others and rules.epsilon_per_query is not None:
        raise AlgorithmError(f"{local.algorithm}: DP noise is not available for the "
                             f"{', '.join(c.name for c in others)} column(s); release it "
                             "with suppression and rounding only")
    released = ReleasedTable([dict(row) for row in local.rows])
    hidden: set[int] = set()
    for column in counts:
        table = [{**{s: row[s] for s in strata}, column: row[column]} for row in local.rows]
        out = apply_rules(table, strata, rules, rng_seed=rng_seed, value=column,
                          sensitivity=max(1, local.sensitivity))
        released.epsilon_spent += out.epsilon_spent
        released.delta_spent += out.delta_spent
        released.notes += [f"{column}: {note}" for note in out.notes]
        for i, row in enumerate(out.rows):
            released.rows[i][column] = row[column]
            if row.get("suppressed"):
                hidden.add(i)
    for i, row in enumerate(released.rows):
        row["suppressed"] = i in hidden
        for column in (*counts, *(c.name for c in others)):
            if i in hidden:
                row[column] = None
        for column in (c.name for c in others if c.kind == "sketch"):
            if i not in hidden:
                row[column] = suppress_bins(row[column], rules.min_cell)
    return released


def suppress_bins(bins: list[Any], min_cell: int) -> list[Any]:
    """Bins with ``0 < count < min_cell`` as None, plus a complementary one if needed."""
    out = [None if b is not None and 0 < b < min_cell else b for b in bins]
    if sum(b is None for b in out) == 1:
        rest = [(b, i) for i, b in enumerate(out) if b]
        if rest:
            out[min(rest)[1]] = None
    return out
