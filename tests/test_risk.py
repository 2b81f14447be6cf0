"""Re-identification risk: ARX's sample-summary formulas, checked by hand and on UCI Adult."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthmesh.privacy import AnonymizationConfigError, risk
from healthmesh.privacy.anonymize.reidentification import risk_from_sizes

ADULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "adult"
ADULT_QIS = ["sex", "age", "race", "marital-status", "education", "native-country",
             "workclass", "occupation"]


def _frame(sizes: list[int]) -> pd.DataFrame:
    """One class per size: class i has ``sizes[i]`` records with QI value ``c<i>``."""
    return pd.DataFrame({"qi": [f"c{i}" for i, n in enumerate(sizes) for _ in range(n)],
                         "other": "x"})


def test_prosecutor_risk_by_hand() -> None:
    # classes of 1, 2, 3, 4 records: 10 records, 4 classes
    report = risk(_frame([1, 2, 3, 4]), ["qi"], threshold=0.3)
    assert report.records == 10 and report.classes == 4
    assert report.prosecutor_average == pytest.approx(4 / 10)
    assert report.prosecutor_highest == 1.0
    # 1/f > 0.3 for f = 1, 2, 3 (1/3 = 0.333): 1 + 2 + 3 = 6 of 10 records
    assert report.prosecutor_records_at_risk == pytest.approx(0.6)
    assert report.unique_share == pytest.approx(0.1)
    # without a population the sample is the population: journalist = prosecutor
    assert report.journalist_highest == 1.0
    assert report.journalist_records_at_risk == pytest.approx(0.6)
    assert report.marketer_average == pytest.approx(0.4)
    # the threshold is strict: at 0.25, f = 4 (risk exactly 0.25) is not at risk
    assert risk(_frame([1, 2, 3, 4]), ["qi"], threshold=0.25
                ).prosecutor_records_at_risk == pytest.approx(0.6)


def test_journalist_and_marketer_with_population_by_hand() -> None:
    sample = _frame([1, 2, 3, 4])
    population = _frame([2, 4, 3, 8, 5])  # the same classes c0..c3 plus a class c4
    report = risk(sample, ["qi"], threshold=0.3, population=population)
    # F = 2, 4, 3, 8: highest 1/2; at risk 1/F > 0.3 for F = 2, 3: records 1 + 3 = 4 of 10
    assert report.journalist_highest == pytest.approx(0.5)
    assert report.journalist_records_at_risk == pytest.approx(0.4)
    # marketer: sum f/F / n = (1/2 + 2/4 + 3/3 + 4/8) / 10 = 0.25
    assert report.marketer_average == pytest.approx(0.25)
    # journalist average: max(classes / sum F, marketer) = max(4/17, 0.25)
    assert report.journalist_average == pytest.approx(0.25)
    # the prosecutor figures do not depend on the population
    assert report.prosecutor_highest == 1.0 and report.population_model == "population table"


def test_population_must_contain_the_sample() -> None:
    with pytest.raises(AnonymizationConfigError, match="does not contain"):
        risk(_frame([1, 2]), ["qi"], population=_frame([1]))
    with pytest.raises(AnonymizationConfigError, match="smaller"):
        risk_from_sizes(np.array([3]), np.array([2]))


def test_suppressed_records_are_left_out() -> None:
    frame = _frame([1, 2, 3, 4])
    suppressed = frame["qi"] == "c0"
    report = risk(frame, ["qi"], suppressed=suppressed.to_numpy())
    # 9 records in classes of 2, 3, 4: average 3/9, highest 1/2
    assert report.records == 9 and report.prosecutor_average == pytest.approx(3 / 9)
    assert report.prosecutor_highest == pytest.approx(0.5)


def test_missing_values_form_one_class_and_bad_input() -> None:
    frame = pd.DataFrame({"a": ["x", None, None], "b": ["1", "1", "1"]})
    report = risk(frame, ["a", "b"])
    assert report.classes == 2 and report.prosecutor_highest == 1.0
    with pytest.raises(AnonymizationConfigError, match="not in the table"):
        risk(frame, ["zzz"])
    with pytest.raises(AnonymizationConfigError, match="at least one"):
        risk(frame, [])
    with pytest.raises(AnonymizationConfigError, match="threshold"):
        risk(frame, ["a"], threshold=2)
    empty = risk(frame.iloc[:0], ["a"])
    assert empty.records == 0 and empty.prosecutor_highest == 0.0


def test_raw_adult_risk_matches_arx() -> None:
    if not (ADULT / "adult.csv").is_file():
        pytest.fail(f"UCI Adult reference data not found at {ADULT}")
    frame = pd.read_csv(ADULT / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    report = risk(frame, ADULT_QIS, threshold=0.2)
    # ARX on raw Adult (8 QIs): average prosecutor risk 0.600, highest 1.0, 72.9% above 0.2
    assert round(report.prosecutor_average, 3) == 0.600
    assert report.prosecutor_highest == 1.0
    assert round(report.prosecutor_records_at_risk * 100, 1) == 72.9
    assert report.records == 30162
