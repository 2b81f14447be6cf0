"""Tabular anonymisation: hierarchies, privacy models, metrics, the lattice search, the engine.

Every expected value is worked out by hand in the test (the arithmetic is written out), or
comes from ARX run on the same data (the Adult figures in the brief), never from the code.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest

from healthmesh.privacy import (
    AnonymizationConfig,
    AnonymizationConfigError,
    DistinctLDiversity,
    EntropyLDiversity,
    Hierarchy,
    HierarchyError,
    KAnonymity,
    NoAnonymousTransformation,
    ReleaseRefused,
    TCloseness,
    anonymize,
    load_config,
)
from healthmesh.privacy.anonymize import hierarchy as hierarchy_module
from healthmesh.privacy.anonymize.hierarchy import (
    age_hierarchy,
    date_hierarchy,
    icd10_chapter,
    icd10_hierarchy,
    zip_hierarchy,
)
from healthmesh.privacy.anonymize.lattice import evaluate, search
from healthmesh.privacy.anonymize.metrics import Discernibility, Loss, NonUniformEntropy
from healthmesh.privacy.anonymize.table import EncodedTable

ADULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "adult"
ADULT_QIS = ["sex", "age", "race", "marital-status", "education", "native-country",
             "workclass", "occupation"]  # the CSV's column order, which ARX reports levels in


@pytest.fixture(scope="module")
def adult() -> Path:
    if not (ADULT / "adult.csv").is_file():
        pytest.fail(f"UCI Adult reference data not found at {ADULT}")
    return ADULT


# --- hierarchies ---------------------------------------------------------------------------

def test_hierarchy_from_rows_codes_and_counts() -> None:
    h = Hierarchy.from_rows([("a", "ab", "*"), ("b", "ab", "*"), ("c", "c", "*")], "x")
    assert h.height == 3
    assert h.generalise("b", 1) == "ab"
    assert h.labels(1) == ("ab", "c")
    assert h.leaf_counts(1).tolist() == [2, 1]
    assert h.leaf_counts(2).tolist() == [3]
    assert h.index_of(["c", "zz", "a"]).tolist() == [2, -1, 0]


@pytest.mark.parametrize("rows, message", [
    ([], "no rows"),
    ([("a", "x"), ("b",)], "row 2 has 1 levels"),
    ([("a", "x"), ("a", "y")], "lists the leaf 'a' twice"),
    ([("", "x")], "empty leaf"),
    ([("a", "g1", "*"), ("b", "g1", "top2"), ("c", "g2", "*")], "not a tree"),
])
def test_hierarchy_rejects_malformed_tables(rows: list[tuple[str, ...]], message: str) -> None:
    with pytest.raises(HierarchyError, match=message):
        Hierarchy.from_rows(rows, "bad")


def test_hierarchy_from_csv_arx_file(adult: Path) -> None:
    h = Hierarchy.from_csv(adult / "adult_hierarchy_education.csv")
    assert h.height == 4 and len(h.leaves) == 16
    assert h.generalise("Masters", 1) == "Graduate"
    assert h.generalise("Masters", 2) == "Higher education"
    assert h.generalise("Masters", 3) == "*"


def test_hierarchy_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HierarchyError, match="cannot read"):
        Hierarchy.from_csv(tmp_path / "missing.csv")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00abc;x\n")
    with pytest.raises(HierarchyError, match="cannot read"):
        Hierarchy.from_csv(binary)
    big = tmp_path / "big.csv"
    big.write_text("a;*\n" * 100)
    monkeypatch.setattr(hierarchy_module, "MAX_HIERARCHY_BYTES", 10)
    with pytest.raises(HierarchyError, match="byte limit"):
        Hierarchy.from_csv(big)


def test_date_hierarchy_levels_and_rejects() -> None:
    h, bad = date_hierarchy(["2024-03-17", "2019-12-31T08:00:00Z", "1980", "not a date"])
    assert [h.generalise("2024-03-17", lvl) for lvl in range(5)] == [
        "2024-03-17", "2024-03", "2024", "2020-2024", "*"]
    assert h.generalise("2019-12-31T08:00:00Z", 3) == "2015-2019"
    assert set(bad) == {"1980", "not a date"} and "partial" not in bad["not a date"]
    assert "full date" in bad["1980"]


def test_zip_hierarchy() -> None:
    h, bad = zip_hierarchy(["02139", "02144-1234", "9021", "ABCDE"])
    assert [h.generalise("02139", lvl) for lvl in range(4)] == ["02139", "021**", "0****", "*"]
    assert h.generalise("02144-1234", 1) == "021**"
    assert set(bad) == {"9021", "ABCDE"}


def test_age_hierarchy_bands() -> None:
    h, bad = age_hierarchy(["0", "42", "42.0", "-1", "x", "7.5"], bands=(5, 10, 20))
    assert [h.generalise("42", lvl) for lvl in range(5)] == ["42", "40-44", "40-49", "40-59", "*"]
    assert h.generalise("0", 3) == "0-19"
    assert set(bad) == {"-1", "x", "7.5"}
    with pytest.raises(HierarchyError, match="multiple"):
        age_hierarchy(["1"], bands=(10, 15))


def test_icd10_hierarchy_chapters() -> None:
    # chapters by first code: E00-E90 is IV, H60-H95 is VIII, S00-T98 XIX, Z XXI
    assert icd10_chapter("E11") == "IV"
    assert icd10_chapter("H65") == "VIII" and icd10_chapter("H10") == "VII"
    assert icd10_chapter("T14") == "XIX" and icd10_chapter("Z99") == "XXI"
    assert icd10_chapter("D49") == "II" and icd10_chapter("D50") == "III"
    h, bad = icd10_hierarchy(["E11.9", "E119", "I10", "hello", "E1"])
    assert [h.generalise("E11.9", lvl) for lvl in range(4)] == ["E11.9", "E11", "IV", "*"]
    assert h.generalise("I10", 2) == "IX"
    assert set(bad) == {"hello", "E1"}


# --- privacy models on a hand-checked table -------------------------------------------------

AGE = Hierarchy.from_rows([(str(a), f"{a // 10 * 10}-{a // 10 * 10 + 9}", "*")
                           for a in range(20, 40)], "age")
ZIP = Hierarchy.from_rows([(z, z[:3] + "**", "*") for z in
                           ("13053", "13068", "14850", "14853")], "zip")
PATIENTS = pd.DataFrame({
    "age": ["23", "27", "28", "35", "36", "39"],
    "zip": ["13053", "13068", "13068", "14850", "14853", "14850"],
    "disease": ["flu", "flu", "cancer", "flu", "hiv", "flu"],
})


def _table(frame: pd.DataFrame = PATIENTS, sensitive: tuple[str, ...] = ("disease",)
           ) -> EncodedTable:
    table, rejects = EncodedTable.encode(frame, {"age": AGE, "zip": ZIP}, sensitive)
    assert rejects.empty
    return table


def test_k_anonymity_by_hand() -> None:
    table = _table()
    # (age 10-year band, ZIP-3): {20-29, 130**} rows 1-3 and {30-39, 148**} rows 4-6
    node = evaluate(table, (1, 1), [KAnonymity(3)], 0)
    assert sorted(node.classes.sizes.tolist()) == [3, 3] and node.acceptable
    assert not evaluate(table, (1, 1), [KAnonymity(4)], 0).acceptable
    # raw: classes (23,13053) (27,13068) (28,13068) (35,14850) (36,14853) (39,14850): all size 1
    raw = evaluate(table, (0, 0), [KAnonymity(2)], 6)
    assert raw.suppressed == 6 and raw.acceptable
    assert not evaluate(table, (0, 0), [KAnonymity(2)], 5).acceptable


def test_distinct_l_diversity_by_hand() -> None:
    table = _table()
    # class A {flu, flu, cancer} has 2 distinct, class B {flu, hiv, flu} has 2
    assert evaluate(table, (1, 1), [DistinctLDiversity("disease", 2)], 0).acceptable
    assert not evaluate(table, (1, 1), [DistinctLDiversity("disease", 3)], 0).acceptable
    # fully generalised: one class {flu x4, cancer, hiv}: 3 distinct
    assert evaluate(table, (2, 2), [DistinctLDiversity("disease", 3)], 0).acceptable


def test_entropy_l_diversity_by_hand() -> None:
    table = _table()
    # class A: flu 2/3, cancer 1/3: H = -(2/3 ln 2/3 + 1/3 ln 1/3) = ln 3 - 2/3 ln 2 = 0.6365
    entropy = math.log(3) - 2 / 3 * math.log(2)
    assert math.exp(entropy) == pytest.approx(1.8899, abs=1e-4)
    assert evaluate(table, (1, 1), [EntropyLDiversity("disease", 1.88)], 0).acceptable
    assert not evaluate(table, (1, 1), [EntropyLDiversity("disease", 1.9)], 0).acceptable


def test_t_closeness_equal_distance_by_hand() -> None:
    table = _table()
    # overall: flu 4/6, cancer 1/6, hiv 1/6; class A: flu 2/3, cancer 1/3, hiv 0
    # D = 1/2 (|2/3 - 2/3| + |1/3 - 1/6| + |0 - 1/6|) = 1/6; class B likewise
    model = TCloseness("disease", 0.17)
    node = evaluate(table, (1, 1), [model], 0)
    assert model.distances(table, node.classes).tolist() == pytest.approx([1 / 6, 1 / 6])
    assert node.acceptable
    assert not evaluate(table, (1, 1), [TCloseness("disease", 0.16)], 0).acceptable


def test_t_closeness_ordered_distance_li_et_al_example() -> None:
    # Li, Li & Venkatasubramanian (2007): salaries 3k..11k; {3k,4k,5k} is 0.375 from the
    # whole, {6k,8k,11k} is 0.167. Worked out: r_i = p_i - 1/9; class 1 cumulative sums
    # 2/9,4/9,6/9,5/9,4/9,3/9,2/9,1/9,0 sum to 27/9 = 3, over m - 1 = 8 gives 0.375.
    group = Hierarchy.from_rows([("g1", "*"), ("g2", "*"), ("g3", "*")], "group")
    frame = pd.DataFrame({"group": ["g1"] * 3 + ["g2"] * 3 + ["g3"] * 3,
                          "salary": ["3", "4", "5", "6", "8", "11", "7", "9", "10"]})
    table, _ = EncodedTable.encode(frame, {"group": group}, ("salary",))
    classes = table.classes((0,))
    distances = TCloseness("salary", 1, "ordered").distances(table, classes)
    of_record = table.record_classes(classes)
    by_group = dict(zip(["g1", "g2", "g3"], distances[of_record[[0, 3, 6]]], strict=True))
    assert by_group["g1"] == pytest.approx(0.375)
    # class 2 cumulative: -1,-2,-3,-1,-2,0,-1,-2,0 (ninths): 12/9 / 8 = 1/6
    assert by_group["g2"] == pytest.approx(1 / 6)
    # class 3 {7k, 9k, 10k}: cumulative -1,-2,-3,-4,-2,-3,-1,1,0 (ninths): 17/9 / 8 = 17/72
    assert distances[of_record[6]] == pytest.approx(17 / 72)
    # numeric order, not text order (as text "11" < "3" and class 2 would look far off)
    passed = TCloseness("salary", 0.2, "ordered").check(table, classes)
    assert passed[of_record[[0, 3, 6]]].tolist() == [False, True, False]


def test_models_reject_bad_parameters() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(AnonymizationConfigError):
            KAnonymity(bad)  # type: ignore[arg-type]
    with pytest.raises(AnonymizationConfigError):
        DistinctLDiversity("d", 0)
    with pytest.raises(AnonymizationConfigError):
        TCloseness("d", 1.5)
    with pytest.raises(AnonymizationConfigError):
        TCloseness("d", 0.2, "hierarchical")  # type: ignore[arg-type]


def test_monotonicity_declarations() -> None:
    assert KAnonymity(2).monotone(True) and DistinctLDiversity("d", 2).monotone(True)
    assert not EntropyLDiversity("d", 2).monotone(True)
    assert EntropyLDiversity("d", 2).monotone(False)
    assert not TCloseness("d", 0.2).monotone(True) and TCloseness("d", 0.2).monotone(False)


# --- metrics ---------------------------------------------------------------------------------

def test_loss_metric_by_hand() -> None:
    letter = Hierarchy.from_rows([("a", "ab", "*"), ("b", "ab", "*"), ("c", "cd", "*"),
                                  ("d", "cd", "*")], "letter")
    frame = pd.DataFrame({"letter": ["a", "b", "c", "d", "d"]})
    table, _ = EncodedTable.encode(frame, {"letter": letter})
    metric = Loss(table)
    # level 1: every cell covers 2 of 4 leaves: (2 - 1) / (4 - 1) = 1/3
    node = evaluate(table, (1,), [KAnonymity(3)], 5)
    # classes ab (2 records, suppressed: loss 1 each) and cd (3 records, 1/3 each)
    assert node.suppressed == 2
    value, _ = metric.score(node.levels, node.classes, node.released)
    assert value == pytest.approx((2 * 1 + 3 * (1 / 3)) / 5)
    # two attributes, geometric mean: sqrt((1 + l1)(1 + l2)) - 1
    two = pd.DataFrame({"letter": ["a", "b"], "other": ["c", "d"]})
    table2, _ = EncodedTable.encode(two, {"letter": letter, "other": letter})
    node2 = evaluate(table2, (2, 0), [KAnonymity(1)], 0)
    value2, _ = Loss(table2).score(node2.levels, node2.classes, node2.released)
    assert value2 == pytest.approx(math.sqrt((1 + 1) * (1 + 0)) - 1)
    value3, _ = Loss(table2, "arithmetic").score(node2.levels, node2.classes, node2.released)
    assert value3 == pytest.approx(0.5)


def test_discernibility_and_entropy_by_hand() -> None:
    table = _table()
    node = evaluate(table, (1, 0), [KAnonymity(2)], 6)
    # (band, zip): {20-29,13053}:1 {20-29,13068}:2 {30-39,14850}:2 {30-39,14853}:1
    # released 2^2 + 2^2 = 8; suppressed 2 records cost n = 6 each: 8 + 12 = 20
    value, bound = Discernibility(table).score(node.levels, node.classes, node.released)
    assert value == 20 and bound == 1 + 4 + 4 + 1
    # entropy at age level 1 (zip 0), all released: each age is unique in the table and
    # its band holds 3 records: -log2(1/3) per cell, 6 cells -> 6 log2 3
    node = evaluate(table, (1, 0), [KAnonymity(1)], 0)
    value, _ = NonUniformEntropy(table).score(node.levels, node.classes, node.released)
    assert value == pytest.approx(6 * math.log2(3))


# --- the lattice search ----------------------------------------------------------------------

def _brute_force(table: EncodedTable, models: list, metric: object, limit: int
                 ) -> tuple[float, tuple[int, ...]] | None:
    best = None
    for levels in itertools.product(*(range(h) for h in table.heights)):
        node = evaluate(table, levels, models, limit)
        if node.acceptable:
            value = metric.score(levels, node.classes, node.released)[0]  # type: ignore[attr-defined]
            key = (round(value, 9), sum(levels), levels)
            best = key if best is None or key < best else best
    return None if best is None else (best[0], best[2])


@pytest.mark.parametrize("models, limit", [
    ([KAnonymity(2)], 0), ([KAnonymity(2)], 1), ([KAnonymity(3)], 2),
    ([KAnonymity(2), DistinctLDiversity("disease", 2)], 1),
    ([EntropyLDiversity("disease", 1.5)], 2),
    ([TCloseness("disease", 0.2)], 1),
])
@pytest.mark.parametrize("metric_cls", [Loss, Discernibility, NonUniformEntropy])
def test_search_matches_brute_force(models: list, limit: int, metric_cls: type) -> None:
    table = _table()
    metric = metric_cls(table)
    found = search(table, models, metric, limit)
    expected = _brute_force(table, models, metric, limit)
    assert expected is not None and found.best is not None
    assert found.best.value == pytest.approx(expected[0]) and found.best.levels == expected[1]


def test_search_reports_no_solution() -> None:
    table = _table()
    assert search(table, [KAnonymity(7)], Loss(table), 0).best is None


# --- the engine ------------------------------------------------------------------------------

def _config(**extra: object) -> AnonymizationConfig:
    data = {"quasi_identifiers": {"age": AGE, "zip": ZIP}, "sensitive": ["disease"],
            "models": [{"type": "k-anonymity", "k": 3}], **extra}
    return AnonymizationConfig.from_dict(data)


def test_anonymize_small_table_end_to_end() -> None:
    result = anonymize(PATIENTS, _config())
    # the cheapest 3-anonymous node: (age band, ZIP-3) — loss per attribute: age 10 of 20
    # leaves (9/19), zip 2 of 4 (1/3)
    assert result.levels == {"age": 1, "zip": 1}
    assert result.table["age"].tolist() == ["20-29"] * 3 + ["30-39"] * 3
    assert result.table["zip"].tolist() == ["130**"] * 3 + ["148**"] * 3
    assert result.table["disease"].tolist() == PATIENTS["disease"].tolist()
    assert result.utility == pytest.approx(math.sqrt((1 + 9 / 19) * (1 + 1 / 3)) - 1)
    assert result.risk_before.prosecutor_highest == 1.0
    assert result.risk_after.prosecutor_highest == pytest.approx(1 / 3)


def test_anonymize_suppresses_and_masks_rows() -> None:
    frame = pd.concat([PATIENTS, pd.DataFrame({"age": ["21"], "zip": ["14853"],
                                               "disease": ["flu"]})], ignore_index=True)
    result = anonymize(frame, _config(suppression_limit=0.2))
    # 7 records: floor(0.2 * 7) = 1 may be suppressed: the lone (20-29, 148**) record
    assert result.suppressed == 1 and result.levels == {"age": 1, "zip": 1}
    assert result.table.iloc[6][["age", "zip"]].tolist() == ["*", "*"]
    assert result.risk_after.records == 6


def test_anonymize_rejects_unplaceable_rows() -> None:
    frame = pd.concat([PATIENTS, pd.DataFrame({"age": ["99", None], "zip": ["13053", "13053"],
                                               "disease": ["flu", "flu"]})], ignore_index=True)
    result = anonymize(frame, _config())
    assert result.rejects.columns.tolist() == ["row", "reason"]  # no content: it identifies
    assert result.rejects["row"].tolist() == [6, 7]
    assert "not in the hierarchy" in result.rejects["reason"].iloc[0]
    assert "missing value" in result.rejects["reason"].iloc[1]
    assert len(result.table) == 6


def test_anonymize_builder_reasons_and_roles() -> None:
    frame = pd.DataFrame({"name": ["x"] * 4, "zip": ["02139", "02139", "02144", "bad"],
                          "dx": ["E11.9", "E11.2", "E10", "I10"]})
    config = AnonymizationConfig.from_dict({
        "quasi_identifiers": {"zip": {"builder": "zip"}}, "identifiers": ["name"],
        "sensitive": ["dx"], "models": [{"type": "k-anonymity", "k": 3}]})
    result = anonymize(frame, config)
    assert "name" not in result.table.columns and result.dropped_columns == ["name"]
    assert result.rejects["reason"].tolist() == ["zip: 'bad' is not a ZIP code (12345 or "
                                                 "12345-6789)"]
    assert result.table["zip"].tolist() == ["021**"] * 3


def test_anonymize_refuses_release_above_threshold() -> None:
    config = _config(release={"max_highest_risk": 0.3})
    with pytest.raises(ReleaseRefused) as info:
        anonymize(PATIENTS, config)
    # best 3-anonymous result has classes of 3: highest risk 1/3 > 0.3
    assert info.value.violations == [("prosecutor_highest", pytest.approx(1 / 3), 0.3)]


def test_anonymize_no_solution_and_config_errors() -> None:
    with pytest.raises(NoAnonymousTransformation, match="7-anonymity"):
        anonymize(PATIENTS, _config(models=[{"type": "k-anonymity", "k": 7}]))
    with pytest.raises(NoAnonymousTransformation, match="the table has no rows"):
        anonymize(PATIENTS.iloc[:0], _config())
    with pytest.raises(NoAnonymousTransformation, match="every row was rejected"):
        anonymize(PATIENTS.assign(age="x"), _config())
    with pytest.raises(AnonymizationConfigError, match="not declared in any role"):
        anonymize(PATIENTS.assign(extra="1"), _config())
    twice = pd.concat([PATIENTS, PATIENTS[["age"]]], axis=1)
    with pytest.raises(AnonymizationConfigError, match="more than once"):
        anonymize(twice, _config())
    assert "extra" not in anonymize(PATIENTS.assign(extra="1"),
                                    _config(undeclared="drop")).table.columns


@pytest.mark.parametrize("data, message", [
    ({"quasi_identifiers": {}, "models": [{"type": "k-anonymity", "k": 2}]}, "quasi-identifier"),
    ({"quasi_identifiers": {"a": {"builder": "zip"}}}, "privacy model"),
    ({"quasi_identifiers": {"a": {"builder": "nope"}}, "models": []}, "unknown hierarchy"),
    ({"quasi_identifiers": {"a": {"builder": "zip"}}, "models": [{"type": "k-anon"}]},
     "each model needs a type"),
    ({"quasi_identifiers": {"a": {"builder": "zip"}}, "models": [{"type": "k-anonymity"}]},
     "k-anonymity"),
    ({"quasi_identifiers": {"a": {"builder": "zip"}},
      "models": [{"type": "t-closeness", "attribute": "s", "t": 0.1}]}, "not declared sensitive"),
    ({"quasi_identifiers": {"a": {"builder": "zip"}}, "sensitive": ["a"],
      "models": [{"type": "k-anonymity", "k": 2}]}, "more than one role"),
    ({"quasi_identifiers": {"a": {"builder": "zip"}}, "models": [{"type": "k-anonymity",
                                                                  "k": 2}],
      "suppression_limit": 2}, "suppression_limit"),
    ({"quasi_identifiers": {"a": {"builder": "zip"}}, "models": [{"type": "k-anonymity",
                                                                  "k": 2}],
      "release": {"max_highest_risk": "high"}}, "release.max_highest_risk"),
    ({"quasi_identifiers": {"a": {"file": "x.csv", "builder": "zip"}}, "models": []},
     "exactly one"),
    ({"quasi_identifiers": {"a": {"builder": "zip"}}, "models": [{"type": "k-anonymity",
                                                                  "k": 2}], "extra": 1},
     "unknown configuration keys"),
    ([1, 2], "must be a mapping"),
])
def test_config_validation(data: object, message: str) -> None:
    with pytest.raises(AnonymizationConfigError, match=message):
        AnonymizationConfig.from_dict(data)  # type: ignore[arg-type]


def test_load_config_files(tmp_path: Path) -> None:
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "sex.csv").write_text("m;*\nf;*\n")
    (tmp_path / "c.yaml").write_text(
        "quasi_identifiers:\n  sex: {file: h/sex.csv}\nmodels:\n  - {type: k-anonymity, k: 2}\n"
        "metric: {name: loss, aggregate: arithmetic}\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.quasi_identifiers["sex"].file == tmp_path / "h" / "sex.csv"
    assert config.aggregate == "arithmetic"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AnonymizationConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("a: [unclosed")
    with pytest.raises(AnonymizationConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "big.json").write_text(" " * (1024 * 1024 + 1))
    with pytest.raises(AnonymizationConfigError, match="over"):
        load_config(tmp_path / "big.json")
    with pytest.raises(AnonymizationConfigError, match="cannot read"):
        load_config(tmp_path / "absent.json")
    # a YAML tag that would construct Python objects is refused, not executed
    (tmp_path / "evil.yaml").write_text("quasi_identifiers: !!python/object/apply:os.system "
                                        "['echo pwned']\n")
    with pytest.raises(AnonymizationConfigError, match="not valid YAML"):
        load_config(tmp_path / "evil.yaml")


# --- UCI Adult: the same optimum as ARX ------------------------------------------------------

def test_adult_optimum_matches_arx(adult: Path) -> None:
    frame = pd.read_csv(adult / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    config = AnonymizationConfig.from_dict({
        "quasi_identifiers": {q: {"file": str(adult / f"adult_hierarchy_{q}.csv")}
                              for q in ADULT_QIS},
        "insensitive": ["salary-class"],
        "models": [{"type": "k-anonymity", "k": 5}], "suppression_limit": 0.05})
    result = anonymize(frame, config)
    # ARX (Flash, loss metric, 5-anonymity, 5% suppression) reports the levels
    # [0, 3, 0, 0, 1, 1, 1, 2] in the data's column order, 1,458 suppressed, 399 classes
    assert [result.levels[q] for q in ADULT_QIS] == [0, 3, 0, 0, 1, 1, 1, 2]
    assert result.suppressed == 1458 and result.classes == 399
    assert result.search["max_suppressed"] == math.floor(0.05 * 30162)
    assert (result.table[ADULT_QIS] == "*").all(axis=1).sum() == 1458
    released = result.table[(result.table[ADULT_QIS] != "*").any(axis=1)]
    assert released.groupby(ADULT_QIS).size().min() >= 5
    assert result.search["search_seconds"] < 10  # ~0.5 s on the 2-core reference machine


def test_adult_levels_read_alphabetically_are_not_anonymous(adult: Path) -> None:
    """The brief's labels ([age 0, education 3, ...]) name the columns alphabetically; read
    that way the node needs more suppression than the 1,508 records allowed — so ARX's
    vector is in the data's column order, as the test above asserts."""
    frame = pd.read_csv(adult / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    hierarchies = {q: Hierarchy.from_csv(adult / f"adult_hierarchy_{q}.csv") for q in ADULT_QIS}
    table, _ = EncodedTable.encode(frame, hierarchies)
    named = {"age": 0, "education": 3, "marital-status": 0, "native-country": 0,
             "occupation": 1, "race": 1, "sex": 1, "workclass": 2}
    node = evaluate(table, [named[q] for q in ADULT_QIS], [KAnonymity(5)],
                    math.floor(0.05 * table.rows))
    assert not node.acceptable and node.suppressed > 1508


def test_oversized_lattice_is_refused() -> None:
    # 19 attributes with 3 levels each: 3**19 (about 1.2e9) nodes, over the 500,000 limit
    three = Hierarchy.from_rows([("a", "ab", "*"), ("b", "ab", "*")], "three")
    frame = pd.DataFrame({f"c{i}": ["a", "b"] for i in range(19)})
    config = AnonymizationConfig.from_dict({
        "quasi_identifiers": {f"c{i}": three for i in range(19)},
        "models": [{"type": "k-anonymity", "k": 2}]})
    with pytest.raises(AnonymizationConfigError, match="lattice has 1162261467 nodes"):
        anonymize(frame, config)


def test_combined_monotone_and_non_monotone_models_prune_exactly() -> None:
    """k-anonymity tags nodes below a failure even next to t-closeness (not monotone with
    suppression): the search still equals brute force over the lattice."""
    table = _table()
    models = [KAnonymity(2), TCloseness("disease", 0.3)]
    metric = Loss(table)
    found = search(table, models, metric, 1)
    expected = _brute_force(table, models, metric, 1)
    assert found.best is not None and expected is not None
    assert (found.best.value, found.best.levels) == (pytest.approx(expected[0]), expected[1])
