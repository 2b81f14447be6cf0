"""Property tests: every released table satisfies the requested models, the search finds the
brute-force optimum, and the models declared monotone are monotone.

The checks recompute k, l and t from the released table with pandas, independently of the
library's encoded classes.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthmesh.privacy import (
    AnonymizationConfig,
    DistinctLDiversity,
    EntropyLDiversity,
    Hierarchy,
    KAnonymity,
    NoAnonymousTransformation,
    TCloseness,
    anonymize,
)
from healthmesh.privacy.anonymize.lattice import evaluate
from healthmesh.privacy.anonymize.metrics import make_metric
from healthmesh.privacy.anonymize.table import EncodedTable

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _hierarchy(name: str, leaves: int, depth: int) -> Hierarchy:
    """Leaves v0..v{n-1}; level j groups them by 2**j; the top is ``*``."""
    rows = [(f"{name}{i}", *(f"{name}{i >> j}/{j}" for j in range(1, depth)), "*")
            for i in range(leaves)]
    return Hierarchy.from_rows(rows, name)


@st.composite
def problems(draw: st.DrawFn) -> tuple[pd.DataFrame, dict, list, float, str]:
    qis = draw(st.integers(1, 3))
    hierarchies = {f"q{a}": _hierarchy(f"q{a}", draw(st.integers(1, 6)), draw(st.integers(1, 3)))
                   for a in range(qis)}
    rows = draw(st.integers(1, 30))
    data = {name: [h.leaves[draw(st.integers(0, len(h.leaves) - 1))] for _ in range(rows)]
            for name, h in hierarchies.items()}
    data["s"] = [str(draw(st.integers(1, 4))) for _ in range(rows)]
    kind = draw(st.sampled_from(["k", "distinct", "entropy", "t-equal", "t-ordered", "k+t"]))
    models: list = []
    if kind in ("k", "k+t"):
        models.append(KAnonymity(draw(st.integers(1, 4))))
    if kind == "distinct":
        models.append(DistinctLDiversity("s", draw(st.integers(1, 3))))
    if kind == "entropy":
        models.append(EntropyLDiversity("s", draw(st.floats(1, 2.5))))
    if kind.startswith("t") or kind == "k+t":
        distance = "ordered" if kind == "t-ordered" else "equal"
        models.append(TCloseness("s", draw(st.floats(0.05, 1)), distance))
    limit = draw(st.sampled_from([0.0, 0.1, 0.3, 1.0]))
    metric = draw(st.sampled_from(["loss", "discernibility", "entropy"]))
    return pd.DataFrame(data), hierarchies, models, limit, metric


def _released_rows(result: object, qis: list[str], heights: dict[str, int]) -> pd.Series:
    table = result.table  # type: ignore[attr-defined]
    below_top = [q for q in qis if result.levels[q] < heights[q] - 1]  # type: ignore[attr-defined]
    if not below_top:  # everything is "*": released unless the whole table was suppressed
        return pd.Series(result.suppressed == 0, index=table.index)  # type: ignore[attr-defined]
    return (table[below_top] != "*").all(axis=1)


def _distance(counts: pd.Series, overall: pd.Series, ordered: bool) -> float:
    p = (counts / counts.sum()).reindex(overall.index, fill_value=0.0)
    if not ordered:
        return 0.5 * float((p - overall).abs().sum())
    if len(overall) < 2:
        return 0.0
    order = sorted(overall.index, key=float)
    cumulative = (p[order] - overall[order]).cumsum()
    return float(cumulative.abs().sum()) / (len(order) - 1)


@SETTINGS
@given(problems())
def test_every_release_satisfies_its_models(problem: tuple) -> None:
    frame, hierarchies, models, limit, metric = problem
    config = AnonymizationConfig.from_dict({
        "quasi_identifiers": dict(hierarchies), "sensitive": ["s"], "models": models,
        "suppression_limit": limit, "metric": metric})
    try:
        result = anonymize(frame, config)
    except NoAnonymousTransformation:
        return
    qis = list(hierarchies)
    released = _released_rows(result, qis, {q: h.height for q, h in hierarchies.items()})
    assert (~released).sum() == result.suppressed <= math.floor(limit * len(frame) + 1e-9)
    overall = frame["s"].value_counts(normalize=True)
    for _, group in result.table[released].groupby(qis):
        counts = group["s"].value_counts()
        for model in models:
            if isinstance(model, KAnonymity):
                assert len(group) >= model.k
            elif isinstance(model, DistinctLDiversity):
                assert len(counts) >= model.l
            elif isinstance(model, EntropyLDiversity):
                shares = counts / counts.sum()
                assert -(shares * shares.map(math.log)).sum() >= math.log(model.l) - 1e-9
            else:
                assert _distance(counts, overall, model.distance == "ordered") <= model.t + 1e-9


@SETTINGS
@given(problems())
def test_search_finds_the_brute_force_optimum(problem: tuple) -> None:
    frame, hierarchies, models, limit, metric_name = problem
    config = AnonymizationConfig.from_dict({
        "quasi_identifiers": dict(hierarchies), "sensitive": ["s"], "models": models,
        "suppression_limit": limit, "metric": metric_name})
    table, _ = EncodedTable.encode(frame, hierarchies, ["s"])
    metric = make_metric(metric_name, table)
    allowed = math.floor(limit * table.rows + 1e-9)
    values = []
    for levels in itertools.product(*(range(h) for h in table.heights)):
        node = evaluate(table, levels, models, allowed)
        if node.acceptable:
            values.append(metric.score(levels, node.classes, node.released)[0])
    try:
        result = anonymize(frame, config)
    except NoAnonymousTransformation:
        assert not values
        return
    assert result.utility == pytest.approx(min(values), rel=1e-9, abs=1e-9)


@SETTINGS
@given(problems(), st.data())
def test_declared_monotone_models_are_monotone(problem: tuple, data: st.DataObject) -> None:
    frame, hierarchies, models, limit, _ = problem
    table, _ = EncodedTable.encode(frame, hierarchies, ["s"])
    allowed = math.floor(limit * table.rows + 1e-9)
    monotone = [m for m in models if m.monotone(allowed > 0)]
    if not monotone:
        return
    for levels in itertools.product(*(range(h) for h in table.heights)):
        if not evaluate(table, levels, monotone, allowed).acceptable:
            continue
        for a in range(len(levels)):
            if levels[a] + 1 < table.heights[a]:
                up = list(levels)
                up[a] += 1
                assert evaluate(table, up, monotone, allowed).acceptable, (levels, up)
