"""The cohort definition language: validation messages, compiled SQL on hand-made tables,
the consent scope, hostile input, and a property test against a pure-Python evaluator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from healthmesh.cohorts import (
    CohortError,
    compile_cohort,
    compile_values,
    create_analytic_tables,
    json_schema,
    load_consent_scope,
    parse_cohort,
    value_sets,
)
from healthmesh.cohorts import schema as schema_module
from healthmesh.synth import codes as synth_codes

SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
INDEX = date(2024, 12, 31)
HTN = {"name": "hypertension", "include": [
    {"condition": {"codes": [f"{SCT}|38341003", f"{ICD}|I10"]}}]}


# --- building hand-made tables -------------------------------------------------------------------

class Tables:
    """Insert helpers over an in-memory DuckDB with the analytic tables; the rows are also
    kept as Python dicts so tests can compute expected answers independently."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.pending: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)
        self.pending.setdefault((table, tuple(row)), []).append(list(row.values()))

    def flush(self) -> Tables:
        """Write the pending rows, one INSERT per table and column list."""
        for (table, columns), rows in self.pending.items():
            cols = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * len(rows))
            self.con.execute(f'INSERT INTO "{table}" ({cols}) VALUES {marks}',
                             [v for row in rows for v in row])
        self.pending.clear()
        return self

    def patient(self, pid: str, gender: str | None, birth: str | None, *,
                deceased: str | None = None, state: str | None = "MA", city: str | None = None,
                postal_code: str | None = None, country: str | None = "US",
                dead_flag: bool = False) -> None:
        self._insert("patient", {
            "resource_id": f"Patient/{pid}", "patient_id": pid, "gender": gender,
            "birth_date": _d(birth), "deceased": dead_flag or deceased is not None,
            "deceased_date": _d(deceased), "postal_code": postal_code, "city": city,
            "state": state, "country": country})

    def condition(self, rid: str, pid: str, system: str, code: str, onset: str | None, *,
                  recorded: str | None = None, verification: str = "confirmed",
                  clinical: str = "active") -> None:
        self._insert("condition", {
            "resource_id": f"Condition/{rid}", "patient_id": pid, "system": system,
            "code": code, "onset": _d(onset), "recorded": _d(recorded),
            "clinical_status": clinical, "verification_status": verification})

    def observation(self, rid: str, pid: str, system: str, code: str, when: str | None,
                    value: float | None = None, unit: str | None = None, *,
                    status: str = "final", component: bool = False,
                    value_code: tuple[str, str] | None = None) -> None:
        self._insert("observation", {
            "resource_id": f"Observation/{rid}", "patient_id": pid, "system": system,
            "code": code, "effective": _ts(when), "value_number": value, "unit": unit,
            "value_system": value_code[0] if value_code else None,
            "value_code": value_code[1] if value_code else None, "status": status,
            "is_component": component})

    def bp(self, rid: str, pid: str, when: str, systolic: float, diastolic: float) -> None:
        self.observation(rid, pid, LOINC, "85354-9", when)
        self.observation(rid, pid, LOINC, "8480-6", when, systolic, "mm[Hg]", component=True)
        self.observation(rid, pid, LOINC, "8462-4", when, diastolic, "mm[Hg]", component=True)

    def event(self, table: str, rid: str, pid: str, system: str, code: str, when: str,
              status: str = "completed") -> None:
        column = {"medication": "start", "procedure": "performed",
                  "immunization": "occurrence"}[table]
        self._insert(table, {"resource_id": f"{table.capitalize()}/{rid}", "patient_id": pid,
                             "system": system, "code": code, column: _d(when), "status": status})

    def encounter(self, rid: str, pid: str, cls: str, when: str, type_code: str = "185349003",
                  status: str = "finished") -> None:
        self._insert("encounter", {"resource_id": f"Encounter/{rid}", "patient_id": pid,
                                   "class_code": cls, "type_system": SCT, "type_code": type_code,
                                   "start": _ts(when), "status": status})


def _d(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text if "T" in text else f"{text}T09:00:00")


def build_world(con: duckdb.DuckDBPyConnection) -> Tables:
    """The shared hand-made population (index date 2024-12-31 in most tests).

    p1 F 64 hypertensive since 2015, BPs 150/95 (Mar) then 130/80 (Nov): controlled
    p2 M 34 two I10 diagnoses in 2024, BPs 120/70 (Oct) then 145/85 (Dec): not controlled
    p3 F 14 asthma, MMR at 1 year; p4 M died 2024-06-01, hypertensive
    p5 F outside the consent scope, hypertensive; p6 M hypertension only in a denied record
    p7 F 39 I10 in a local code system; p8 aged 2, one MMR dose; p9 aged 2, none
    """
    t = Tables(con)
    t.patient("p1", "female", "1960-05-01", city="Boston")
    t.patient("p2", "male", "1990-01-01", city="Boston")
    t.patient("p3", "female", "2010-06-01", state="NY", city="Albany")
    t.patient("p4", "male", "1950-01-01", deceased="2024-06-01", city="Boston")
    t.patient("p5", "female", "1980-03-03")
    t.patient("p6", "male", "1970-07-07", state=None)
    t.patient("p7", "female", "1985-01-01", state="NY")
    t.patient("p8", "male", "2022-03-01")
    t.patient("p9", "female", "2022-01-15")
    t.condition("c1", "p1", SCT, "38341003", "2015-01-01")
    t.condition("c2", "p2", ICD, "I10", "2024-06-01")
    t.condition("c3", "p2", ICD, "I10", None, recorded="2024-09-01")
    t.condition("c4", "p4", SCT, "38341003", "2000-01-01")
    t.condition("c5", "p5", SCT, "38341003", "2010-01-01")
    t.condition("c6", "p6", SCT, "38341003", "2012-01-01")
    t.condition("c7", "p3", SCT, "195967001", "2018-01-01")
    t.condition("c8", "p7", "urn:local", "I10", "2023-01-01")
    t.condition("c9", "p1", SCT, "44054006", "2020-01-01")
    t.condition("c10", "p2", SCT, "44054006", "2021-01-01", verification="refuted")
    t.bp("bp1", "p1", "2024-03-01", 150, 95)
    t.bp("bp2", "p1", "2024-11-01", 130, 80)
    t.bp("bp3", "p2", "2024-10-01", 120, 70)
    t.bp("bp4", "p2", "2024-12-01", 145, 85)
    t.bp("bp5", "p4", "2024-02-01", 120, 70)
    t.bp("bp6", "p6", "2024-05-01", 118, 75)
    t.observation("a1", "p1", LOINC, "4548-4", "2024-05-01", 7.2, "%")
    t.observation("a2", "p2", LOINC, "4548-4", "2023-01-01", 6.0, "%")
    t.observation("a3", "p2", LOINC, "4548-4", "2024-05-01", 9.1, "%")
    t.observation("a4", "p7", LOINC, "4548-4", "2024-04-01", 5.0, "%", status="entered-in-error")
    t.observation("sm1", "p2", LOINC, "72166-2", "2024-01-01",
                  value_code=(SCT, "449868002"))
    t.event("medication", "m1", "p1", RXNORM, "314076", "2016-01-01", "active")
    t.event("medication", "m2", "p2", RXNORM, "314076", "2024-07-01", "cancelled")
    t.event("procedure", "pr1", "p3", SCT, "73761001", "2024-02-02")
    t.event("immunization", "i1", "p3", CVX, "03", "2011-06-10")
    t.event("immunization", "i2", "p8", CVX, "03", "2023-03-15")
    t.event("immunization", "i3", "p9", CVX, "03", "2023-02-01", status="not-done")
    t.encounter("e1", "p1", "AMB", "2024-04-01")
    t.encounter("e2", "p2", "IMP", "2024-04-02")
    t.encounter("e3", "p3", "AMB", "2024-04-03", status="cancelled")
    return t.flush()


ALL = ["p1", "p2", "p3", "p4", "p6", "p7", "p8", "p9"]  # everyone but p5
DENIED = ["Condition/c6"]


@pytest.fixture
def world() -> Iterator[tuple[duckdb.DuckDBPyConnection, Tables]]:
    con = duckdb.connect()
    create_analytic_tables(con)
    tables = build_world(con)
    load_consent_scope(con, ALL, DENIED)
    yield con, tables
    con.close()


def members(con: duckdb.DuckDBPyConnection, cohort: dict[str, Any], **kw: Any) -> set[str]:
    compiled = compile_cohort(cohort, **{"index_date": INDEX, **kw})
    return {row[0] for row in compiled.run(con)}


def cohort(*include: dict[str, Any], exclude: tuple[dict[str, Any], ...] = (),
           **extra: Any) -> dict[str, Any]:
    return {"name": "test", "include": list(include), "exclude": list(exclude), **extra}


# --- validation ----------------------------------------------------------------------------------

def test_minimal_form_is_accepted() -> None:
    parsed = parse_cohort(HTN)
    assert parsed.name == "hypertension"
    (criterion,) = parsed.include
    assert criterion.codes.systems == (SCT, ICD) and criterion.codes.codes == ("38341003", "I10")


def _obs(**body: Any) -> dict[str, Any]:
    return cohort({"observation": {"valueset": "hba1c", **body}})


def _cond(**body: Any) -> dict[str, Any]:
    return cohort({"condition": {"valueset": "hypertension", **body}})


BAD = [
    ([1], "(root)", "expected an object, got an array"),
    ({"include": []}, "(root)", "missing required key 'name'"),
    ({"name": "x", "includes": []}, "(root)", "unknown key 'includes'"),
    ({"name": ""}, "name", "must not be empty"),
    ({"name": "x" * 201}, "name", "longer than 200"),
    ({"name": "x", "include": {}}, "include", "expected an array of criteria"),
    (cohort({"condition": {}, "observation": {}}), "include[0]", "exactly one of"),
    (cohort({"labs": {}}), "include[0]", "unknown criterion 'labs'"),
    (cohort({"condition": {"codes": []}}), "include[0].condition.codes", "non-empty array"),
    (cohort({"condition": {"codes": ["a", 3]}}), "include[0].condition.codes[1]",
     "expected a 'system|code' string"),
    (cohort({"condition": {"codes": [f"{SCT}|"]}}), "include[0].condition.codes[0]",
     "empty code"),
    (_cond(codes=["I10"]), "include[0].condition", "either 'codes' or 'valueset'"),
    (cohort({"condition": {"window": {"end": "0d"}}}), "include[0].condition",
     "missing 'codes' or 'valueset'"),
    (cohort({"condition": {"valueset": "nope"}}), "include[0].condition.valueset",
     "unknown value set 'nope'"),
    (cohort({"condition": {"valueset": "DROP TABLE"}}), "include[0].condition.valueset",
     "expected a value set name"),
    (_obs(value=140), "include[0].observation.value",
     "expected an object with 'op' and 'value'"),
    (_obs(value={"op": "<"}), "include[0].observation.value",
     "expected an object with 'op' and 'value'"),
    (_obs(value={"op": "!=", "value": 1}), "include[0].observation.value.op",
     "expected one of '<'"),
    (_obs(value={"op": "<", "value": "8"}), "include[0].observation.value.value",
     "expected a number, got a string"),
    (_obs(value={"op": "<", "value": float("nan")}), "include[0].observation.value.value",
     "finite"),
    (_obs(value={"op": "<", "value": True}), "include[0].observation.value.value",
     "got a boolean"),
    (_obs(value={"op": "<", "value": 1, "units": "%"}), "include[0].observation.value",
     "unknown key 'units'"),
    (_cond(window={"start": "-1 year"}), "include[0].condition.window.start",
     "expected an offset like"),
    (_cond(window={"start": "0d", "end": "-1d"}), "include[0].condition.window",
     "start is after end"),
    (_cond(window={"start": "-1d", "to": "2024-01-01"}), "include[0].condition.window",
     "unknown key 'to'"),
    (_cond(window={"from": "2024-02-30"}), "include[0].condition.window.from",
     "not a calendar date"),
    (_cond(window={"from": "2024-03-01", "to": "2024-02-01"}), "include[0].condition.window",
     "'from' is after 'to'"),
    (_cond(window={}), "include[0].condition.window", "expected {'start'"),
    (_cond(window="last year"), "include[0].condition.window", "expected {'start'"),
    (_cond(min_count=0), "include[0].condition.min_count", "from 1 to 10000, got 0"),
    (_cond(min_count=True), "include[0].condition.min_count", "got a boolean"),
    (_cond(status="active"), "include[0].condition.status", "non-empty array of strings"),
    (_obs(last=True, min_count=2), "include[0].observation", "cannot be combined"),
    (_obs(last="yes"), "include[0].observation.last", "expected true or false"),
    (_obs(components=[{"valueset": "systolic-bp"}]), "include[0].observation.components[0]",
     "missing required key 'value'"),
    (_obs(components=[]), "include[0].observation.components", "1 to 10 components"),
    (_cond(value={"op": "<", "value": 1}), "include[0].condition", "unknown key 'value'"),
    (cohort({"encounter": {}}), "include[0].encounter", "at least one of"),
    (cohort({"demographics": {}}), "include[0].demographics", "at least one of"),
    (cohort({"demographics": {"gender": ["woman"]}}), "include[0].demographics.gender[0]",
     "expected one of 'male'"),
    (cohort({"demographics": {"age": {"min": 80, "max": 18}}}), "include[0].demographics.age",
     "'min' (80) is greater than 'max' (18)"),
    (cohort({"demographics": {"age": {"min": -1}}}), "include[0].demographics.age.min",
     "from 0 to 150"),
    (cohort({"any": []}), "include[0].any", "non-empty array of criteria"),
    (cohort(exclude=({"any": [_cond()["include"][0], {"observation": {"codes": ["x"],
                                                                      "value": {}}}]},)),
     "exclude[0].any[1].observation.value", "expected an object with 'op' and 'value'"),
    (cohort(index={"date": "2024-12-31", "first": {}}), "index",
     "exactly one of 'date' or 'first'"),
    (cohort(index={"date": "31/12/2024"}), "index.date", "expected a date YYYY-MM-DD"),
    (cohort(index={"first": {"demographics": {"alive": True}}}), "index.first",
     "expected one event criterion"),
    (cohort(index={"first": {"condition": {"valueset": "diabetes",
                                           "window": {"start": "-1y"}}}}),
     "index.first.condition.window", "the index event defines the index date"),
    (cohort(index={"first": {"condition": {"valueset": "diabetes", "min_count": 2}}}),
     "index.first.condition.min_count", "not allowed"),
]


@pytest.mark.parametrize(("definition", "path", "message"), BAD,
                         ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_schema_errors_name_the_path(definition: Any, path: str, message: str) -> None:
    with pytest.raises(CohortError) as caught:
        parse_cohort(definition)
    text = str(caught.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text


def test_error_paths_take_a_prefix() -> None:
    with pytest.raises(CohortError, match=r"^params\.cohort\.include\[0\]\.condition\.codes: "):
        parse_cohort(cohort({"condition": {"codes": []}}), "params.cohort")


def test_deeply_nested_junk_is_refused_without_recursion() -> None:
    junk: Any = "x"
    for _ in range(5000):
        junk = [junk]
    with pytest.raises(CohortError, match="nested deeper than"):
        parse_cohort({"name": "x", "include": junk})
    nested: dict[str, Any] = {"condition": {"valueset": "diabetes"}}
    for _ in range(30):
        nested = {"any": [nested]}
    with pytest.raises(CohortError, match=r"^include\[0\]\.any\[0\].*nested deeper than 24"):
        parse_cohort(cohort(nested))


def test_cyclic_and_oversized_input_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cyclic: dict[str, Any] = {"name": "x"}
    cyclic["include"] = [cyclic]
    with pytest.raises(CohortError, match="nested deeper"):
        parse_cohort(cyclic)
    monkeypatch.setattr(schema_module, "MAX_NODES", 50)
    with pytest.raises(CohortError, match=r"^\(root\): definition too large"):
        parse_cohort(cohort({"condition": {"codes": [str(i) for i in range(100)]}}))


def test_too_many_codes_is_refused() -> None:
    with pytest.raises(CohortError, match=r"include\[0\]\.condition\.codes: more than 100,000"):
        parse_cohort(cohort({"condition": {"codes": ["x"] * 100_001}}))


def test_json_schema_documents_the_same_vocabulary() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    defs = schema["$defs"]
    assert set(defs["criterion"]["properties"]) == set(schema_module.CRITERION_KINDS)
    common = set(defs["common"]["properties"])
    assert common == set(schema_module._COMMON)
    assert common | set(defs["observation"]["properties"]) == set(
        schema_module._KEYS["observation"])
    assert common | set(defs["encounter"]["properties"]) == set(schema_module._KEYS["encounter"])
    assert defs["threshold"]["properties"]["op"]["enum"] == list(schema_module.OPS)
    assert set(schema["properties"]) == {"name", "description", "index", "include", "exclude"}


# --- value sets ----------------------------------------------------------------------------------

def test_value_sets_are_qualified_sourced_and_cover_the_synthetic_codes() -> None:
    sets = value_sets()
    systems = {SCT, ICD, LOINC, RXNORM, CVX, "http://hl7.org/fhir/sid/icd-10"}
    for name, vs in sets.items():
        assert vs.title and len(vs.source) > 20, name
        assert len(set(vs.codes)) == len(vs.codes), name
        for code in vs.codes:
            system, _, bare = code.rpartition("|")
            assert system in systems and bare, (name, code)

    def covered(name: str, concept: dict[str, Any]) -> None:
        for coding in concept["coding"]:
            assert f"{coding['system']}|{coding['code']}" in sets[name].codes, (name, coding)

    covered("hypertension", synth_codes.CONDITION["hypertension"])
    covered("diabetes", synth_codes.CONDITION["diabetes"])
    covered("hba1c", synth_codes.OBS["a1c"])
    covered("systolic-bp", synth_codes.OBS["sbp"])
    covered("diastolic-bp", synth_codes.OBS["dbp"])
    covered("bp-panel", synth_codes.OBS["bp"])
    for drug in ("lisinopril", "amlodipine", "hctz"):
        covered("antihypertensives", synth_codes.MED[drug])
    for drug in ("metformin", "insulin"):
        covered("antidiabetics", synth_codes.MED[drug])
    for cvx in ("140", "141"):
        covered("influenza-vaccine", synth_codes.VACCINE[cvx])
    covered("mmr-vaccine", synth_codes.VACCINE["03"])


# --- compiled cohorts on the hand-made tables ----------------------------------------------------

def test_minimal_cohort_honours_consent_scope(world: Any) -> None:
    con, _ = world
    # p5 is outside the allowed patients; p6's only diagnosis is a denied record
    assert members(con, HTN) == {"p1", "p2", "p4"}


def test_value_set_bare_code_and_system(world: Any) -> None:
    con, _ = world
    assert members(con, cohort({"condition": {"valueset": "hypertension"}})) == {"p1", "p2", "p4"}
    assert members(con, cohort({"condition": {"codes": ["I10"]}})) == {"p2", "p7"}
    assert members(con, cohort({"condition": {"codes": ["urn:local|I10"]}})) == {"p7"}


def test_windows_min_count_and_record_dates(world: Any) -> None:
    con, _ = world
    last_year = cohort({"condition": {"valueset": "hypertension",
                                      "window": {"start": "-365d", "end": "0d"}}})
    assert members(con, last_year) == {"p2"}  # c3 has only a recorded date: still counts
    assert members(con, cohort({"condition": {"valueset": "hypertension", "min_count": 2}})) \
        == {"p2"}
    absolute = cohort({"condition": {"valueset": "hypertension",
                                     "window": {"from": "2000-01-01", "to": "2000-01-01"}}})
    assert members(con, absolute) == {"p4"}
    months = cohort({"condition": {"valueset": "hypertension",
                                   "window": {"start": "-10y", "end": "-7m"}}})
    assert members(con, months) == {"p1"}  # 2015-01-01 is within 2014-12-31 .. 2024-05-31


def test_refuted_and_error_records_never_count(world: Any) -> None:
    con, _ = world
    assert members(con, cohort({"condition": {"valueset": "diabetes"}})) == {"p1"}
    assert members(con, cohort({"observation": {"valueset": "hba1c"}})) == {"p1", "p2"}
    assert members(con, cohort({"medication": {"valueset": "antihypertensives"}})) == {"p1"}
    assert members(con, cohort({"immunization": {"valueset": "mmr-vaccine"}})) == {"p3", "p8"}
    assert members(con, cohort({"encounter": {"class": ["AMB", "IMP"]}})) == {"p1", "p2"}


def test_demographics_age_alive_gender_place(world: Any) -> None:
    con, _ = world
    adults = cohort({"demographics": {"age": {"min": 18, "max": 85}, "alive": True}})
    assert members(con, adults) == {"p1", "p2", "p6", "p7"}  # p4 died before the index
    assert members(con, cohort({"demographics": {"alive": False}})) == {"p4"}
    assert members(con, cohort({"demographics": {"gender": "female", "state": ["NY"]}})) == \
        {"p3", "p7"}
    at_2000 = cohort({"demographics": {"age": {"max": 10}}}, index={"date": "2000-06-01"})
    assert members(con, at_2000, index_date=None) == {"p2"}  # the unborn have no age
    two = cohort({"demographics": {"age": {"min": 2, "max": 2}}})
    assert members(con, two) == {"p8", "p9"}


def test_observation_value_last_and_components(world: Any) -> None:
    con, _ = world
    high = cohort({"observation": {"valueset": "hba1c", "value": {"op": ">=", "value": 9.0}}})
    assert members(con, high) == {"p2"}
    last_low = cohort({"observation": {"valueset": "hba1c", "last": True,
                                       "value": {"op": "<", "value": 8.0, "unit": "%"}}})
    assert members(con, last_low) == {"p1"}  # p2's last is 9.1
    other_unit = cohort({"observation": {"valueset": "hba1c",
                                         "value": {"op": "<", "value": 80, "unit": "mmol/mol"}}})
    assert members(con, other_unit) == set()
    controlled = cohort({"observation": {
        "valueset": "bp-panel", "last": True, "window": {"from": "2024-01-01"},
        "components": [{"valueset": "systolic-bp", "value": {"op": "<", "value": 140}},
                       {"valueset": "diastolic-bp", "value": {"op": "<", "value": 90}}]}})
    assert members(con, controlled) == {"p1", "p4", "p6"}
    ever_high = cohort({"observation": {"valueset": "systolic-bp",
                                        "value": {"op": ">=", "value": 140}}})
    assert members(con, ever_high) == {"p1", "p2"}
    smoker = cohort({"observation": {"codes": ["72166-2"], "value_codes": [f"{SCT}|449868002"]}})
    assert members(con, smoker) == {"p2"}


def test_denied_resource_does_not_qualify(world: Any) -> None:
    con, _ = world
    controlled = cohort({"observation": {
        "valueset": "bp-panel", "last": True,
        "components": [{"valueset": "systolic-bp", "value": {"op": "<", "value": 140}},
                       {"valueset": "diastolic-bp", "value": {"op": "<", "value": 90}}]}})
    assert "p1" in members(con, controlled)
    load_consent_scope(con, ALL, [*DENIED, "Observation/bp2"])  # p1's last BP is denied
    assert "p1" not in members(con, controlled)  # the 150/95 reading is now the last
    load_consent_scope(con, ALL, ["Patient/p2"])
    assert members(con, HTN) == {"p1", "p4", "p6"}  # p6's record is allowed again, p2 is not


def test_exclusion_any_and_flags(world: Any) -> None:
    con, _ = world
    no_asthma = cohort({"demographics": {"alive": True}},
                       exclude=({"condition": {"codes": ["195967001"]}},))
    assert members(con, no_asthma) == {"p1", "p2", "p6", "p7", "p8", "p9"}
    either = cohort({"any": [HTN["include"][0], {"condition": {"codes": ["195967001"]}}]})
    assert members(con, either) == {"p1", "p2", "p3", "p4"}
    # an exclusion that is unknown (null gender) does not exclude
    con.execute("UPDATE patient SET gender = NULL WHERE patient_id = 'p7'")
    not_male = cohort({"condition": {"codes": ["I10"]}},
                      exclude=({"demographics": {"gender": "male"}},))
    assert members(con, not_male) == {"p7"}
    compiled = compile_cohort(HTN, index_date=INDEX, flags={
        "treated": [{"medication": {"valueset": "antihypertensives"}}]})
    assert sorted((r[0], r[2]) for r in compiled.run(con)) == [
        ("p1", True), ("p2", False), ("p4", False)]


def test_index_on_first_event(world: Any) -> None:
    con, _ = world
    first = cohort({"observation": {"valueset": "hba1c", "window": {"start": "-60d",
                                                                     "end": "0d"}}},
                   index={"first": {"condition": {"valueset": "hypertension",
                                                  "window": {"from": "2024-01-01"}}}})
    rows = compile_cohort(first).run(con)
    assert rows == [("p2", date(2024, 6, 1))]
    everyone = cohort(index={"first": {"condition": {"valueset": "hypertension"}}})
    assert sorted(compile_cohort(everyone).run(con)) == [
        ("p1", date(2015, 1, 1)), ("p2", date(2024, 6, 1)), ("p4", date(2000, 1, 1))]
    with pytest.raises(CohortError, match="index date is set by an event"):
        compile_cohort(everyone, index_date=INDEX)


def test_period_window_needs_a_period(world: Any) -> None:
    con, _ = world
    in_period = cohort({"observation": {"valueset": "hba1c", "window": "period"}})
    with pytest.raises(CohortError, match="needs an analysis period"):
        compile_cohort(in_period, index_date=INDEX)
    assert members(con, in_period, period=(date(2023, 1, 1), date(2023, 12, 31))) == {"p2"}
    with pytest.raises(CohortError, match="needs an analysis period"):
        compile_cohort(HTN, index_date=INDEX, flags={"x": in_period["include"]})


def test_observation_values_count_a_double_coded_observation_once(world: Any) -> None:
    con, t = world
    t.observation("bp7", "p7", LOINC, "8480-6", "2024-07-01", 133, "mm[Hg]", component=True)
    t.observation("bp7", "p7", "urn:local", "SYS", "2024-07-01", 133, "mm[Hg]", component=True)
    t.flush()
    spec = {"codes": [f"{LOINC}|8480-6", "urn:local|SYS"], "window": {"start": "-1y"}}
    rows = compile_values(cohort({"demographics": {"gender": "female"}}), spec,
                          index_date=INDEX).run(con)
    assert sorted((r[0], r[2]) for r in rows) == [
        ("p1", 130.0), ("p1", 150.0), ("p7", 133.0)]
    latest = compile_values({"name": "all"}, spec, index_date=INDEX, per_patient=1,
                            unit="mm[Hg]").run(con)
    assert sorted((r[0], r[2]) for r in latest) == [
        ("p1", 130.0), ("p2", 145.0), ("p4", 120.0), ("p6", 118.0), ("p7", 133.0)]


def test_index_date_defaults(world: Any) -> None:
    con, _ = world
    fixed = cohort({"demographics": {"age": {"min": 1, "max": 1}}}, index={"date": "2023-06-01"})
    assert {r[0] for r in compile_cohort(fixed).run(con)} == {"p8", "p9"}
    assert {r[0] for r in compile_cohort(fixed, index_date="2024-12-31").run(con)} == set()
    rows = compile_cohort({"name": "all"}).run(con)
    assert {r[1] for r in rows} == {date.today()}
    with pytest.raises(CohortError, match="index_date"):
        compile_cohort({"name": "all"}, index_date="yesterday")


# --- hostile input -------------------------------------------------------------------------------

HOSTILE = ["38341003' OR '1'='1", "'; DROP TABLE patient; --", "x\") OR 1=1 --",
           f"{SCT}|38341003' --", "$p0", "?", "I10\x00",
           "' UNION SELECT patient_id FROM patient --"]


def test_sql_in_codes_is_bound_and_matches_nothing(world: Any) -> None:
    con, _ = world
    hostile = cohort({"condition": {"codes": HOSTILE}},
                     exclude=({"observation": {
                         "codes": HOSTILE, "value": {"op": "=", "value": 1, "unit": "'; --"}}},))
    compiled = compile_cohort(hostile, index_date=INDEX)
    for text in HOSTILE:
        assert text in ("$p0", "?") or text not in compiled.sql
    assert compiled.run(con) == []
    assert con.execute("SELECT count(*) FROM patient").fetchone() == (9,)


def test_table_names_are_checked() -> None:
    for name in ("allowed; DROP TABLE patient", "a b", '"x"', "", "1abc"):
        with pytest.raises(CohortError, match="invalid table name"):
            compile_cohort(HTN, allowed=name)
        with pytest.raises(CohortError, match="invalid table name"):
            load_consent_scope(duckdb.connect(), [], denied=name)


def test_huge_code_list_compiles_and_matches(world: Any) -> None:
    con, _ = world
    codes = [f"{SCT}|{i}" for i in range(99_999)] + [f"{ICD}|I10"]
    started = time.perf_counter()
    assert members(con, cohort({"condition": {"codes": codes}})) == {"p2"}
    assert time.perf_counter() - started < 5


# --- the consent scope ---------------------------------------------------------------------------

def test_load_consent_scope_replaces_dedupes_and_is_fast() -> None:
    con = duckdb.connect()
    load_consent_scope(con, ["a", "b", "a", None], ["Condition/1"])  # type: ignore[list-item]
    assert con.execute("SELECT patient_id FROM allowed_patient ORDER BY 1").fetchall() == [
        ("a",), ("b",)]
    load_consent_scope(con, [], [])
    assert con.execute("SELECT count(*) FROM allowed_patient").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM denied_resource").fetchone() == (0,)
    ids = [f"patient-{i:06d}" for i in range(100_000)]
    started = time.perf_counter()
    load_consent_scope(con, ids, [f"Observation/{i}" for i in range(100_000)],
                       allowed="scope_a", denied="scope_d")
    assert time.perf_counter() - started < 3
    assert con.execute("SELECT count(*) FROM scope_a").fetchone() == (100_000,)
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO scope_a VALUES ('patient-000001')")


# --- property: compiled SQL equals a pure-Python evaluation --------------------------------------

PIDS = ["q1", "q2", "q3", "q4", "q5", "q6"]
DAY0 = date(2020, 1, 1)
CODES = [("s1", "A"), ("s1", "B"), ("s2", "A"), ("s2", "C")]
_day = st.integers(0, 1500).map(lambda n: DAY0 + timedelta(days=n))

patients = st.lists(st.tuples(st.sampled_from(["male", "female", None]),
                              st.integers(0, 100).map(lambda n: date(1930 + n, 6, 15))),
                    min_size=len(PIDS), max_size=len(PIDS))
conditions = st.lists(st.tuples(st.sampled_from(PIDS), st.sampled_from(CODES),
                                st.one_of(st.none(), _day), st.booleans()), max_size=20)
observations = st.lists(st.tuples(st.sampled_from(PIDS), st.sampled_from(["X", "Y"]), _day,
                                  st.one_of(st.none(), st.integers(0, 10))), max_size=20)


@st.composite
def criteria(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["condition", "observation", "observation", "demographics"]))
    if kind == "demographics":
        body: dict[str, Any] = {}
        if draw(st.booleans()):
            body["gender"] = draw(st.sampled_from(["male", "female"]))
        lo = draw(st.integers(0, 90))
        body["age"] = {"min": lo, "max": min(150, lo + draw(st.integers(0, 80)))}
        return {"demographics": body}
    if kind == "condition":
        picked = draw(st.lists(st.sampled_from(["s1|A", "s1|B", "s2|A", "s2|C", "A", "C"]),
                               min_size=1, max_size=3))
        body = {"codes": picked}
    else:
        body = {"codes": draw(st.lists(st.sampled_from(["X", "Y"]), min_size=1, max_size=2))}
        if draw(st.booleans()):
            body["value"] = {"op": draw(st.sampled_from(["<", "<=", ">", ">=", "="])),
                             "value": draw(st.integers(0, 10))}
        if draw(st.booleans()):
            body["last"] = True
    window = draw(st.sampled_from(["none", "none", "absolute", "relative"]))
    if window == "absolute":
        lo = draw(_day)
        body["window"] = {"from": lo.isoformat(),
                          "to": (lo + timedelta(days=draw(st.integers(0, 800)))).isoformat()}
    elif window == "relative":
        start = draw(st.integers(-1500, 0))
        body["window"] = {"start": f"{start}d", "end": f"{start + draw(st.integers(0, 900))}d"}
    if not body.get("last") and draw(st.booleans()):
        body["min_count"] = draw(st.integers(1, 3))
    return {kind: body}


def py_members(world: dict[str, Any], definition: dict[str, Any], index: date) -> set[str]:
    """An independent evaluation of the cohort semantics over the generated rows."""
    scope = [p for p in world["patients"] if p["id"] in world["allowed"]]

    def holds(pid: str, criterion: dict[str, Any]) -> bool:
        ((kind, body),) = criterion.items()
        if kind == "demographics":
            return demographic(next(p for p in scope if p["id"] == pid), body)
        rows = [r for r in world[kind] if r["pid"] == pid and r["rid"] not in world["denied"]]
        rows = [r for r in rows if code_ok(r, body["codes"]) and in_window(r["day"], body)]
        if kind == "observation" and "value" in body:
            if body.get("last"):
                rows = [r for r in rows if r["value"] is not None]
            else:
                rows = [r for r in rows if r["value"] is not None and cmp(r["value"], body)]
        if body.get("last"):
            if not rows:
                return False
            last = max(rows, key=lambda r: (r["day"], r["rid"]))
            return "value" not in body or cmp(last["value"], body)
        return len({r["rid"] for r in rows}) >= body.get("min_count", 1)

    def in_window(day: date | None, body: dict[str, Any]) -> bool:
        window = body.get("window")
        if window is None:
            return True
        if day is None:
            return False
        if "from" in window:
            return date.fromisoformat(window["from"]) <= day <= date.fromisoformat(window["to"])
        return (index + timedelta(days=int(window["start"][:-1])) <= day
                <= index + timedelta(days=int(window["end"][:-1])))

    def demographic(p: dict[str, Any], body: dict[str, Any]) -> bool:
        birth = p["birth"]
        age = index.year - birth.year - ((index.month, index.day) < (birth.month, birth.day))
        gender_ok = "gender" not in body or p["gender"] == body["gender"]
        return gender_ok and body["age"]["min"] <= age <= body["age"]["max"]

    out = set()
    for p in scope:
        ok = all(holds(p["id"], c) for c in definition["include"])
        if ok and not any(holds(p["id"], c) for c in definition["exclude"]):
            out.add(p["id"])
    return out


def code_ok(row: dict[str, Any], wanted: list[str]) -> bool:
    for text in wanted:
        system, _, code = text.rpartition("|")
        if row["code"] == code and (not system or row["system"] == system):
            return True
    return False


def cmp(value: float, body: dict[str, Any]) -> bool:
    op, limit = body["value"]["op"], body["value"]["value"]
    return {"<": value < limit, "<=": value <= limit, ">": value > limit, ">=": value >= limit,
            "=": value == limit}[op]


_PROPERTY_CON = duckdb.connect()
create_analytic_tables(_PROPERTY_CON)


_SIX = [("male", date(1950, 6, 15))] * 6
_LAST = {"observation": {"codes": ["X"], "last": True, "value": {"op": "<", "value": 5}}}
_EDGE = {"observation": {"codes": ["s9|X", "X"], "window": {"start": "-10d", "end": "-10d"},
                         "min_count": 2}}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@example(patients=_SIX, conditions=[], observations=[("q1", "X", DAY0, 1),
                                                     ("q1", "X", DAY0 + timedelta(1), 9)],
         allowed=set(PIDS), denied_mask=(0, 0), include=[_LAST], exclude=[], index_offset=9)
@example(patients=_SIX, conditions=[], observations=[("q1", "X", DAY0, 1), ("q1", "X", DAY0, 2),
                                                     ("q2", "X", DAY0, 1)],
         allowed=set(PIDS), denied_mask=(0, 0), include=[_EDGE], exclude=[], index_offset=10)
@given(patients=patients, conditions=conditions, observations=observations,
       allowed=st.sets(st.sampled_from(PIDS), min_size=3),
       denied_mask=st.tuples(st.integers(0, 2 ** 28 - 1), st.integers(0, 2 ** 28 - 1)),
       include=st.lists(criteria(), max_size=2), exclude=st.lists(criteria(), max_size=1),
       index_offset=st.integers(0, 1600))
def test_compiled_count_equals_python_count(patients: Any, conditions: Any, observations: Any,
                                            allowed: set[str], denied_mask: tuple[int, int],
                                            include: Any, exclude: Any,
                                            index_offset: int) -> None:
    con = _PROPERTY_CON
    for table in ("patient", "condition", "observation"):
        con.execute(f"DELETE FROM {table}")
    t = Tables(con)
    world: dict[str, Any] = {"patients": [], "condition": [], "observation": [],
                             "allowed": allowed, "denied": set()}
    for pid, (gender, birth) in zip(PIDS, patients, strict=True):
        t.patient(pid, gender, birth.isoformat())
        world["patients"].append({"id": pid, "gender": gender, "birth": birth})
    bit, mask = 0, denied_mask[0] & denied_mask[1]  # about a quarter of the records
    for i, (pid, (system, code), day, refuted) in enumerate(conditions):
        rid = f"c{i}"
        t.condition(rid, pid, system, code, day.isoformat() if day else None,
                    verification="refuted" if refuted and i % 3 == 0 else "confirmed")
        if not (refuted and i % 3 == 0):
            world["condition"].append({"rid": f"Condition/{rid}", "pid": pid, "system": system,
                                       "code": code, "day": day, "value": None})
    for i, (pid, code, day, value) in enumerate(observations):
        t.observation(f"o{i}", pid, "urn:x", code, day.isoformat(), value)
        world["observation"].append({"rid": f"Observation/o{i}", "pid": pid, "system": "urn:x",
                                     "code": code, "day": day, "value": value})
    t.flush()
    for rows in (world["condition"], world["observation"]):
        for row in rows:
            if mask >> (bit % 28) & 1:
                world["denied"].add(row["rid"])
            bit += 1
    load_consent_scope(con, sorted(allowed), sorted(world["denied"]))
    index = DAY0 + timedelta(days=index_offset)
    definition = {"name": "random", "include": include, "exclude": exclude}
    got = {r[0] for r in compile_cohort(definition, index_date=index).run(con)}
    expected = py_members(world, definition, index)
    assert got == expected, json.dumps(definition)


def test_everyone_scope_is_the_same_as_listing_every_patient() -> None:
    con = duckdb.connect()
    try:
        create_analytic_tables(con)
        build_world(con)
        every = [r[0] for r in con.execute("SELECT patient_id FROM patient").fetchall()]
        htn = cohort({"condition": {"valueset": "hypertension"}})
        load_consent_scope(con, every, DENIED)
        listed = members(con, htn)
        load_consent_scope(con, [], DENIED, everyone=True)
        assert members(con, htn) == listed and listed
        load_consent_scope(con, every[:1], DENIED)  # and back to an explicit list
        assert members(con, htn) <= set(every[:1])
    finally:
        con.close()
