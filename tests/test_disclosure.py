"""Disclosure control: rules, small-cell and complementary suppression, rounding, DP noise."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from healthmesh.errors import HealthmeshError
from healthmesh.privacy import (
    DisclosureError,
    DisclosureRules,
    PrivacyError,
    apply_rules,
    gaussian_accuracy,
    gaussian_counts,
    gaussian_scale,
    laplace_accuracy,
    laplace_counts,
    laplace_scale,
    margin_totals,
    rho_for_epsilon,
    round_counts,
    suppress,
)
from healthmesh.privacy.dp import gaussian_measurement, laplace_measurement

STRATA = ["sex", "age_band"]


def table(counts: dict[tuple[str, str], int | None]) -> list[dict[str, Any]]:
    return [{"sex": s, "age_band": a, "count": c} for (s, a), c in counts.items()]


def grid(values: Sequence[Sequence[int | None]], dims: Sequence[str] = STRATA) -> list[dict]:
    """A 2-D table: values[r][c] is the cell (dims[0]=r, dims[1]=c)."""
    return [{dims[0]: f"r{r}", dims[1]: f"c{c}", "count": v}
            for r, row in enumerate(values) for c, v in enumerate(row)]


# -- an independent checker: is a suppressed cell recoverable from the margins? ------------


def recoverable_cells(rows: list[dict], strata: list[str]) -> list[dict]:
    """Suppressed cells that linear arithmetic on released cells and *every* margin (the
    grand total and totals over each subset of strata) pins down exactly.

    Independent of the implementation: builds every margin equation afresh and tests, with
    numpy's rank, whether the unit vector of a suppressed cell lies in the row space of
    the equations restricted to the suppressed cells (then some combination of margins
    minus released cells equals that cell)."""
    hidden = [i for i, row in enumerate(rows) if row["suppressed"]]
    if not hidden:
        return []
    col = {cell: j for j, cell in enumerate(hidden)}
    equations = []
    for size in range(len(strata)):
        for by in itertools.combinations(strata, size):
            groups: dict[tuple, list[int]] = {}
            for i, row in enumerate(rows):
                groups.setdefault(tuple(row[c] for c in by), []).append(i)
            for members in groups.values():
                eq = np.zeros(len(hidden))
                for i in members:
                    if i in col:
                        eq[col[i]] = 1
                if eq.any():
                    equations.append(eq)
    a = np.array(equations)
    rank = np.linalg.matrix_rank(a)
    out = []
    for cell, j in col.items():
        unit = np.zeros(len(hidden))
        unit[j] = 1
        if np.linalg.matrix_rank(np.vstack([a, unit])) == rank:
            out.append(rows[cell])
    return out


# -- rules --------------------------------------------------------------------------------


def test_rules_defaults_and_json_round_trip() -> None:
    rules = DisclosureRules()
    assert (rules.min_cell, rules.rounding, rules.epsilon_per_query) == (10, None, None)
    assert rules.mechanism == "laplace"
    assert (rules.total_epsilon, rules.max_repeats, rules.window_days) == (None, 7, 30)
    custom = DisclosureRules(min_cell=5, rounding=5, epsilon_per_query=0.5, mechanism="gaussian",
                             total_epsilon=3.0, max_repeats=3, window_days=7)
    again = DisclosureRules.from_dict(json.loads(json.dumps(custom.to_dict())))
    assert again == custom


def test_rules_from_an_agreement_object_with_nulls() -> None:
    agreement = {"min_cell": None, "rounding": None, "epsilon_per_query": 1.0,
                 "total_epsilon": 10.0, "mechanism": "laplace", "max_repeats": 5}
    rules = DisclosureRules.from_dict(agreement)
    assert (rules.min_cell, rules.rounding, rules.max_repeats) == (10, None, 5)


@pytest.mark.parametrize("data", [
    {"min_cell": -1}, {"min_cell": "10"}, {"min_cell": True}, {"rounding": -5},
    {"epsilon_per_query": 0}, {"epsilon_per_query": float("inf")}, {"mechanism": "exp"},
    {"delta": 1.0}, {"k_anonymity": 5}, {"total_epsilon": -1}, {"max_repeats": 0},
    {"window_days": 0},
])
def test_rules_refuse_bad_agreement_values(data: dict) -> None:
    with pytest.raises(DisclosureError):
        DisclosureRules.from_dict(data)


def test_privacy_errors_belong_to_the_healthmesh_tree() -> None:
    assert issubclass(DisclosureError, PrivacyError)
    assert issubclass(PrivacyError, HealthmeshError)


# -- primary suppression ------------------------------------------------------------------


def test_small_cells_suppressed_zero_and_min_cell_released() -> None:
    rows = [{"sex": s, "count": c, "mean_age": 50.0} for s, c in
            [("a", 0), ("b", 1), ("c", 9), ("d", 10), ("e", 11), ("f", 400)]]
    out = suppress(rows, ["sex"])
    by_sex = {row["sex"]: row for row in out}
    assert by_sex["a"] == {"sex": "a", "count": 0, "mean_age": 50.0, "suppressed": False}
    for small in "bc":
        # every value column of a small cell is withheld, not just the count
        assert by_sex[small] == {"sex": small, "count": None, "mean_age": None,
                                 "suppressed": True}
    assert by_sex["d"]["count"] == 10
    assert rows[1]["count"] == 1 and "suppressed" not in rows[1]  # input untouched


def test_min_cell_one_or_zero_switches_suppression_off() -> None:
    rows = table({("f", "0-9"): 1, ("m", "0-9"): 2})
    assert not any(row["suppressed"] for row in suppress(rows, STRATA, min_cell=1))


def test_malformed_tables_refused() -> None:
    with pytest.raises(DisclosureError, match="lacks"):
        suppress([{"sex": "f"}], ["sex"])
    with pytest.raises(DisclosureError, match="repeats"):
        suppress([{"sex": "f", "count": 3}, {"sex": "f", "count": 30}], ["sex"])
    with pytest.raises(DisclosureError, match="non-negative"):
        suppress([{"sex": "f", "count": -3}], ["sex"])


# -- complementary suppression ------------------------------------------------------------


def test_one_dimensional_total_cannot_reveal_the_small_cell() -> None:
    rows = [{"sex": "female", "count": 4}, {"sex": "male", "count": 250},
            {"sex": "other", "count": 30}]
    out = suppress(rows, ["sex"])
    hidden = {row["sex"] for row in out if row["suppressed"]}
    # total - male - other = female unless a second cell goes: the smallest one
    assert hidden == {"female", "other"}
    assert recoverable_cells(out, ["sex"]) == []


def test_zero_is_not_the_preferred_complement() -> None:
    # hiding the zero would leave "female + unknown = 4": anyone knowing the rule
    # reads female = 4 (a complement would be 0 or >= 10, and 4 - 10 < 0)
    rows = [{"sex": "female", "count": 4}, {"sex": "male", "count": 25},
            {"sex": "unknown", "count": 0}]
    hidden = {row["sex"] for row in suppress(rows, ["sex"]) if row["suppressed"]}
    assert hidden == {"female", "male"}


def test_two_dimensional_example_hides_a_cycle() -> None:
    rows = grid([[3, 20, 30], [40, 50, 60]])
    out = suppress(rows, STRATA)
    hidden = [(row["sex"], row["age_band"]) for row in out if row["suppressed"]]
    # every row and column holding a suppressed cell holds at least two
    for dim in (0, 1):
        counts: dict[str, int] = {}
        for cell in hidden:
            counts[cell[dim]] = counts.get(cell[dim], 0) + 1
        assert all(n >= 2 for n in counts.values())
    assert recoverable_cells(out, STRATA) == []


def test_exact_check_catches_what_pairing_misses() -> None:
    # Two 2x2 blocks of already-suppressed cells joined by one more: every row and
    # column has 0 or >= 2 suppressed cells, yet the joining cell is a "bridge" that
    # margins of rows r2, r3 and columns c2, c3 give away.
    n = None
    rows = grid([[n, n, 50, 60], [n, n, n, 70], [80, 90, n, n], [11, 12, n, n]])
    assert len(recoverable_cells([{**r, "suppressed": r["count"] is None} for r in rows],
                                 STRATA)) == 1
    out = suppress(rows, STRATA)
    assert sum(r["suppressed"] for r in out) > sum(r["count"] is None for r in rows)
    assert recoverable_cells(out, STRATA) == []


@pytest.mark.parametrize("seed", range(60))
def test_no_suppressed_cell_recoverable_in_random_2d_tables(seed: int) -> None:
    rng = random.Random(seed)
    shape = rng.randint(2, 6), rng.randint(2, 6)
    values = [[rng.choice([0, 0, 1, 2, 5, 9, 10, 12, 30, 150, rng.randint(0, 300)])
               for _ in range(shape[1])] for _ in range(shape[0])]
    out = suppress(grid(values), STRATA)
    assert recoverable_cells(out, STRATA) == []
    for row, v in zip(out, itertools.chain(*values), strict=True):
        if 0 < v < 10:
            assert row["suppressed"]
        if not row["suppressed"]:
            assert row["count"] == v


@pytest.mark.parametrize("seed", range(15))
def test_no_suppressed_cell_recoverable_in_random_3d_tables(seed: int) -> None:
    rng = random.Random(1000 + seed)
    dims = ["sex", "age_band", "region"]
    sizes = [rng.randint(2, 3), rng.randint(2, 4), rng.randint(2, 3)]
    rows = [{"sex": s, "age_band": a, "region": r,
             "count": rng.choice([0, 1, 3, 8, 15, 40, rng.randint(0, 200)])}
            for s in range(sizes[0]) for a in range(sizes[1]) for r in range(sizes[2])]
    out = suppress(rows, dims)
    assert recoverable_cells(out, dims) == []


def test_single_cell_groups_do_not_loop_or_crash() -> None:
    # "other" appears in one age band only: its margin is the cell itself (documented)
    rows = table({("f", "0-9"): 30, ("f", "10-19"): 40, ("m", "0-9"): 50,
                  ("m", "10-19"): 60, ("other", "0-9"): 3})
    out = suppress(rows, STRATA)
    assert next(r for r in out if r["sex"] == "other")["suppressed"]


def test_margin_totals_never_present_a_partial_sum() -> None:
    out = suppress(grid([[3, 20, 30], [40, 50, 60]]), STRATA)
    by_sex = {m["sex"]: m for m in margin_totals(out, STRATA, ["sex"])}
    assert by_sex["r0"]["suppressed"] and by_sex["r0"]["count"] is None
    by_band = {m["age_band"]: m for m in margin_totals(out, STRATA, ["age_band"])}
    assert by_band["c2"] == {"age_band": "c2", "count": 90, "suppressed": False}
    assert margin_totals(out, STRATA, [])[0]["suppressed"]


# -- rounding -----------------------------------------------------------------------------


def test_round_counts_to_nearest_base_leaving_suppressed_alone() -> None:
    rows = [{"k": k, "count": c, "suppressed": c is None} for k, c in
            enumerate([0, 12, 13, 10, 137, None])]
    assert [r["count"] for r in round_counts(rows, 5)] == [0, 10, 15, 10, 135, None]
    assert [r["count"] for r in round_counts(rows, 10)] == [0, 10, 10, 10, 140, None]
    with pytest.raises(DisclosureError):
        round_counts(rows, 0)


# -- apply_rules --------------------------------------------------------------------------


def test_rules_without_noise_suppress_then_round() -> None:
    rows = grid([[8, 22, 31], [44, 57, 63]])
    released = apply_rules(rows, STRATA, DisclosureRules(rounding=5))
    assert released.epsilon_spent == 0.0 and released.delta_spent == 0.0
    assert len(released.notes) == 2
    cells = {(r["sex"], r["age_band"]): r for r in released.rows}
    assert cells["r0", "c0"]["count"] is None  # 8 is suppressed, not rounded to 10
    assert all(r["count"] % 5 == 0 for r in released.rows if not r["suppressed"])
    assert recoverable_cells(released.rows, STRATA) == []


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_rules_with_noise_release_nonnegative_ints_and_report_epsilon(mechanism: str) -> None:
    rows = grid([[0, 0, 4, 7], [15, 60, 120, 2000], [0, 1, 30, 9]])
    rules = DisclosureRules(min_cell=10, rounding=5, epsilon_per_query=0.5, mechanism=mechanism)
    released = apply_rules(rows, STRATA, rules)
    assert released.epsilon_spent == 0.5
    assert released.delta_spent == (rules.delta if mechanism == "gaussian" else 0.0)
    assert any(mechanism in note for note in released.notes)
    for row in released.rows:
        if not row["suppressed"]:
            v = row["count"]
            # suppression and rounding ran on the noisy counts
            assert isinstance(v, int) and v >= 0 and v % 5 == 0
            assert v == 0 or v >= 10
    assert recoverable_cells(released.rows, STRATA) == []


def test_noise_changes_counts_before_suppression() -> None:
    rows = [{"band": str(b), "count": 1000} for b in range(30)]
    released = apply_rules(rows, ["band"], DisclosureRules(epsilon_per_query=0.1))
    released_counts = [r["count"] for r in released.rows if not r["suppressed"]]
    assert released_counts and set(released_counts) != {1000}


def test_noise_refuses_a_seed_and_uncovered_columns() -> None:
    rules = DisclosureRules(epsilon_per_query=1.0)
    rows = table({("f", "0-9"): 30})
    with pytest.raises(DisclosureError, match="seed"):
        apply_rules(rows, STRATA, rules, rng_seed=1)
    with pytest.raises(DisclosureError, match="mean_age"):
        apply_rules([{**rows[0], "mean_age": 3.5}], STRATA, rules)
    assert apply_rules(rows, STRATA, DisclosureRules(), rng_seed=1).epsilon_spent == 0.0


# -- OpenDP noise -------------------------------------------------------------------------


def discrete_laplace_mean_abs(b: float) -> float:
    """E|X| for P(x) proportional to exp(-|x|/b) over the integers."""
    q = math.exp(-1 / b)
    return 2 * q / (1 - q * q)


@pytest.mark.parametrize("epsilon", [0.25, 0.5, 1.0])
def test_laplace_noise_has_the_theoretical_scale(epsilon: float) -> None:
    n = 10_000
    noisy = laplace_counts([50] * n, epsilon)
    assert all(isinstance(v, int) for v in noisy)
    mean_abs = sum(abs(v - 50) for v in noisy) / n
    b = 1 / epsilon
    # the standard error of the mean is about b / sqrt(n) = 1%; allow 5%
    assert mean_abs == pytest.approx(discrete_laplace_mean_abs(b), rel=0.05)
    assert mean_abs == pytest.approx(b, rel=0.25 if b < 2 else 0.1)  # continuous b
    # the 95% half-width: P(|noise| >= accuracy) <= 5%
    accuracy = laplace_accuracy(epsilon)
    assert sum(abs(v - 50) >= accuracy for v in noisy) / n <= 0.06


def test_laplace_scale_is_certified_by_opendp() -> None:
    for epsilon, sensitivity in [(0.7, 1), (3.3, 1), (0.1, 3), (1.0, 2)]:
        scale = laplace_scale(epsilon, sensitivity)
        assert scale == pytest.approx(sensitivity / epsilon, rel=1e-12)
        loss = laplace_measurement(scale).map(sensitivity)
        assert loss <= epsilon and loss == pytest.approx(epsilon, rel=1e-12)


def test_sensitivity_widens_the_noise() -> None:
    assert laplace_accuracy(1.0, sensitivity=3) > 2.5 * laplace_accuracy(1.0)


def test_gaussian_noise_and_epsilon_delta_conversion() -> None:
    rho = 0.5
    n = 10_000
    noisy = gaussian_counts([0] * n, rho)
    std = math.sqrt(sum(v * v for v in noisy) / n)
    assert std == pytest.approx(gaussian_scale(rho), rel=0.05)
    assert gaussian_measurement(gaussian_scale(rho)).map(1) <= rho
    accuracy = gaussian_accuracy(rho)
    assert accuracy >= 1.96 * gaussian_scale(rho)  # at least the continuous half-width
    assert sum(abs(v) >= accuracy for v in noisy) / n <= 0.06
    # the rho for (1, 1e-6)-DP is below the rho for (2, 1e-6)-DP and converts back
    small, large = rho_for_epsilon(1.0, 1e-6), rho_for_epsilon(2.0, 1e-6)
    assert 0 < small < large
    # OpenDP's conversion is tighter than the textbook rho + 2 sqrt(rho ln(1/delta)),
    # so the textbook bound for the rho it found is at least epsilon (and not far above)
    textbook = small + 2 * math.sqrt(small * math.log(1 / 1e-6))
    assert 1.0 <= textbook < 1.5


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1"])
def test_noise_refuses_bad_epsilon(bad: Any) -> None:
    with pytest.raises(DisclosureError):
        laplace_counts([1, 2], bad)


def test_noise_refuses_non_integer_counts() -> None:
    with pytest.raises(DisclosureError):
        laplace_counts([1.5], 1.0)
    assert laplace_counts([], 1.0) == []
