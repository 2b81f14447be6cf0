"""The vetted federated algorithms: parameter checks, local results on hand-made tables
(expected answers computed here from the same rows), declared schemas, consent scope,
the histogram sketch, periods and the hub's pooling of released (suppressed) results."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthmesh.algorithms import (
    ALGORITHMS,
    AlgorithmError,
    Histogram,
    LocalResult,
    get_algorithm,
    indicators,
    parse_period,
    split_period,
)
from healthmesh.algorithms.disclose import suppress_bins
from healthmesh.algorithms.sketch import bin_index_sql
from healthmesh.cohorts import create_analytic_tables, load_consent_scope
from tests.test_cohorts import ALL, DENIED, HTN, INDEX, LOINC, Tables, build_world

ALL_COHORT = {"name": "everyone"}


@pytest.fixture
def world() -> Iterator[tuple[duckdb.DuckDBPyConnection, Tables]]:
    con = duckdb.connect()
    create_analytic_tables(con)
    tables = build_world(con)
    load_consent_scope(con, ALL, DENIED)
    yield con, tables
    con.close()


def run(con: Any, name: str, params: dict[str, Any], site: str = "north",
        **scope: str) -> LocalResult:
    result = ALGORITHMS[name].run_local(con, params, site=site, **scope)
    declared = ALGORITHMS[name].output_schema(params)
    assert result.columns == declared
    for row in result.rows:
        assert list(row) == [c.name for c in declared]
    return result


def age(birth: date, at: date) -> int:
    return at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))


def band(birth: date | None, at: date) -> str:
    if birth is None or birth > at:
        return "unknown"
    years = age(birth, at)
    return "90+" if years >= 90 else f"{years // 10 * 10}-{years // 10 * 10 + 9}"


def patients(tables: Tables) -> dict[str, dict[str, Any]]:
    return {p["patient_id"]: p for p in tables.rows["patient"]}


# --- registry and parameter checks ---------------------------------------------------------------

def test_registry() -> None:
    assert set(ALGORITHMS) == {"count", "crosstab", "summary", "prevalence", "incidence",
                               "indicator"}
    for name, algorithm in ALGORITHMS.items():
        assert algorithm.name == name and algorithm.version and algorithm.title
        assert get_algorithm(name) is algorithm
    with pytest.raises(AlgorithmError, match="unknown algorithm 'regression'"):
        get_algorithm("regression")
    assert set(indicators()) >= {"hypertension-control", "diabetes-control",
                                 "immunisation-coverage"}


SUMMARY = {"cohort": ALL_COHORT, "observation": {"valueset": "systolic-bp"}, "range": [50, 250]}
RATE = {"condition": {"valueset": "hypertension"}, "period": "2024"}
BAD_PARAMS = [
    ("count", [], "params", "expected an object"),
    ("count", {}, "params", "missing parameter 'cohort'"),
    ("count", {"cohort": ALL_COHORT, "group": []}, "params", "unknown parameter 'group'"),
    ("count", {"cohort": ALL_COHORT, "strata": ["religion"]}, "params.strata[0]",
     "unknown stratum 'religion'"),
    ("count", {"cohort": ALL_COHORT, "strata": ["sex", "sex"]}, "params.strata", "repeated"),
    ("count", {"cohort": ALL_COHORT, "strata": "sex"}, "params.strata", "expected an array"),
    ("count", {"cohort": {"name": "x", "include": [{"condition": {"codes": []}}]}},
     "params.cohort.include[0].condition.codes", "non-empty array"),
    ("count", {"cohort": ALL_COHORT, "strata": ["state"], "zeros": True}, "params.zeros",
     "'state' takes its values from the data"),
    ("count", {"cohort": ALL_COHORT, "index_date": "2024-13-01"}, "params.index_date",
     "expected a date"),
    ("crosstab", {"cohort": ALL_COHORT, "columns": ["sex"]}, "params.columns", "2 to 3"),
    ("summary", {**SUMMARY, "range": [5, 5]}, "params.range", "low < high"),
    ("summary", {k: v for k, v in SUMMARY.items() if k != "range"}, "params",
     "missing parameter 'range'"),
    ("summary", {**SUMMARY, "bins": 0}, "params.bins", "from 1 to 1000"),
    ("summary", {**SUMMARY, "use": "first"}, "params.use", "'last' or 'all'"),
    ("summary", {**SUMMARY, "max_per_patient": 3}, "params.max_per_patient", "only with"),
    ("summary", {**SUMMARY, "quantiles": [1.5]}, "params.quantiles", "within [0, 1]"),
    ("summary", {**SUMMARY, "observation": {"valueset": "hba1c", "last": True}},
     "params.observation", "unknown key 'last'"),
    ("summary", {**SUMMARY, "observation": {"valueset": "nope"}}, "params.observation.valueset",
     "unknown value set"),
    ("prevalence", {**RATE, "period": "2024-13"}, "params.period", "expected \"YYYY\""),
    ("prevalence", {**RATE, "period": {"from": "2024"}}, "params.period", "\"from\""),
    ("prevalence", {**RATE, "period": {"from": "2024", "to": "2023"}}, "params.period",
     "'from' is after 'to'"),
    ("prevalence", {**RATE, "by": "week"}, "params.by", "'year' or 'month'"),
    ("prevalence", {**RATE, "period": {"from": "1900", "to": "2024"}, "by": "month"},
     "params.by", "more than 240 periods"),
    ("incidence", {**RATE, "strata": ["year"]}, "params.strata[0]", "unknown stratum 'year'"),
    ("incidence", {**RATE, "condition": {"valueset": "hypertension", "min_count": 2}},
     "params.condition", "unknown key 'min_count'"),
    ("incidence", {**RATE, "population": {"name": "p", "index": {"first": HTN["include"][0]}}},
     "params.population.index", "event index cannot be used"),
    ("indicator", {"indicator": "happiness", "period": "2024"}, "params.indicator",
     "unknown indicator 'happiness'"),
    ("indicator", {"indicator": "hypertension-control"}, "params", "missing parameter 'period'"),
    ("indicator", {"indicator": "hypertension-control", "period": "2024", "strata": ["site"]},
     "params.strata[0]", "unknown stratum 'site'"),
]


@pytest.mark.parametrize(("name", "params", "path", "message"), BAD_PARAMS,
                         ids=[f"{i}-{b[0]}-{b[2]}" for i, b in enumerate(BAD_PARAMS)])
def test_parameter_errors_name_the_parameter(name: str, params: Any, path: str,
                                             message: str) -> None:
    with pytest.raises(AlgorithmError) as caught:
        ALGORITHMS[name].check_params(params)
    text = str(caught.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text


def test_query_failure_is_an_algorithm_error() -> None:
    con = duckdb.connect()  # no analytic tables
    load_consent_scope(con, ["p1"], [])
    with pytest.raises(AlgorithmError, match="count: the local query failed"):
        ALGORITHMS["count"].run_local(con, {"cohort": HTN}, site="x")


# --- count and crosstab --------------------------------------------------------------------------

def test_count_by_strata_matches_python(world: Any) -> None:
    con, tables = world
    strata = ["sex", "age_band", "state", "year"]
    result = run(con, "count", {"cohort": HTN, "strata": strata, "index_date": "2024-12-31"})
    people = patients(tables)
    expected = Counter((people[p]["gender"], band(people[p]["birth_date"], INDEX),
                        people[p]["state"] or "unknown", "2024")
                       for p in ("p1", "p2", "p4"))
    assert {tuple(r[s] for s in strata): r["count"] for r in result.rows} == expected
    assert result.sensitivity == 1


def test_count_total_zero_rows_and_consent(world: Any) -> None:
    con, _ = world
    assert run(con, "count", {"cohort": ALL_COHORT}).rows == [{"count": 8}]  # p5 not allowed
    nobody = {"name": "none", "include": [{"condition": {"codes": ["no-such-code"]}}]}
    assert run(con, "count", {"cohort": nobody}).rows == [{"count": 0}]
    rows = run(con, "count", {"cohort": HTN, "strata": ["sex", "site"], "zeros": True}).rows
    assert rows == [{"sex": s, "site": "north", "count": n}
                    for s, n in (("female", 1), ("male", 2), ("other", 0), ("unknown", 0))]
    load_consent_scope(con, [*ALL, "p5"], [])
    assert run(con, "count", {"cohort": HTN}).rows == [{"count": 5}]  # p5, p6 now count
    load_consent_scope(con, ALL, ["Patient/p1", "Condition/c4"])
    assert run(con, "count", {"cohort": HTN}).rows == [{"count": 2}]  # p2, p6


def test_age_bands_at_the_edges() -> None:
    con = duckdb.connect()
    create_analytic_tables(con)
    t = Tables(con)
    births = {"a": "2015-12-31", "b": "2014-12-31", "c": "1935-01-01", "d": "1934-12-31",
              "e": "2025-01-01", "f": None, "g": "2024-12-31"}
    for pid, birth in births.items():
        t.patient(pid, "female", birth)
    t.flush()
    load_consent_scope(con, list(births), [])
    rows = run(con, "count", {"cohort": ALL_COHORT, "strata": ["age_band"],
                              "index_date": "2024-12-31"}).rows
    assert {r["age_band"]: r["count"] for r in rows} == {
        "0-9": 2, "10-19": 1, "80-89": 1, "90+": 1, "unknown": 2}  # e is born after the index


def test_crosstab_lists_the_full_grid(world: Any) -> None:
    con, tables = world
    result = run(con, "crosstab", {"cohort": ALL_COHORT, "columns": ["sex", "state"],
                                   "index_date": "2024-12-31"})
    people = [p for p in tables.rows["patient"] if p["patient_id"] in ALL]
    seen = Counter((p["gender"], p["state"] or "unknown") for p in people)
    states = sorted({p["state"] or "unknown" for p in people})
    assert len(result.rows) == 4 * len(states)
    for row in result.rows:
        assert row["count"] == seen.get((row["sex"], row["state"]), 0)


# --- summary -------------------------------------------------------------------------------------

def systolic(tables: Tables, pids: set[str], last_only: bool) -> dict[str, list[float]]:
    """Systolic values per patient (most recent first), from the rows the test inserted."""
    rows = [r for r in tables.rows["observation"]
            if r["code"] == "8480-6" and r["patient_id"] in pids]
    out: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: r["effective"], reverse=True):
        out.setdefault(r["patient_id"], []).append(r["value_number"])
    return {p: v[:1] if last_only else v for p, v in out.items()}


def test_summary_local_statistics(world: Any) -> None:
    con, tables = world
    params = {**SUMMARY, "bins": 20, "strata": ["sex"], "index_date": "2024-12-31"}
    result = run(con, "summary", params)
    people = patients(tables)
    values = systolic(tables, set(ALL), last_only=True)
    for row in result.rows:
        mine = [v for p, vs in values.items() if people[p]["gender"] == row["sex"] for v in vs]
        assert row["n"] == len(mine) and row["sum"] == sum(mine)
        assert row["sum_sq"] == sum(v * v for v in mine)
        sketch = Histogram(50, 250, 20)
        for v in mine:
            sketch.add(v)
        assert row["histogram"] == sketch.counts
    assert {r["sex"] for r in result.rows} == {"female", "male"}
    assert result.sensitivity == 1
    every = run(con, "summary", {**SUMMARY, "use": "all", "max_per_patient": 5})
    assert every.rows[0]["n"] == 6 and every.sensitivity == 5
    one = run(con, "summary", {**SUMMARY, "use": "all", "max_per_patient": 1})
    assert one.rows[0]["n"] == 4  # one value per patient with a reading


def test_summary_pools_exactly_across_sites(world: Any) -> None:
    con, tables = world
    params = {**SUMMARY, "use": "all", "bins": 40, "quantiles": [0.1, 0.5, 0.9]}
    north = run(con, "summary", params, site="north")  # p1, p2, p4, p6 ...
    load_consent_scope(con, ["p1", "p2"], [], allowed="only_a", denied="none_a")
    a = run(con, "summary", params, site="a", allowed="only_a", denied="none_a")
    load_consent_scope(con, ["p4", "p6"], [], allowed="only_b", denied="none_b")
    b = run(con, "summary", params, site="b", allowed="only_b", denied="none_b")
    (pooled,) = ALGORITHMS["summary"].pool([a.to_dict(), b])
    values = [v for vs in systolic(tables, {"p1", "p2", "p4", "p6"}, False).values() for v in vs]
    assert pooled["n"] == len(values) == north.rows[0]["n"]
    assert pooled["mean"] == pytest.approx(statistics.mean(values))
    assert pooled["variance"] == pytest.approx(statistics.variance(values))
    assert pooled["sd"] == pytest.approx(statistics.stdev(values))
    width = 200 / 40
    ordered = sorted(values)
    for q in (0.1, 0.5, 0.9):
        exact = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        assert abs(pooled[f"p{q * 100:g}"] - exact) <= width
    assert pooled["incomplete"] == [] and pooled["sites"] == 2


def test_summary_pool_marks_a_suppressed_sketch(world: Any) -> None:
    con, _ = world
    released = run(con, "summary", SUMMARY).to_dict()
    hidden = json.loads(json.dumps(released))
    hidden["rows"][0]["histogram"] = {"value": None, "suppressed": True}
    (pooled,) = ALGORITHMS["summary"].pool([released, hidden])
    assert pooled["incomplete"] == ["histogram"]
    assert pooled["p50"] is None and pooled["mean"] is not None
    other = json.loads(json.dumps(released))
    other["meta"]["bins"] = 10
    with pytest.raises(AlgorithmError, match="histogram layout differs"):
        ALGORITHMS["summary"].pool([released, other])


# --- prevalence and incidence --------------------------------------------------------------------

def py_rates(tables: Tables, start: date, end: date, incident: bool,
             sex: str | None = None) -> tuple[int, int]:
    codes = {("http://snomed.info/sct", "38341003"), ("http://hl7.org/fhir/sid/icd-10-cm", "I10")}
    numerator = denominator = 0
    for p in tables.rows["patient"]:
        pid, dead = p["patient_id"], p["deceased_date"]
        if pid not in ALL or p["birth_date"] > end or (dead and dead < start):
            continue
        if sex and p["gender"] != sex:
            continue
        denominator += 1
        dates = [c["onset"] or c["recorded"] for c in tables.rows["condition"]
                 if c["patient_id"] == pid and (c["system"], c["code"]) in codes
                 and f"Condition/{c['resource_id'].split('/')[1]}" not in DENIED]
        dates = [d for d in dates if d]
        if dates and (start <= min(dates) <= end if incident else min(dates) <= end):
            numerator += 1
    return numerator, denominator


def test_prevalence_and_incidence_by_year(world: Any) -> None:
    con, tables = world
    params = {**RATE, "period": {"from": "2023", "to": "2024"}, "by": "year"}
    for name, incident in (("prevalence", False), ("incidence", True)):
        rows = run(con, name, params).rows
        assert [r["period"] for r in rows] == ["2023", "2024"]
        for row, year in zip(rows, (2023, 2024), strict=True):
            expected = py_rates(tables, date(year, 1, 1), date(year, 12, 31), incident)
            assert (row["numerator"], row["denominator"]) == expected
    assert [(r["numerator"], r["denominator"]) for r in run(con, "prevalence", params).rows] \
        == [(2, 8), (3, 8)]
    monthly = run(con, "incidence", {**RATE, "period": {"from": "2024-05", "to": "2024-09"},
                                     "by": "month"}).rows
    assert [(r["period"], r["numerator"]) for r in monthly] == [
        ("2024-05", 0), ("2024-06", 1), ("2024-07", 0), ("2024-08", 0), ("2024-09", 0)]


def test_prevalence_population_and_strata(world: Any) -> None:
    con, tables = world
    men = {"name": "men", "include": [{"demographics": {"gender": "male"}}]}
    rows = run(con, "prevalence", {**RATE, "population": men, "strata": ["sex", "site"]}).rows
    assert rows == [{"period": "2024", "sex": "male", "site": "north", "numerator": 2,
                     "denominator": 4}]
    assert py_rates(tables, date(2024, 1, 1), date(2024, 12, 31), False, "male") == (2, 4)
    pooled = ALGORITHMS["prevalence"].pool([{**r.to_dict(), "site": s} for s, r in (
        ("a", run(con, "prevalence", RATE)), ("b", run(con, "prevalence", RATE)))])
    assert pooled[0]["rate_per_1000"] == pytest.approx(1000 * 6 / 16)


# --- indicators ----------------------------------------------------------------------------------

def indicator(con: Any, name: str, period: Any, **extra: Any) -> list[tuple[Any, ...]]:
    rows = run(con, "indicator", {"indicator": name, "period": period, **extra}).rows
    return [(r["period"], r["numerator"], r["denominator"]) for r in rows]


def test_hypertension_control(world: Any) -> None:
    con, _ = world
    # p1 (last BP 130/80) and p2 (last BP 145/85); p4 died, p6's diagnosis is denied
    assert indicator(con, "hypertension-control", "2024") == [("2024", 1, 2)]
    monthly = indicator(con, "hypertension-control", "2024", by="month")
    # before June: p1 and p4 (alive until 2024-06-01); p2 is not yet diagnosed
    assert monthly[1] == ("2024-02", 1, 2)  # p4's February BP is 120/70, p1 has none
    assert monthly[2] == ("2024-03", 0, 2)  # p1's March BP is 150/95
    assert monthly[10] == ("2024-11", 1, 2)  # p2 has no BP in November: not controlled
    load_consent_scope(con, ALL, [*DENIED, "Observation/bp2"])
    assert indicator(con, "hypertension-control", "2024") == [("2024", 0, 2)]


def test_other_indicators(world: Any) -> None:
    con, _ = world
    assert indicator(con, "diabetes-control", "2024") == [("2024", 1, 1)]  # p2's is refuted
    assert indicator(con, "immunisation-coverage", "2024") == [("2024", 1, 2)]  # p9: not-done
    rows = run(con, "indicator", {"indicator": "immunisation-coverage", "period": "2024",
                                  "strata": ["sex"]}, site="clinic").rows
    assert rows == [
        {"site": "clinic", "period": "2024", "sex": "female", "numerator": 0, "denominator": 1},
        {"site": "clinic", "period": "2024", "sex": "male", "numerator": 1, "denominator": 1}]
    assert indicator(con, "influenza-coverage-65", "2024") == []  # no one alive aged 65+


def test_indicator_definitions_are_documented() -> None:
    for definition in indicators().values():
        assert definition.title and definition.source and len(definition.notes) > 40
        assert definition.denominator.include and definition.numerator


# --- pooling -------------------------------------------------------------------------------------

def test_pool_sums_sites_and_matches_the_union(world: Any) -> None:
    con, _ = world
    load_consent_scope(con, ["p1", "p2", "p3"], [], allowed="north_a", denied="north_d")
    load_consent_scope(con, ["p4", "p6", "p7", "p8", "p9"], DENIED, allowed="south_a",
                       denied="south_d")
    params = {"cohort": ALL_COHORT, "strata": ["sex"]}
    north = run(con, "count", params, "north", allowed="north_a", denied="north_d")
    south = run(con, "count", params, "south", allowed="south_a", denied="south_d")
    union = run(con, "count", params)
    pooled = ALGORITHMS["count"].pool([north, south.to_dict()])
    assert [{k: r[k] for k in ("sex", "count")} for r in pooled] == union.rows
    assert all(r["incomplete"] == [] for r in pooled)


@pytest.mark.parametrize("hide", [
    lambda row: row.update(count=None),
    lambda row: row.update(count={"value": None, "suppressed": True}),
    lambda row: row.update(count=None, suppressed=True),
    lambda row: row.update(suppressed=["count"]),
])
def test_pool_marks_suppressed_cells_incomplete(hide: Any) -> None:
    columns = [{"name": "sex", "kind": "stratum"}, {"name": "count", "kind": "count"}]
    a = {"site": "a", "columns": columns, "rows": [{"sex": "female", "count": 12},
                                                   {"sex": "male", "count": 3}]}
    b = {"site": "b", "columns": columns, "rows": [{"sex": "female", "count": 20},
                                                   {"sex": "male", "count": 4}]}
    hide(b["rows"][1])
    pooled = ALGORITHMS["count"].pool([a, b])
    assert pooled == [
        {"sex": "female", "count": 32, "sites": 2, "incomplete": [], "suppressed": False},
        {"sex": "male", "count": 3, "sites": 2, "incomplete": ["count"], "suppressed": True}]
    hide(a["rows"][1])  # suppressed at every site: nothing to add up, no number shown
    (_, male) = ALGORITHMS["count"].pool([a, b])
    assert male["count"] is None and male["suppressed"]


def test_pool_rates_are_not_guessed() -> None:
    columns = [{"name": "site", "kind": "stratum"}, {"name": "period", "kind": "stratum"},
               {"name": "numerator", "kind": "count"}, {"name": "denominator", "kind": "count"}]
    rows = [{"site": "all", "period": "2024", "numerator": 40, "denominator": 100}]
    hidden = [{"site": "all", "period": "2024", "numerator": None, "denominator": 50}]
    pooled = ALGORITHMS["indicator"].pool([{"columns": columns, "rows": rows},
                                           {"columns": columns, "rows": hidden}])
    assert pooled[0]["numerator"] == 40 and pooled[0]["denominator"] == 150
    assert pooled[0]["rate"] is None and pooled[0]["incomplete"] == ["numerator"]
    (whole,) = ALGORITHMS["indicator"].pool([{"columns": columns, "rows": rows}])
    assert whole["rate"] == 0.4
    with pytest.raises(AlgorithmError, match="disagree on columns"):
        ALGORITHMS["count"].pool([{"columns": columns, "rows": []},
                                  {"columns": columns[:3], "rows": []}])
    with pytest.raises(AlgorithmError, match=r"results\[0\]"):
        ALGORITHMS["count"].pool([{"rows": "x"}])
    assert ALGORITHMS["count"].pool([]) == []


def test_results_are_json(world: Any) -> None:
    con, _ = world
    for name, params in (("count", {"cohort": HTN, "strata": ["age_band"]}),
                         ("summary", SUMMARY), ("incidence", RATE),
                         ("indicator", {"indicator": "diabetes-control", "period": "2024-05"})):
        data = json.loads(json.dumps(run(con, name, params).to_dict()))
        assert data["algorithm"] == name and data["site"] == "north"
        assert [c["kind"] for c in data["columns"]][-1] in ("count", "sketch")


# --- the sketch and periods ----------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-20, 220, allow_nan=False), min_size=1, max_size=60),
       st.lists(st.floats(-20, 220, allow_nan=False), max_size=60), st.floats(0, 1))
def test_histogram_merge_and_quantile_error(xs: list[float], ys: list[float], q: float) -> None:
    a, b, both = Histogram(0, 200, 25), Histogram(0, 200, 25), Histogram(0, 200, 25)
    for x in xs:
        a.add(x)
        both.add(x)
    for y in ys:
        b.add(y)
        both.add(y)
    merged = a.merge(b)
    assert merged.counts == both.counts
    estimate, inside = merged.quantile(q)  # type: ignore[misc]
    ordered = sorted(xs + ys)
    exact = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    if inside and 0 <= exact <= 200:
        assert abs(estimate - exact) <= merged.width + 1e-9
    if not inside:
        assert estimate in (0, 200)


def test_histogram_sql_bins_match_python() -> None:
    values = [-1.0, 0.0, 0.1, 7.999, 8.0, 99.99, 100.0, 199.999, 200.0, 200.001, 1e9]
    sql = bin_index_sql("v", "$lo", "$hi", "$bins")
    got = duckdb.connect().execute(f"SELECT {sql} FROM unnest($values) t(v)",
                                   {"lo": 0.0, "hi": 200.0, "bins": 25, "values": values})
    sketch = Histogram(0, 200, 25)
    assert [r[0] for r in got.fetchall()] == [sketch.index(v) for v in values]
    assert sketch.quantile(0.5) is None
    with pytest.raises(ValueError, match="different bins"):
        sketch.merge(Histogram(0, 100, 25))


def test_periods() -> None:
    assert parse_period("2024").start == date(2024, 1, 1)
    feb = parse_period("2024-02")
    assert (feb.start, feb.end, feb.label) == (date(2024, 2, 1), date(2024, 2, 29), "2024-02")
    span = parse_period({"from": "2023-11", "to": "2024-02-10"})
    assert span.label == "2023-11-01/2024-02-10"
    assert [p.label for p in split_period(span, "month")] == [
        "2023-11", "2023-12", "2024-01", "2024-02-01/2024-02-10"]
    assert [p.label for p in split_period(parse_period({"from": "2023-07-01", "to": "2024"}),
                                          "year")] == ["2023-07-01/2023-12-31", "2024"]
    with pytest.raises(AlgorithmError, match=r"params\.period\.to"):
        parse_period({"from": "2024", "to": 2025})


def test_bp_panel_components_only_pair_within_one_observation() -> None:
    con = duckdb.connect()
    create_analytic_tables(con)
    t = Tables(con)
    t.patient("x", "male", "1970-01-01")
    t.condition("h", "x", "http://snomed.info/sct", "38341003", "2020-01-01")
    t.observation("s", "x", LOINC, "8480-6", "2024-06-01", 120, "mm[Hg]")  # no panel
    t.observation("d", "x", LOINC, "8462-4", "2024-06-01", 70, "mm[Hg]")
    t.flush()
    load_consent_scope(con, ["x"], [])
    assert indicator(con, "hypertension-control", "2024") == [("2024", 0, 1)]


# --- what the node's task runner uses: checks, minimisation, disclosure --------------------------

def test_checked_params_pass_through_and_name_what_is_read(world: Any) -> None:
    con, _ = world
    count = ALGORITHMS["count"]
    params = {"cohort": {**HTN, "exclude": [{"any": [{"medication": {"valueset": "antidiabetics"}},
                                                     {"demographics": {"alive": False}}]}]},
              "strata": ["sex", "year"]}
    checked = count.check(params)
    assert count.check_params(checked) is checked
    assert count.run_local(con, checked, site="n").rows == count.run_local(con, params,
                                                                           site="n").rows
    assert count.tables_used(params) == {"patient", "condition", "medication"}
    assert count.strata_used(checked) == {"sex", "year"}
    summary, incidence, indicator_ = (ALGORITHMS[n] for n in ("summary", "incidence",
                                                             "indicator"))
    assert summary.tables_used(SUMMARY) == {"patient", "observation"}
    assert incidence.tables_used(RATE) == {"patient", "condition"}
    assert incidence.strata_used({**RATE, "by": "month", "strata": ["sex"]}) == {"sex", "month"}
    hc = {"indicator": "hypertension-control", "period": "2024", "strata": ["age_band"]}
    assert indicator_.tables_used(hc) == {"patient", "condition", "observation"}
    assert indicator_.strata_used(hc) == {"site", "age_band"}


def test_disclose_then_pool_end_to_end(world: Any) -> None:
    from healthmesh.privacy import DisclosureRules

    con, _ = world
    algorithm = ALGORITHMS["count"]
    params = {"cohort": ALL_COHORT, "strata": ["sex"], "zeros": True}
    local = algorithm.run_local(con, params, site="north")
    released = algorithm.disclose(local, DisclosureRules(min_cell=5))
    assert all(r["suppressed"] == (r["count"] is None) for r in released.rows)
    assert {r["sex"]: r["count"] for r in released.rows} == {
        "female": None, "male": None, "other": 0, "unknown": 0}  # 4 and 4: both hidden
    wire = orjson.loads(orjson.dumps({"site": "north", "columns": list(local.columns),
                                      "rows": released.rows}))
    pooled = algorithm.pool([wire, local.to_dict()])
    female = next(r for r in pooled if r["sex"] == "female")
    assert female["count"] == 4 and female["incomplete"] == ["count"]


def test_disclose_rates_and_summaries(world: Any) -> None:
    from healthmesh.privacy import DisclosureRules

    con, _ = world
    rates = ALGORITHMS["indicator"]
    local = rates.run_local(con, {"indicator": "hypertension-control", "period": "2024"},
                            site="north")
    released = rates.disclose(local, DisclosureRules(min_cell=2))
    assert released.rows == [{"site": "north", "period": "2024", "numerator": None,
                              "denominator": None, "suppressed": True}]  # 1 of 2 is small
    summary = ALGORITHMS["summary"]
    values = summary.run_local(con, {**SUMMARY, "bins": 4, "range": [100, 160]}, site="north")
    open_rules = summary.disclose(values, DisclosureRules(min_cell=2))
    (row,) = open_rules.rows
    assert row["n"] == 4 and row["suppressed"] is False
    # last systolic values 118, 120 | 130 | 145 in bins of 15 from 100: 1-counts are hidden
    assert row["histogram"] == [0, 0, 2, None, None, 0]
    assert suppress_bins([0, 5, 1, 7], 3) == [0, None, None, 7]  # a lone hidden bin gets company
    with pytest.raises(AlgorithmError, match="DP noise is not available"):
        summary.disclose(values, DisclosureRules(epsilon_per_query=1.0))
