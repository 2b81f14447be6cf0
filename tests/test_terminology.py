"""Terminology: code lists, syntax checks, value sets, maps, unit conversion, code warnings,
the local LOINC table. (The FHIR API operations and the CLI are in test_terminology_api.py.)"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthmesh.errors import ConfigError
from healthmesh.terminology import (
    CVX,
    ICD10CM,
    LOINC,
    SNOMED,
    WARNING_EXTENSION,
    WARNING_SYSTEM,
    LocalCodes,
    UnitError,
    annotate,
    code_system,
    code_systems,
    code_warnings,
    convert,
    quantity,
    translate,
    ucum_code,
    value_set,
    value_sets,
    warnings_in,
)
from healthmesh.terminology.codesystems import (
    loinc_check_digit,
    resolve_system,
    syntax_problem,
    verhoeff_valid,
)

# -- code systems --------------------------------------------------------------------------


def test_every_shipped_code_is_well_formed_and_every_system_says_where_it_comes_from() -> None:
    systems = code_systems()
    assert {LOINC, SNOMED, ICD10CM, CVX} <= set(systems)
    for cs in systems.values():
        assert len(cs.source) > 40 and cs.title and cs.concepts, cs.url
        for code, display in cs.concepts.items():
            assert display.strip(), (cs.url, code)
            assert syntax_problem(cs, code) is None, (cs.url, code)


@pytest.mark.parametrize(("number", "check"), [
    # worked by hand with LOINC's mod-10 rule: double every second digit from the right
    ("4548", 4),    # 8*2=16->7, 4, 5*2=10->1, 4: 7+4+1+4=16 -> 4
    ("8480", 6),    # 0, 8, 4*2=8, 8: 0+8+8+8=24 -> 6
    ("12345", 5),   # the LOINC manual's own example
    ("88122", 7),
])
def test_loinc_check_digit(number: str, check: int) -> None:
    assert loinc_check_digit(number) == check


@pytest.mark.parametrize(("code", "problem"), [
    ("4548-4", None),
    ("4548-5", "check digit"),
    ("4548", "is not a LOINC code"),
    ("LA6568-5", None),            # answer codes: shape only
    ("abc-1", "is not a LOINC code"),
])
def test_loinc_syntax(code: str, problem: str | None) -> None:
    found = syntax_problem(code_system("loinc"), code)  # type: ignore[arg-type]
    assert (found is None) if problem is None else (problem in (found or ""))


def test_snomed_verhoeff_and_partition() -> None:
    sct = code_system("snomed")
    assert sct is not None
    assert verhoeff_valid("38341003") and not verhoeff_valid("38341004")
    assert syntax_problem(sct, "38341003") is None
    assert "Verhoeff" in (syntax_problem(sct, "38341004") or "")
    assert "partition" in (syntax_problem(sct, "38341013") or "")  # partition 01: description
    assert "identifier" in (syntax_problem(sct, "0123456") or "")
    assert syntax_problem(sct, "428041000124106") is None  # long-format (extension) concept


def test_icd10cm_shape() -> None:
    icd = code_system(ICD10CM)
    assert icd is not None
    for good in ("I10", "E11.9", "S93.409A", "F32.A"):
        assert syntax_problem(icd, good) is None
    for bad in ("I1", "i10", "E11.", "E11.12345", "U07 1"):
        assert syntax_problem(icd, bad) is not None


def test_short_names_resolve_to_urls() -> None:
    assert resolve_system("LOINC") == LOINC
    assert resolve_system(" snomed ") == SNOMED
    assert resolve_system("icd10cm") == ICD10CM
    assert resolve_system("http://example.org/x") == "http://example.org/x"
    assert code_system("http://example.org/x") is None


# -- value sets ---------------------------------------------------------------------------


def test_value_sets_cover_the_indicators_and_cohorts_with_known_codes() -> None:
    needed = {"hypertension", "diabetes", "ckd", "systolic-bp", "diastolic-bp", "bp-panel",
              "hba1c", "ldl", "bmi", "smoking-status", "current-smoker", "phq9",
              "sdoh-screening", "sdoh-conditions", "influenza-vaccine", "mmr-vaccine",
              "covid19-vaccine"}
    assert needed <= set(value_sets())
    systems = code_systems()
    for vs in value_sets().values():
        for item in vs.codes:
            system, _, code = item.partition("|")
            assert code in systems[system], (vs.name, item)


def test_cohorts_load_the_same_value_set_objects() -> None:
    from healthmesh.cohorts import value_set as cohort_value_set

    assert cohort_value_set("hypertension") is value_set("hypertension")
    ckd = value_set("ckd")
    assert ckd is not None and ckd.contains(ICD10CM, "N18.4") and not ckd.contains(
        ICD10CM, "I10")


def test_value_set_as_fhir_has_displays_and_canonical_url() -> None:
    vs = value_set("hba1c")
    assert vs is not None
    fhir = vs.to_fhir()
    assert fhir["url"] == "https://healthmesh.dev/fhir/ValueSet/hba1c"
    first = fhir["expansion"]["contains"][0]
    assert first == {"system": LOINC, "code": "4548-4",
                     "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}


# -- concept maps -------------------------------------------------------------------------


def test_snomed_to_icd10cm_and_back_swap_wider_and_narrower() -> None:
    forward = translate(SNOMED, "38341003", ICD10CM)
    assert [(t.code, t.equivalence) for t in forward] == [("I10", "narrower")]
    back = {t.code: t.equivalence for t in translate(ICD10CM, "I10", SNOMED)}
    assert back["38341003"] == "wider"       # hypertensive disorder is wider than I10
    assert back["59621000"] == "equivalent"  # essential hypertension
    assert translate(ICD10CM, "N18.4")[0].code == "431857002"
    assert translate(SNOMED, "999999999") == []


def test_every_synthetic_condition_pair_translates() -> None:
    from healthmesh.synth import codes

    for concept in codes.CONDITION.values():
        sct, icd = concept["coding"][0]["code"], concept["coding"][1]["code"]
        assert icd in {t.code for t in translate(SNOMED, sct, ICD10CM)}, sct


# -- units -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "source", "target", "analyte", "expected"), [
    (100, "mg/dL", "mmol/L", "glucose", 100 * 10 / 180.156),        # mg/dL*10 = mg/L; /M
    (5.0, "mmol/L", "mg/dL", "glucose", 5.0 * 180.156 / 10),
    (200, "mg/dL", "mmol/L", "cholesterol", 200 * 10 / 386.65),
    (150, "mg/dL", "mmol/L", "triglycerides", 150 * 10 / 885.7),
    (1.0, "mg/dL", "umol/L", "creatinine", 1.0 * 10 / 113.12 * 1000),
    (6.5, "%", "mmol/mol", "hba1c", (6.5 - 2.152) / 0.09148),         # IFCC-NGSP equation
    (48, "mmol/mol", "%", "hba1c", 48 * 0.09148 + 2.152),
    (180, "[lb_av]", "kg", None, 180 * 0.45359237),
    (70, "[in_i]", "cm", None, 70 * 2.54),
    (98.6, "[degF]", "Cel", None, (98.6 - 32) * 5 / 9),
    (16, "kPa", "mm[Hg]", None, 16 * 1000 / 133.322387415),
    (480, "min", "h", None, 8.0),
])
def test_conversions_match_hand_computed_values(value: float, source: str, target: str,
                                                analyte: str | None, expected: float) -> None:
    assert convert(value, source, target, analyte_name=analyte) == pytest.approx(expected,
                                                                                  rel=1e-5)


def test_unit_text_from_exports_is_understood() -> None:
    assert ucum_code("mg/dl") == "mg/dL"
    assert ucum_code("bpm") == "/min"
    assert ucum_code("lbs") == "[lb_av]"
    assert ucum_code("°F") == "[degF]"
    assert ucum_code("mmHg") == "mm[Hg]"
    assert convert(7, "mmol/l", "mg/dl", analyte_name="glucose") == pytest.approx(126.109, 1e-4)


@pytest.mark.parametrize(("args", "message"), [
    ((100, "mg/dL", "mmol/L", None), "molar mass"),
    ((100, "mg/dL", "kg", None), "different dimensions"),
    ((100, "furlongs", "m", None), "not supported"),
    ((100, "mg/dL", "mmol/L", "unobtainium"), "unknown analyte"),
    ((6, "%", "mg/dL", "hba1c"), "only between"),
])
def test_impossible_conversions_say_why(args: tuple[Any, ...], message: str) -> None:
    value, source, target, analyte = args
    with pytest.raises(UnitError, match=message):
        convert(value, source, target, analyte_name=analyte)


def test_quantity_is_ucum_coded() -> None:
    assert quantity(120, "mmHg") == {"value": 120, "unit": "mm[Hg]",
                                     "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    converted = quantity(16, "kPa", to="mm[Hg]")
    assert converted["code"] == "mm[Hg]" and converted["value"] == pytest.approx(120.0, 1e-4)


# -- code warnings on resources ------------------------------------------------------------

OBS = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "meta": {"tag": [{"system": "http://example.org/tags", "code": "keep"}]},
    "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
    "subject": {"reference": "Patient/p1"},
    "component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://example.org/local", "code": "DIA"}]}},
    ],
}


def test_known_codes_leave_the_resource_untouched() -> None:
    resource, count = annotate(OBS)
    assert resource is OBS and count == 0


def test_unknown_and_malformed_codes_are_tagged_with_their_location() -> None:
    obs = copy.deepcopy(OBS)
    obs["code"]["coding"][0]["code"] = "99999-5"  # 9+9+9+9+9=45 -> check 5; not listed
    obs["component"][0]["code"]["coding"][0]["code"] = "8480-7"  # wrong check digit
    before = copy.deepcopy(obs)
    resource, count = annotate(obs)
    assert obs == before  # not mutated
    assert count == 2
    tags = resource["meta"]["tag"]
    assert {"system": "http://example.org/tags", "code": "keep"} in tags
    assert {t["code"] for t in tags if t["system"] == WARNING_SYSTEM} == {"unknown-code",
                                                                          "invalid-code"}
    details = [e["valueString"] for e in resource["meta"]["extension"]
               if e["url"] == WARNING_EXTENSION]
    assert any("99999-5 at Observation.code.coding[0]" in d for d in details)
    assert any("8480-7 at Observation.component[0].code.coding[0]" in d and "check digit" in d
               for d in details)
    assert warnings_in(orjson.dumps(resource)) == 2


def test_annotation_is_idempotent_and_removed_once_the_code_is_fixed() -> None:
    obs = copy.deepcopy(OBS)
    obs["code"]["coding"][0]["code"] = "99999-5"
    once, _ = annotate(obs)
    twice, count = annotate(once)
    assert twice == once and count == 1
    fixed = copy.deepcopy(once)
    fixed["code"]["coding"][0]["code"] = "85354-9"
    clean, count = annotate(fixed)
    assert count == 0
    assert clean["meta"] == {"tag": [{"system": "http://example.org/tags", "code": "keep"}]}


def test_meta_and_terminology_resources_are_not_checked() -> None:
    obs = copy.deepcopy(OBS)
    obs["meta"]["security"] = [{"system": LOINC, "code": "1-1"}]
    assert annotate(obs)[1] == 0
    vs = {"resourceType": "ValueSet", "id": "v", "status": "active",
          "expansion": {"timestamp": "2024-01-01", "contains": [{"system": LOINC,
                                                                 "code": "99999-5"}]}}
    assert annotate(vs)[1] == 0


def test_many_warnings_are_capped_in_detail_but_all_tagged() -> None:
    obs = copy.deepcopy(OBS)
    obs["code"]["coding"] = [{"system": SNOMED, "code": str(10**8 + i)} for i in range(30)]
    resource, count = annotate(obs)
    assert count == 30
    exts = resource["meta"]["extension"]
    assert len(exts) == 21 and "10 more" in exts[-1]["valueString"]


def test_synthetic_population_produces_no_code_warnings(tmp_path: Path) -> None:
    from healthmesh.synth import generate

    generate(tmp_path / "out", patients=40, seed=11)
    seen = 0
    for path in (tmp_path / "out").rglob("*.ndjson"):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            seen += 1
            assert code_warnings(resource) == [], resource.get("resourceType")
    assert seen > 1000


def test_every_write_path_records_warnings(make_node: Any) -> None:
    node = make_node()
    obs = copy.deepcopy(OBS)
    obs["code"]["coding"][0]["code"] = "99999-5"
    node.fhir.update("Observation", "o1", obs)
    stored = node.store.read("Observation", "o1")
    assert stored is not None and b"unknown-code" in stored.content
    assert warnings_in(stored.content) == 1


# -- local codes -> LOINC -------------------------------------------------------------------

LOCAL = "urn:oid:1.2.3.4.5"


def _table(tmp_path: Path, text: str) -> LocalCodes:
    path = tmp_path / "local-loinc.csv"
    path.write_text(text, "utf-8")
    return LocalCodes.read(path)


def _lab(code: str, value: float | None = None, unit: str | None = None) -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "id": "l1", "status": "final",
                           "code": {"coding": [{"system": LOCAL, "code": code}]}}
    if value is not None:
        obs["valueQuantity"] = {"value": value, **({"unit": unit} if unit else {})}
    return obs


def test_local_codes_gain_loinc_next_to_the_original(tmp_path: Path) -> None:
    table = _table(tmp_path, "\ufeffsystem,code,loinc,unit\n"
                             f"{LOCAL},GLU,2339-0,mmol/L\n{LOCAL},HB,718-7,\n")
    out = table.apply(_lab("GLU", 90, "mg/dl"))
    codings = out["code"]["coding"]
    assert codings[0] == {"system": LOCAL, "code": "GLU"}
    assert codings[1]["system"] == LOINC and codings[1]["code"] == "2339-0"
    assert codings[1]["display"] == "Glucose [Mass/volume] in Blood"
    assert out["valueQuantity"]["value"] == pytest.approx(90 * 10 / 180.156, rel=1e-5)
    assert out["valueQuantity"]["code"] == "mmol/L"
    same = table.apply(_lab("HB", 13.5, "g/dL"))
    assert same["valueQuantity"] == {"value": 13.5, "unit": "g/dL"}  # no unit in the table
    assert table.apply(_lab("OTHER", 1)) == _lab("OTHER", 1)


def test_sender_loinc_wins_and_unconvertible_units_raise(tmp_path: Path) -> None:
    table = _table(tmp_path, f"system,code,loinc,unit\n{LOCAL},GLU,2339-0,mmol/L\n")
    has_loinc = _lab("GLU", 5)
    has_loinc["code"]["coding"].append({"system": LOINC, "code": "2345-7"})
    assert table.apply(has_loinc) == has_loinc
    with pytest.raises(UnitError, match="GLU"):
        table.apply(_lab("GLU", 5, "kg"))


@pytest.mark.parametrize(("text", "message"), [
    ("system,code,unit\n", "lacks column(s) loinc"),
    ("system,code,loinc,unit\nx,GLU,2339-1,\n", "line 2: loinc '2339-1' fails the LOINC check"),
    ("system,code,loinc,unit\nx,GLU,2339-0,\nx,GLU,2345-7,\n", "line 3: x|GLU is listed twice"),
    ("system,code,loinc,unit\nx,GLU,2339-0\n", "line 2: 3 fields, expected 4"),
    ("system,code,loinc,unit\n,GLU,2339-0,\n", "system and code are required"),
])
def test_bad_local_tables_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _table(tmp_path, text)


def test_a_node_without_a_table_has_an_empty_one(tmp_path: Path) -> None:
    assert len(LocalCodes.for_node(tmp_path)) == 0
