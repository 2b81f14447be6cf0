"""Statistical disclosure control for the result tables of federated queries.

A result table is a list of plain dicts, one per cell: its stratum columns (``sex``,
``age_band``, ...) and its value columns (``count``, ...). Before a table leaves a node,
:func:`apply_rules` runs the agreement's :class:`DisclosureRules` over it, in this order:

1. **DP noise** (if ``epsilon_per_query`` is set): OpenDP noise on the counts
   (:mod:`healthmesh.privacy.dp`); noisy counts are clamped at 0 (post-processing, so the
   guarantee is kept). Everything after this step is post-processing too.
2. **Cell suppression** (:func:`suppress`) on the (noisy) counts: primary suppression of
   small cells, then complementary suppression so that no suppressed cell can be
   recovered by subtraction from the released cells and the table's margins.
3. **Rounding** (:func:`round_counts`) of the released counts to a base.

**Zero cells.** A count of 0 is released; counts 1 .. ``min_cell - 1`` are suppressed
(the PCORnet convention; "fewer than 10, but not none"). A released zero says that no
patient in the node has that combination, which is what most networks publish.

**What a recipient can and cannot compute** from a suppressed table, even knowing the
unstratified total and every margin over each stratum column (e.g. totals by sex):

* they *can* read every released cell, and every margin to which no suppressed cell
  contributes; for a margin with suppressed cells they can compute the *sum* of those
  cells (margin minus released cells), hence an upper bound for each of them;
* they *cannot* compute the exact value of any suppressed cell by linear arithmetic
  (sums and differences) of released cells and margins: :func:`suppress` checks this by
  Gaussian elimination over the margin equations and suppresses more cells until it
  holds. The one exception is a cell alone in its margin group (no other cell of the
  table shares its other strata values, e.g. the only row for ``sex = other``): that
  margin *is* the cell, a small count that only the margin's own release can suppress.
  Cells absent from the table are taken as known zeros, so algorithms should emit every
  combination of the strata, zeros included.
* A margin computed from a released table is partial whenever one of its cells is
  suppressed; :func:`margin_totals` marks such margins suppressed instead of presenting a
  partial sum as a total.

Suppression protects exact values, not intervals: someone who knows the rules can still
narrow a suppressed cell (it is 1 .. min_cell-1, or a complementary cell); DP noise is
the protection against inference from repeated and overlapping queries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from healthmesh.privacy import dp
from healthmesh.privacy.errors import DisclosureError

__all__ = [
    "MECHANISMS",
    "DisclosureRules",
    "ReleasedTable",
    "apply_rules",
    "margin_totals",
    "round_counts",
    "suppress",
]

MECHANISMS = ("laplace", "gaussian")
"""DP mechanisms a :class:`DisclosureRules` may name."""

SUPPRESSED = "suppressed"
"""The flag column every released row carries."""

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DisclosureRules:
    """The disclosure controls of an agreement (its ``disclosure`` object).

    Applied to every result by :func:`apply_rules`:
    ``min_cell``: counts ``1 .. min_cell-1`` are suppressed (0 and 1 switch it off).
    ``rounding``: released counts are rounded to a multiple of this base (``None``, 0 or
    1: not rounded).
    ``epsilon_per_query``: DP privacy loss of each released table (``None``: no noise).
    ``mechanism``: ``"laplace"`` (pure epsilon-DP) or ``"gaussian"`` (zCDP, spent as
    ``(epsilon_per_query, delta)``-DP).
    ``delta``: the delta of the Gaussian mechanism's guarantee; unused for Laplace.

    Enforced by the node around it, with :class:`~healthmesh.privacy.PrivacyLedger` and
    :class:`~healthmesh.privacy.QueryLimiter`:
    ``total_epsilon``: the agreement's whole privacy budget (``None``: no budget set).
    ``max_repeats`` / ``window_days``: how often one requester may run the same query in
    a sliding window (i2b2's default is about 7 in 30 days).
    """

    min_cell: int = 10
    rounding: int | None = None
    epsilon_per_query: float | None = None
    mechanism: str = "laplace"
    delta: float = 1e-6
    total_epsilon: float | None = None
    max_repeats: int = 7
    window_days: float = 30.0

    def __post_init__(self) -> None:
        _check_int("min_cell", self.min_cell, minimum=0)
        if self.rounding is not None:
            _check_int("rounding", self.rounding, minimum=0)
        for name in ("epsilon_per_query", "total_epsilon"):
            v = getattr(self, name)
            if v is not None and not _positive_number(v):
                raise DisclosureError(f"{name} must be a positive number, got {v!r}")
        if self.mechanism not in MECHANISMS:
            raise DisclosureError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        if not (_positive_number(self.delta) and self.delta < 1):
            raise DisclosureError(f"delta must be in (0, 1), got {self.delta!r}")
        _check_int("max_repeats", self.max_repeats, minimum=1)
        if not _positive_number(self.window_days):
            raise DisclosureError(f"window_days must be positive, got {self.window_days!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DisclosureRules:
        """Rules from an agreement's JSON object: unknown keys are an error, a key that is
        absent or ``null`` takes its default."""
        if not isinstance(data, Mapping):
            raise DisclosureError(f"disclosure rules must be an object, got {data!r}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise DisclosureError(f"unknown disclosure rule(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """The rules as a JSON-ready object (every field, defaults included)."""
        return asdict(self)


@dataclass(slots=True)
class ReleasedTable:
    """A table after :func:`apply_rules`: its rows (each with ``suppressed``), the
    privacy loss spent (``epsilon_spent``, and ``delta_spent`` for the Gaussian
    mechanism; both 0 without noise) and one human-readable note per step applied."""

    rows: list[Row]
    epsilon_spent: float = 0.0
    notes: list[str] = field(default_factory=list)
    delta_spent: float = 0.0


def apply_rules(
    rows: Sequence[Mapping[str, Any]],
    strata: Sequence[str],
    rules: DisclosureRules,
    *,
    rng_seed: int | None = None,
    value: str = "count",
    sensitivity: int = 1,
) -> ReleasedTable:
    """Noise, then suppression, then rounding of ``rows`` as ``rules`` say.

    ``sensitivity`` is how many cells (L1) one person can change by one; 1 for a
    stratified count of patients (see :mod:`healthmesh.privacy.dp`). With noise, the rows
    must be every cell of a data-independent domain (zeros included) and carry no value
    column other than ``value`` (a column the noise does not cover is refused).

    ``rng_seed`` exists only so that callers can say "no seed": OpenDP draws noise from
    the system CSPRNG, which cannot be seeded, so a seed together with noise is refused
    rather than silently ignored. Without noise the steps are deterministic anyway.
    """
    if not all(isinstance(row, Mapping) for row in rows):
        raise DisclosureError("every row of a result table must be an object")
    table = [dict(row) for row in rows]
    released = ReleasedTable(table)
    if rules.epsilon_per_query is not None:
        if rng_seed is not None:
            raise DisclosureError("DP noise comes from OpenDP's CSPRNG and cannot be seeded")
        _check_noise_columns(table, strata, value)
        _add_noise(released, value, rules, sensitivity)
    before = released.rows
    released.rows = suppress(before, strata, value=value, min_cell=rules.min_cell)
    released.notes.append(_suppression_note(before, released.rows, value, rules.min_cell))
    if rules.rounding is not None and rules.rounding > 1:
        released.rows = round_counts(released.rows, rules.rounding, value=value)
        released.notes.append(f"released counts rounded to the nearest multiple of "
                              f"{rules.rounding} (halves up)")
    return released


def suppress(
    rows: Sequence[Mapping[str, Any]],
    strata: Sequence[str],
    value: str = "count",
    min_cell: int = 10,
) -> list[Row]:
    """Primary and complementary cell suppression; returns new rows.

    Cells with ``0 < value < min_cell`` are suppressed. Then, along each stratum column,
    within each group of cells sharing the other strata values, a group with exactly one
    suppressed cell gets a second one (its smallest non-zero released cell, else its
    smallest zero), until stable; finally a check by Gaussian elimination (exact, modulo
    primes) over the margin equations finds any suppressed cell still determined by sums
    and differences and suppresses a neighbour of it, until none is. A suppressed row keeps
    its strata; every other column becomes ``None`` and ``suppressed`` is ``True``; every
    other row gets ``suppressed: False``. Rows whose ``value`` is already ``None`` count as
    suppressed. See the module docstring for what a recipient can still compute.
    """
    _check_int("min_cell", min_cell, minimum=0)
    keys, values = _read_table(rows, strata, value)
    hidden = {i for i, v in enumerate(values) if v is None or 0 < v < min_cell}
    if hidden and strata:
        _complement(_margin_groups(keys, len(strata)), values, hidden)
    return [_released_row(row, strata, i in hidden) for i, row in enumerate(rows)]


def round_counts(rows: Sequence[Mapping[str, Any]], base: int, value: str = "count") -> list[Row]:
    """New rows with ``value`` rounded to the nearest multiple of ``base`` (halves up);
    suppressed rows (``suppressed`` true or ``value`` None) are left as they are."""
    _check_int("rounding base", base, minimum=1)
    out = []
    for row in rows:
        new = dict(row)
        v = new.get(value)
        if v is not None and not new.get(SUPPRESSED):
            _check_value(v, value)
            new[value] = (v + base // 2) // base * base if isinstance(v, int) else (
                math.floor(v / base + 0.5) * base)
        out.append(new)
    return out


def margin_totals(
    rows: Sequence[Mapping[str, Any]],
    strata: Sequence[str],
    by: Sequence[str],
    value: str = "count",
) -> list[Row]:
    """Totals of ``value`` over the cells sharing the ``by`` columns (``by=[]``: the grand
    total), one row per group in first-seen order. A total with a suppressed cell is
    itself suppressed (``None``, ``suppressed: True``): a partial sum is never a total."""
    if not set(by) <= set(strata):
        raise DisclosureError(f"margin columns {list(by)} are not all strata {list(strata)}")
    keys, values = _read_table(rows, strata, value)
    index = [strata.index(column) for column in by]
    totals: dict[tuple[Any, ...], Any] = {}
    for key, v, row in zip(keys, values, rows, strict=True):
        group = tuple(key[i] for i in index)
        hidden = v is None or bool(row.get(SUPPRESSED))
        previous = totals.get(group, 0)
        totals[group] = None if hidden or previous is None else previous + v
    return [dict(zip(by, group, strict=True)) | {value: total, SUPPRESSED: total is None}
            for group, total in totals.items()]


# -- reading a table ----------------------------------------------------------------------


def _read_table(
    rows: Sequence[Mapping[str, Any]], strata: Sequence[str], value: str
) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """The cells' strata keys and values, checked: no duplicate cell, no negative count."""
    keys: list[tuple[Any, ...]] = []
    values: list[Any] = []
    seen: set[tuple[Any, ...]] = set()
    for n, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DisclosureError(f"row {n} is not an object: {row!r}")
        missing = [c for c in (*strata, value) if c not in row]
        if missing:
            raise DisclosureError(f"row {n} lacks column(s) {', '.join(missing)}")
        key = tuple(_hashable(row[c]) for c in strata)
        if key in seen:
            raise DisclosureError(f"row {n} repeats the cell {dict(zip(strata, key, strict=True))}")
        seen.add(key)
        v = None if row.get(SUPPRESSED) else row[value]
        if v is not None:
            _check_value(v, value)
        keys.append(key)
        values.append(v)
    return keys, values


def _hashable(x: Any) -> Any:
    try:
        hash(x)
    except TypeError:
        raise DisclosureError(f"stratum value {x!r} is not a scalar") from None
    return x


def _check_value(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise DisclosureError(f"{name} must be a non-negative number, got {v!r}")


def _check_int(name: str, v: Any, *, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise DisclosureError(f"{name} must be an integer >= {minimum}, got {v!r}")


def _positive_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and v > 0


def _released_row(row: Mapping[str, Any], strata: Sequence[str], hidden: bool) -> Row:
    if not hidden:
        return {**row, SUPPRESSED: False}
    return {k: (v if k in strata else None) for k, v in row.items()} | {SUPPRESSED: True}


# -- complementary suppression ------------------------------------------------------------


def _margin_groups(keys: list[tuple[Any, ...]], ndim: int) -> list[list[int]]:
    """For each stratum column, the groups of cells sharing all the other strata values:
    the equations "cells of the group sum to a known margin". (Every coarser margin,
    down to the grand total, is a sum of these, so it adds no knowledge.) A group of one
    cell is left out: its "margin" is the cell itself, which no suppression in this table
    can hide (see the module docstring)."""
    groups: list[list[int]] = []
    for dim in range(ndim):
        by_rest: dict[tuple[Any, ...], list[int]] = {}
        for i, key in enumerate(keys):
            by_rest.setdefault(key[:dim] + key[dim + 1:], []).append(i)
        groups.extend(g for g in by_rest.values() if len(g) > 1)
    return groups


def _complement(groups: list[list[int]], values: list[Any], hidden: set[int]) -> None:
    """Grow ``hidden`` until no hidden cell is determined by the ``groups`` equations."""
    while True:
        while _pair_singletons(groups, values, hidden):
            pass
        exposed = _determined(groups, hidden)
        if not _protect(exposed, groups, values, hidden):
            return


def _pair_singletons(groups: list[list[int]], values: list[Any], hidden: set[int]) -> bool:
    """One pass of the classic rule: a group with one hidden cell hides one more."""
    changed = False
    for group in groups:
        if sum(i in hidden for i in group) == 1:
            extra = _smallest_released(group, values, hidden)
            if extra is not None:
                hidden.add(extra)
                changed = True
    return changed


def _protect(
    exposed: list[int], groups: list[list[int]], values: list[Any], hidden: set[int]
) -> bool:
    """Hide the smallest released neighbour of each exposed cell (one elimination per
    round, not per cell: a round costs far more than the odd extra suppression)."""
    changed = False
    for cell in exposed:
        neighbours = [i for g in groups if cell in g for i in g]
        extra = _smallest_released(neighbours, values, hidden)
        if extra is not None:
            hidden.add(extra)
            changed = True
    return changed


def _smallest_released(cells: Iterable[int], values: list[Any], hidden: set[int]) -> int | None:
    """The released cell with the smallest non-zero value, else a zero one; ties by order.
    Zeros come last: hiding a zero beside a small cell lets someone who knows the rule
    read the small cell off the group's remainder."""
    candidates = [(values[i] == 0, values[i], i) for i in set(cells) if i not in hidden]
    return min(candidates)[2] if candidates else None


def _determined(groups: list[list[int]], hidden: set[int]) -> list[int]:
    """Hidden cells whose value follows from the margin equations, in cell order."""
    equations = [[i for i in g if i in hidden] for g in groups]
    equations = [eq for eq in equations if eq]
    exposed: list[int] = []
    for component in _components(equations):
        exposed.extend(_determined_in(component))
    return sorted(exposed)


def _components(equations: list[list[int]]) -> list[list[list[int]]]:
    """The equations split into independent systems (no shared unknowns)."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for eq in equations:
        for i in eq[1:]:
            parent[root(i)] = root(eq[0])
    systems: dict[int, list[list[int]]] = {}
    for eq in equations:
        systems.setdefault(root(eq[0]), []).append(eq)
    return list(systems.values())


def _determined_in(equations: list[list[int]]) -> list[int]:
    """Unknowns fixed by one system of 0/1 sum equations: after row reduction, a pivot
    whose row has no other non-zero entry (no free unknown moves it).

    The reduction is exact arithmetic modulo a prime, once for each of two primes, and
    a cell counts as fixed if either reduction says so. Over the rationals a fixed cell
    is a combination of equations whose denominators divide a minor of the 0/1 matrix;
    it is missed modulo p only if p divides that minor, so missing it modulo both primes
    is vanishingly unlikely; the opposite error only suppresses a cell too many.
    """
    cells = sorted({i for eq in equations for i in eq})
    col = {c: j for j, c in enumerate(cells)}
    matrix = np.zeros((len(equations), len(cells)), dtype=np.int64)
    for r, eq in enumerate(equations):
        matrix[r, [col[c] for c in eq]] = 1
    fixed: set[int] = set()
    for prime in _PRIMES:
        reduced = matrix.copy()
        pivots = _row_reduce(reduced, prime)
        fixed.update(cells[j] for r, j in enumerate(pivots)
                     if np.count_nonzero(reduced[r]) == 1)
    return sorted(fixed)


_PRIMES = (2_147_483_647, 2_147_483_629)
"""Primes below 2**31, so that products of residues fit in int64."""


def _row_reduce(matrix: np.ndarray, prime: int) -> list[int]:
    """Reduce ``matrix`` in place to reduced row echelon form modulo ``prime``; the pivot
    column of each leading row, in row order."""
    pivots: list[int] = []
    nrows, ncols = matrix.shape
    for j in range(ncols):
        r = len(pivots)
        if r == nrows:
            break
        below = np.flatnonzero(matrix[r:, j])
        if below.size == 0:
            continue
        k = r + int(below[0])
        matrix[[r, k]] = matrix[[k, r]]
        matrix[r] = matrix[r] * pow(int(matrix[r, j]), prime - 2, prime) % prime
        others = np.flatnonzero(matrix[:, j])
        others = others[others != r]
        if others.size:
            factors = matrix[others, j][:, None]
            matrix[others] = (matrix[others] - factors * matrix[r]) % prime
        pivots.append(j)
    return pivots


# -- noise --------------------------------------------------------------------------------


def _check_noise_columns(table: list[Row], strata: Sequence[str], value: str) -> None:
    allowed = {*strata, value, SUPPRESSED}
    for n, row in enumerate(table):
        extra = sorted(set(row) - allowed)
        if extra:
            raise DisclosureError(
                f"row {n} has column(s) {', '.join(extra)} that DP noise would not cover")
        if row.get(value) is None or row.get(SUPPRESSED):
            raise DisclosureError(f"row {n}: DP noise needs every cell's count")


def _add_noise(released: ReleasedTable, value: str, rules: DisclosureRules, sens: int) -> None:
    """Replace ``value`` by clamped noisy counts; record the loss and a note."""
    eps = rules.epsilon_per_query
    assert eps is not None
    counts = [row[value] for row in released.rows]
    if rules.mechanism == "laplace":
        noisy = dp.laplace_counts(counts, eps, sens)
        width = dp.laplace_accuracy(eps, sens)
        what = f"laplace noise, epsilon={eps:g}"
    else:
        rho = dp.rho_for_epsilon(eps, rules.delta)
        noisy = dp.gaussian_counts(counts, rho, sens)
        width = dp.gaussian_accuracy(rho, sens)
        what = f"gaussian noise, epsilon={eps:g} at delta={rules.delta:g} (rho={rho:.4g})"
        released.delta_spent = rules.delta
    for row, v in zip(released.rows, noisy, strict=True):
        row[value] = max(v, 0)
    released.epsilon_spent = float(eps)
    released.notes.append(
        f"{what}, sensitivity {sens}: 95% of counts within ±{math.floor(width)} of the true "
        f"count; negative noisy counts set to 0")


def _suppression_note(before: list[Row], after: list[Row], value: str, min_cell: int) -> str:
    small = sum(not b.get(SUPPRESSED) and b[value] is not None and 0 < b[value] < min_cell
                for b in before)
    extra = sum(bool(a[SUPPRESSED]) for a in after) - small
    if min_cell <= 1:
        return f"no small-cell suppression (min_cell {min_cell}); {extra} cells withheld"
    return (f"{small} of {len(after)} cells suppressed for counts 1-{min_cell - 1} (0 is "
            f"released), and {extra} more so that none can be recovered from the margins")
