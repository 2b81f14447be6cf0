"""FHIR search semantics over a small hand-built store (expected matches worked out by hand)."""

from __future__ import annotations

from typing import Any

import pytest

from healthmesh.errors import InvalidRequest
from healthmesh.fhir.service import FhirService
from healthmesh.node import Node

LOINC = "http://loinc.org"


def patient(pid: str, family: str, given: str, birth: str, gender: str, zip_: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth,
            "name": [{"family": family, "given": [given]}],
            "address": [{"postalCode": zip_, "city": "Springfield"}],
            "identifier": [{"system": "urn:mrn", "value": pid.upper()}]}


def bp(oid: str, pid: str, when: Any, systolic: float | None = None) -> dict:
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                  "observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "8480-6"}], "text": "Systolic BP"},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if isinstance(when, dict):
        res["effectivePeriod"] = when
    else:
        res["effectiveDateTime"] = when
    if systolic is not None:
        res["valueQuantity"] = {"value": systolic, "unit": "mmHg",
                                "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    return res


@pytest.fixture
def fhir(make_node: Any) -> FhirService:
    node: Node = make_node()
    node.store.put_many([
        patient("ann", "Müller", "Ann", "1950-06-15", "female", "12345"),
        patient("bob", "Muller", "Bob", "1985", "male", "12399"),
        patient("cy", "Smith-Jones", "Cy", "2001-01-01", "other", "99999"),
        bp("o1", "ann", "2024-01-10T08:30:00Z", 150),
        bp("o2", "ann", "2024-02-10", 135.5),
        bp("o3", "bob", "2023-12-31T23:00:00-02:00", 120),  # = 2024-01-01T01:00Z
        bp("o4", "bob", {"start": "2024-03-01", "end": "2024-03-05"}, None),
        bp("o5", "cy", "2024", 141),
        {"resourceType": "Provenance", "id": "prov1", "recorded": "2024-01-10T09:00:00Z",
         "target": [{"reference": "Observation/o1"}],
         "agent": [{"who": {"reference": "Patient/ann"}}]},
    ])
    return node.fhir


def find(fhir: FhirService, rtype: str, *params: tuple[str, str]) -> list[str]:
    query = fhir.parse(rtype, [*params, ("_count", "100")], strict=True)
    return sorted(s.id for s in fhir.search(query).matches)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("date", "2024-01")], ["o1", "o3"]),
        ([("date", "2024-01-10")], ["o1"]),
        ([("date", "2024")], ["o1", "o2", "o3", "o4", "o5"]),
        ([("date", "ge2024-02-01")], ["o2", "o4", "o5"]),
        ([("date", "gt2024-02-10")], ["o4", "o5"]),
        ([("date", "lt2024-01-10")], ["o3", "o5"]),
        ([("date", "le2024-01-10")], ["o1", "o3", "o5"]),
        ([("date", "sa2024-02-28")], ["o4"]),
        ([("date", "eb2024-02-01")], ["o1", "o3"]),
        ([("date", "ne2024")], []),
        ([("date", "2024-03-03")], []),  # the period is not inside that day
        ([("date", "ge2024-03-03"), ("date", "le2024-03-03")], ["o4", "o5"]),
        ([("date", "2023-12-31T23:00:00-02:00")], ["o3"]),
        ([("date", "2024-01-01T01:00:00Z")], ["o3"]),
        # ap widens by 10% of the distance from today (at least a day): months here
        ([("date", "ap2024-01-10")], ["o1", "o2", "o3", "o4", "o5"]),
        ([("date", "ap2019-06-01")], []),
    ],
)
def test_date_prefixes_and_precision(fhir: FhirService, params: list, expected: list) -> None:
    assert find(fhir, "Observation", *params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("code", "8480-6")], ["o1", "o2", "o3", "o4", "o5"]),
        ([("code", f"{LOINC}|8480-6")], ["o1", "o2", "o3", "o4", "o5"]),
        ([("code", "http://snomed.info/sct|8480-6")], []),
        ([("code", "|8480-6")], []),
        ([("code", f"{LOINC}|")], ["o1", "o2", "o3", "o4", "o5"]),
        ([("code:text", "systolic")], ["o1", "o2", "o3", "o4", "o5"]),
        ([("code:not", "8480-6")], []),
        ([("value-quantity", "150")], ["o1"]),
        ([("value-quantity", "135.5")], ["o2"]),
        ([("value-quantity", "135")], []),
        ([("value-quantity", "1.4e2")], ["o2", "o5"]),  # precision: 135 <= x < 145
        ([("value-quantity", "gt140")], ["o1", "o5"]),
        ([("value-quantity", "le135.5|http://unitsofmeasure.org|mm[Hg]")], ["o2", "o3"]),
        ([("value-quantity", "gt100||mmHg")], ["o1", "o2", "o3", "o5"]),
        ([("value-quantity", "ap150")], ["o1", "o2", "o5"]),  # 135..165
        ([("value-quantity:missing", "true")], ["o4"]),
        ([("value-quantity:missing", "false")], ["o1", "o2", "o3", "o5"]),
        ([("subject", "Patient/ann")], ["o1", "o2"]),
        ([("patient", "bob")], ["o3", "o4"]),
        ([("subject:Patient", "cy")], ["o5"]),
        ([("patient", "ann,cy")], ["o1", "o2", "o5"]),
        ([("patient", "ann"), ("date", "2024-02")], ["o2"]),
        ([("_id", "o1,o4")], ["o1", "o4"]),
        ([("category", "vital-signs"), ("status", "final")], ["o1", "o2", "o3", "o4", "o5"]),
    ],
)
def test_observation_tokens_quantities_references(
    fhir: FhirService, params: list, expected: list
) -> None:
    assert find(fhir, "Observation", *params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("family", "muller")], ["ann", "bob"]),  # accents and case ignored
        ([("family", "MÜL")], ["ann", "bob"]),
        ([("family:exact", "Müller")], ["ann"]),
        ([("family:exact", "muller")], []),
        ([("family:contains", "jones")], ["cy"]),
        ([("name", "bob")], ["bob"]),
        ([("given", "an")], ["ann"]),
        ([("birthdate", "1985")], ["bob"]),
        ([("birthdate", "1985-05")], []),  # the range of 1985 is not inside May 1985
        ([("birthdate", "lt1960")], ["ann"]),
        ([("birthdate", "ge1985-03-01")], ["bob", "cy"]),
        ([("gender", "female,other")], ["ann", "cy"]),
        ([("address-postalcode", "123")], ["ann", "bob"]),
        ([("identifier", "urn:mrn|BOB")], ["bob"]),
        ([("identifier", "BOB")], ["bob"]),
        ([("identifier", "bob")], []),  # tokens are case-sensitive for identifiers
        ([("family", "muller"), ("gender", "male")], ["bob"]),
        ([("family", "x\\,y")], []),
    ],
)
def test_patient_strings_dates_tokens(fhir: FhirService, params: list, expected: list) -> None:
    assert find(fhir, "Patient", *params) == expected


def test_last_updated(fhir: FhirService) -> None:
    assert len(find(fhir, "Patient", ("_lastUpdated", "gt2020-01-01"))) == 3
    assert find(fhir, "Patient", ("_lastUpdated", "lt2020-01-01")) == []


def test_sort_total_and_elements(fhir: FhirService) -> None:
    query = fhir.parse("Observation", [("_sort", "-date"), ("_total", "accurate"),
                                       ("_count", "2")])
    page = fhir.search(query)
    assert page.total == 5
    assert [s.id for s in page.matches] == ["o5", "o4"]  # latest end first
    rest = fhir.search(query, page.next_cursor)
    assert [s.id for s in rest.matches] == ["o2", "o1"]
    by_birth = fhir.parse("Patient", [("_sort", "birthdate")])
    assert [s.id for s in fhir.search(by_birth).matches] == ["ann", "bob", "cy"]


def test_summary_count(fhir: FhirService) -> None:
    page = fhir.search(fhir.parse("Observation", [("patient", "ann"), ("_summary", "count")]))
    assert page.total == 2 and page.matches == []


def test_include_and_revinclude(fhir: FhirService) -> None:
    query = fhir.parse("Observation", [("_id", "o1"), ("_include", "Observation:subject"),
                                       ("_revinclude", "Provenance:target")])
    page = fhir.search(query)
    assert [s.id for s in page.matches] == ["o1"]
    assert sorted(f"{s.type}/{s.id}" for s in page.included) == ["Patient/ann",
                                                                 "Provenance/prov1"]
    typed = fhir.parse("Observation", [("_id", "o1"), ("_include", "Observation:subject:Group")])
    assert fhir.search(typed).included == []


@pytest.mark.parametrize(
    "params",
    [
        [("date", "2024-13")],
        [("date", "xx2024")],
        [("value-quantity", "abc")],
        [("subject", "Patient/has spaces")],
        [("_include", "Observation:code")],
        [("_include", "Nope:subject")],
        [("code:missing", "maybe")],
        [("_total", "always")],
        [("_summary", "yes")],
    ],
)
def test_invalid_search_values_are_errors(fhir: FhirService, params: list) -> None:
    with pytest.raises(InvalidRequest):
        fhir.parse("Observation", params, strict=True)


def test_unsupported_modifier_is_ignored_with_warning_when_lenient(fhir: FhirService) -> None:
    query = fhir.parse("Observation", [("code:in", "http://x/vs")])
    assert query.criteria == [] and query.warnings
    with pytest.raises(InvalidRequest):
        fhir.parse("Observation", [("code:in", "http://x/vs")], strict=True)
