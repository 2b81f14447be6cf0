"""Tests for search parameter definitions and search-index extraction.

Hand-written resources with hand-written expected rows per parameter, the date and string
normalisation rules, every official R4 example, and the Patient compartment on Synthea.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthmesh.fhir.search_params import (
    DATA_FILE,
    DATE_MAX,
    DATE_MIN,
    IndexRows,
    date_range,
    extract_index,
    normalise_string,
    patient_compartment,
    patient_compartment_params,
    patient_compartments,
    search_params,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
US = 1_000_000


@pytest.fixture(scope="module")
def shared() -> Path:
    if not (SHARED / "fhir-r4" / "examples").is_dir():
        pytest.fail(f"reference data not found at {SHARED}: check out shared/ beside the repo")
    return SHARED


def at(text: str) -> int:
    """Epoch microseconds of an ISO timestamp (with offset)."""
    return int(datetime.fromisoformat(text).timestamp()) * US


def rows_of(rows: IndexRows, table: str, param: str) -> list[tuple[Any, ...]]:
    """Rows of one parameter in one table, without the parameter column."""
    return [r[1:] for r in getattr(rows, table) if r[0] == param]


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def concept(system: str, code: str, display: str | None = None, text: str | None = None):
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


# --------------------------------------------------------------------------- Patient


PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"lastUpdated": "2024-05-01T10:00:00.123Z", "tag": [{"system": "s", "code": "t"}]},
    "identifier": [
        {"system": "http://hospital.example/mrn", "value": "MRN-1"},
        {"value": "no-system"},
    ],
    "name": [
        {
            "family": "Müller",
            "given": ["Ève", "Anne  Marie"],
            "prefix": ["Dr."],
            "text": "Dr. Ève Müller",
        }
    ],
    "telecom": [
        {"system": "phone", "value": "+1 555 0100", "use": "home"},
        {"system": "email", "value": "eve@example.org"},
    ],
    "gender": "female",
    "birthDate": "1980-02-29",
    "address": [
        {
            "line": ["1 Main St", "Flat 2"],
            "city": "Springfield",
            "state": "IL",
            "postalCode": "62701",
            "country": "US",
        }
    ],
}


def test_patient_name_family_given() -> None:
    rows = extract_index(PATIENT)
    assert rows_of(rows, "strings", "family") == [("muller", "Müller")]
    assert rows_of(rows, "strings", "given") == [("eve", "Ève"), ("anne marie", "Anne  Marie")]
    assert set(rows_of(rows, "strings", "name")) == {
        ("muller", "Müller"),
        ("eve", "Ève"),
        ("anne marie", "Anne  Marie"),
        ("dr.", "Dr."),
        ("dr. eve muller", "Dr. Ève Müller"),
    }


def test_patient_birthdate_gender_identifier() -> None:
    rows = extract_index(PATIENT)
    assert rows_of(rows, "dates", "birthdate") == [
        (at("1980-02-29T00:00:00+00:00"), at("1980-03-01T00:00:00+00:00"))
    ]
    assert rows_of(rows, "tokens", "gender") == [(None, "female")]
    assert rows_of(rows, "tokens", "identifier") == [
        ("http://hospital.example/mrn", "MRN-1"),
        (None, "no-system"),
    ]
    assert rows_of(rows, "tokens", "deceased") == [(None, "false")]


def test_patient_address_and_telecom() -> None:
    rows = extract_index(PATIENT)
    assert rows_of(rows, "strings", "address-postalcode") == [("62701", "62701")]
    assert rows_of(rows, "strings", "address-city") == [("springfield", "Springfield")]
    assert ("flat 2", "Flat 2") in rows_of(rows, "strings", "address")
    assert rows_of(rows, "tokens", "phone") == [(None, "+1 555 0100")]
    assert rows_of(rows, "tokens", "email") == [(None, "eve@example.org")]
    assert rows_of(rows, "tokens", "telecom") == [(None, "+1 555 0100"), (None, "eve@example.org")]


def test_resource_level_params() -> None:
    rows = extract_index(PATIENT)
    lo = at("2024-05-01T10:00:00+00:00") + 123_000
    assert rows_of(rows, "dates", "_lastUpdated") == [(lo, lo + 1000)]
    assert rows_of(rows, "tokens", "_tag") == [("s", "t")]
    assert not rows_of(rows, "tokens", "_id")  # the store indexes _id itself


def test_patient_deceased() -> None:
    dead = {**PATIENT, "deceasedDateTime": "2020-01-01"}
    assert rows_of(extract_index(dead), "tokens", "deceased") == [(None, "true")]
    assert rows_of(extract_index(dead), "dates", "death-date")[0][0] == at("2020-01-01T00:00+00:00")
    alive = {**PATIENT, "deceasedBoolean": False}
    assert rows_of(extract_index(alive), "tokens", "deceased") == [(None, "false")]


def test_patient_compartment_of_patient_is_itself() -> None:
    assert patient_compartment(PATIENT) == "p1"
    assert patient_compartments(PATIENT) == ("p1",)


# --------------------------------------------------------------------------- Observation


OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [
        concept(
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "vital-signs",
            "Vital Signs",
        )
    ],
    "code": concept(LOINC, "29463-7", "Body Weight", text="Body weight"),
    "subject": ref("Patient/p1/_history/3"),
    "encounter": ref("Encounter/e1"),
    "effectiveDateTime": "2021-03-04T05:06:07+02:00",
    "valueQuantity": {"value": 72.5, "unit": "kg", "system": UCUM, "code": "kg"},
}


def test_observation_code_category_status() -> None:
    rows = extract_index(OBSERVATION)
    assert rows_of(rows, "tokens", "code") == [(LOINC, "29463-7")]
    assert rows_of(rows, "token_texts", "code") == [("body weight",)]  # display == text: once
    assert rows_of(rows, "tokens", "category") == [
        ("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")
    ]
    assert rows_of(rows, "token_texts", "category") == [("vital signs",)]
    assert rows_of(rows, "tokens", "status") == [(None, "final")]


def test_observation_date_effective_datetime_and_period() -> None:
    lo = at("2021-03-04T03:06:07+00:00")
    assert rows_of(extract_index(OBSERVATION), "dates", "date") == [(lo, lo + US)]
    period = {**OBSERVATION, "effectivePeriod": {"start": "2021-03-04", "end": "2021-03"}}
    del period["effectiveDateTime"]
    assert rows_of(extract_index(period), "dates", "date") == [
        (at("2021-03-04T00:00+00:00"), at("2021-04-01T00:00+00:00"))
    ]
    open_end = {**period, "effectivePeriod": {"start": "2021-03-04T10:00:00Z"}}
    assert rows_of(extract_index(open_end), "dates", "date") == [
        (at("2021-03-04T10:00+00:00"), DATE_MAX)
    ]
    open_start = {**period, "effectivePeriod": {"end": "2021"}}
    assert rows_of(extract_index(open_start), "dates", "date") == [
        (DATE_MIN, at("2022-01-01T00:00+00:00"))
    ]


def test_observation_value_quantity() -> None:
    rows = extract_index(OBSERVATION)
    assert rows_of(rows, "quantities", "value-quantity") == [(72.5, UCUM, "kg", "kg")]
    assert rows_of(rows, "quantities", "combo-value-quantity") == [(72.5, UCUM, "kg", "kg")]


def test_observation_subject_and_patient() -> None:
    rows = extract_index(OBSERVATION)
    expected = [("Patient", "p1", "Patient/p1/_history/3")]
    assert rows_of(rows, "references", "subject") == expected
    assert rows_of(rows, "references", "patient") == expected
    assert rows_of(rows, "references", "encounter") == [("Encounter", "e1", "Encounter/e1")]
    assert patient_compartment(OBSERVATION) == "p1"


def test_observation_group_subject_is_not_a_patient() -> None:
    rows = extract_index({**OBSERVATION, "subject": ref("Group/g1")})
    assert rows_of(rows, "references", "subject") == [("Group", "g1", "Group/g1")]
    assert rows_of(rows, "references", "patient") == []
    assert patient_compartment({**OBSERVATION, "subject": ref("Group/g1")}) is None


def test_observation_absolute_urn_and_identifier_references() -> None:
    absolute = extract_index({**OBSERVATION, "subject": ref("https://x.org/fhir/Patient/p9")})
    assert rows_of(absolute, "references", "patient") == [
        ("Patient", "p9", "https://x.org/fhir/Patient/p9")
    ]
    urn = "urn:uuid:0b3a3e3c-6a3c-4b1a-9f4e-5a0e3e3c6a3c"
    rows = extract_index({**OBSERVATION, "subject": ref(urn)})
    assert rows_of(rows, "references", "subject") == [(None, None, urn)]
    assert rows_of(rows, "references", "patient") == []
    assert patient_compartment({**OBSERVATION, "subject": ref(urn)}) is None
    by_id = {"identifier": {"system": "urn:mrn", "value": "42"}}
    rows = extract_index({**OBSERVATION, "subject": by_id})
    assert rows_of(rows, "references", "subject") == []
    assert rows_of(rows, "tokens", "subject:identifier") == [("urn:mrn", "42")]
    both = extract_index({**OBSERVATION, "subject": {**ref("Patient/p1"), **by_id}})
    assert rows_of(both, "references", "subject") == [("Patient", "p1", "Patient/p1")]
    assert rows_of(both, "tokens", "patient:identifier") == [("urn:mrn", "42")]
    typed = extract_index({**OBSERVATION, "subject": {**ref(urn), "type": "Patient"}})
    assert rows_of(typed, "references", "patient") == [("Patient", None, urn)]


def test_observation_combo_code_with_components() -> None:
    bp = {
        "resourceType": "Observation",
        "status": "final",
        "code": concept(LOINC, "85354-9"),
        "component": [
            {
                "code": concept(LOINC, "8480-6"),
                "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"},
            },
            {
                "code": concept(LOINC, "8462-4"),
                "valueQuantity": {"value": 80, "system": UCUM, "code": "mm[Hg]"},
            },
        ],
    }
    rows = extract_index(bp)
    assert rows_of(rows, "tokens", "code") == [(LOINC, "85354-9")]
    assert rows_of(rows, "tokens", "combo-code") == [
        (LOINC, "85354-9"),
        (LOINC, "8480-6"),
        (LOINC, "8462-4"),
    ]
    assert rows_of(rows, "tokens", "component-code") == [(LOINC, "8480-6"), (LOINC, "8462-4")]
    assert rows_of(rows, "quantities", "component-value-quantity") == [
        (120.0, UCUM, "mm[Hg]", None),
        (80.0, UCUM, "mm[Hg]", None),
    ]
    assert rows_of(rows, "quantities", "value-quantity") == []


def test_duplicate_rows_are_removed() -> None:
    twice = {**OBSERVATION, "category": OBSERVATION["category"] * 2}
    rows = extract_index(twice)
    assert len(rows_of(rows, "tokens", "category")) == 1
    for table in IndexRows.__slots__:
        values = getattr(rows, table)
        assert len(values) == len(set(values))


# --------------------------------------------------------------------------- clinical


def test_condition_onset_code_clinical_status() -> None:
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
        ),
        "code": concept(SNOMED, "44054006", "Diabetes mellitus type 2"),
        "subject": ref("Patient/p1"),
        "onsetDateTime": "2019-07",
        "onsetString": "ignored",  # not a date: only onset.as(dateTime) and as(Period)
    }
    rows = extract_index(condition)
    assert rows_of(rows, "dates", "onset-date") == [
        (at("2019-07-01T00:00+00:00"), at("2019-08-01T00:00+00:00"))
    ]
    assert rows_of(rows, "tokens", "code") == [(SNOMED, "44054006")]
    assert rows_of(rows, "token_texts", "code") == [("diabetes mellitus type 2",)]
    assert rows_of(rows, "tokens", "clinical-status") == [
        ("http://terminology.hl7.org/CodeSystem/condition-clinical", "active")
    ]
    assert rows_of(rows, "strings", "onset-info") == [("ignored", "ignored")]
    assert patient_compartment(condition) == "p1"


def test_encounter_date_class_type() -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory",
        },
        "type": [concept(SNOMED, "185349003", "Encounter for check up")],
        "subject": ref("Patient/p1"),
        "period": {"start": "2020-01-01T09:00:00-05:00", "end": "2020-01-01T09:30:00-05:00"},
    }
    rows = extract_index(encounter)
    assert rows_of(rows, "dates", "date") == [
        (at("2020-01-01T14:00:00+00:00"), at("2020-01-01T14:30:01+00:00"))
    ]
    assert rows_of(rows, "tokens", "class") == [
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB")
    ]
    assert rows_of(rows, "token_texts", "class") == [("ambulatory",)]
    assert rows_of(rows, "tokens", "type") == [(SNOMED, "185349003")]
    assert rows_of(rows, "references", "patient") == [("Patient", "p1", "Patient/p1")]
    assert patient_compartment(encounter) == "p1"


def test_medication_request_code_and_authoredon() -> None:
    request = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": concept(
            "http://www.nlm.nih.gov/research/umls/rxnorm", "860975"
        ),
        "subject": ref("Patient/p1"),
        "authoredOn": "2018-11-05T08:00:00Z",
    }
    rows = extract_index(request)
    assert rows_of(rows, "tokens", "code") == [
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "860975")
    ]
    assert rows_of(rows, "references", "medication") == []
    lo = at("2018-11-05T08:00:00+00:00")
    assert rows_of(rows, "dates", "authoredon") == [(lo, lo + US)]
    assert patient_compartment(request) == "p1"
    by_ref = {**request, "medicationReference": ref("Medication/m1")}
    del by_ref["medicationCodeableConcept"]
    rows = extract_index(by_ref)
    assert rows_of(rows, "tokens", "code") == []
    assert rows_of(rows, "references", "medication") == [("Medication", "m1", "Medication/m1")]


def test_immunization_vaccine_code_and_date() -> None:
    immunization = {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": concept("http://hl7.org/fhir/sid/cvx", "140", "Influenza"),
        "patient": ref("Patient/p1"),
        "occurrenceDateTime": "2016-04-09",
    }
    rows = extract_index(immunization)
    assert rows_of(rows, "tokens", "vaccine-code") == [("http://hl7.org/fhir/sid/cvx", "140")]
    assert rows_of(rows, "dates", "date") == [
        (at("2016-04-09T00:00+00:00"), at("2016-04-10T00:00+00:00"))
    ]
    assert patient_compartment(immunization) == "p1"


def test_timing_events_numbers_and_uris() -> None:
    plan = {
        "resourceType": "CarePlan",
        "activity": [
            {"detail": {"scheduledTiming": {"event": ["2020-01-01", "2020-01-02"]}}},
            {"detail": {"scheduledString": "daily"}},
        ],
    }
    assert rows_of(extract_index(plan), "dates", "activity-date") == [
        (at("2020-01-01T00:00+00:00"), at("2020-01-02T00:00+00:00")),
        (at("2020-01-02T00:00+00:00"), at("2020-01-03T00:00+00:00")),
    ]
    risk = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}
    assert rows_of(extract_index(risk), "numbers", "probability") == [(0.25,)]
    questionnaire = {"resourceType": "Questionnaire", "url": "http://example.org/Q/1"}
    assert rows_of(extract_index(questionnaire), "uris", "url") == [("http://example.org/Q/1",)]


# --------------------------------------------------------------------------- financial, consent


def test_claim_and_eob_patient() -> None:
    claim = {
        "resourceType": "Claim",
        "patient": ref("Patient/p1"),
        "provider": ref("Organization?identifier=https://github.com/synthetichealth/synthea|x"),
        "total": {"value": 129.5, "currency": "USD"},
        "created": "2020-02-02",
    }
    rows = extract_index(claim)
    assert rows_of(rows, "references", "patient") == [("Patient", "p1", "Patient/p1")]
    assert rows_of(rows, "references", "provider") == [
        (
            "Organization",
            None,
            "Organization?identifier=https://github.com/synthetichealth/synthea|x",
        )
    ]
    assert patient_compartment(claim) == "p1"
    eob = {
        "resourceType": "ExplanationOfBenefit",
        "patient": ref("Patient/p2"),
        "payee": {"party": ref("Organization/o1")},
    }
    assert rows_of(extract_index(eob), "references", "patient") == [("Patient", "p2", "Patient/p2")]
    assert patient_compartment(eob) == "p2"


def test_money_quantity() -> None:
    item = {"resourceType": "ChargeItem", "priceOverride": {"value": 40, "currency": "EUR"}}
    assert rows_of(extract_index(item), "quantities", "price-override") == [
        (40.0, "urn:iso:std:iso:4217", "EUR", None)
    ]


def test_coverage_prefers_beneficiary() -> None:
    coverage = {
        "resourceType": "Coverage",
        "status": "active",
        "policyHolder": ref("Patient/holder"),
        "subscriber": ref("Patient/holder"),
        "beneficiary": ref("Patient/child"),
        "payor": [ref("Organization/ins")],
    }
    rows = extract_index(coverage)
    assert rows_of(rows, "references", "beneficiary") == [("Patient", "child", "Patient/child")]
    assert rows_of(rows, "references", "patient") == [("Patient", "child", "Patient/child")]
    assert patient_compartment(coverage) == "child"
    assert patient_compartments(coverage) == ("child", "holder")
    assert patient_compartment(coverage, rows) == "child"


def test_consent_patient_and_date() -> None:
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": concept("http://terminology.hl7.org/CodeSystem/consentscope", "research"),
        "category": [concept(LOINC, "59284-0")],
        "patient": ref("Patient/p1"),
        "dateTime": "2022-06-01T12:00:00+00:00",
        "provision": {"period": {"start": "2022-06-01", "end": "2023-06-01"}},
    }
    rows = extract_index(consent)
    assert rows_of(rows, "references", "patient") == [("Patient", "p1", "Patient/p1")]
    assert rows_of(rows, "tokens", "scope") == [
        ("http://terminology.hl7.org/CodeSystem/consentscope", "research")
    ]
    assert rows_of(rows, "dates", "period") == [
        (at("2022-06-01T00:00+00:00"), at("2023-06-02T00:00+00:00"))
    ]
    assert patient_compartment(consent) == "p1"


def test_questionnaire_response_subject_author() -> None:
    response = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": "http://example.org/Questionnaire/phq9|1.0",
        "subject": ref("Patient/p1"),
        "author": ref("Practitioner/dr"),
        "authored": "2023-01-01T00:00:00Z",
    }
    rows = extract_index(response)
    assert rows_of(rows, "references", "subject") == [("Patient", "p1", "Patient/p1")]
    assert rows_of(rows, "references", "patient") == [("Patient", "p1", "Patient/p1")]
    assert rows_of(rows, "references", "author") == [("Practitioner", "dr", "Practitioner/dr")]
    assert rows_of(rows, "references", "questionnaire") == [
        ("Questionnaire", "phq9", "http://example.org/Questionnaire/phq9|1.0")
    ]
    assert patient_compartment(response) == "p1"
    by_patient = {**response, "subject": ref("Group/g"), "author": ref("Patient/p3")}
    assert patient_compartment(by_patient) == "p3"


def test_malformed_values_are_skipped() -> None:
    odd = {
        "resourceType": "Observation",
        "status": 7,
        "code": "not-a-concept",
        "category": [None, {"coding": "x"}],
        "subject": {"reference": 12},
        "effectiveDateTime": "2020-13-45",
        "valueQuantity": {"value": "12"},
    }
    rows = extract_index(odd)
    assert all(not getattr(rows, t) for t in IndexRows.__slots__)
    assert extract_index({"resourceType": "NotAType"}) == IndexRows()
    assert patient_compartment({"resourceType": "Observation"}) is None


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "lo", "hi"),
    [
        ("2020", "2020-01-01T00:00:00+00:00", "2021-01-01T00:00:00+00:00"),
        ("2020-02", "2020-02-01T00:00:00+00:00", "2020-03-01T00:00:00+00:00"),
        ("2019-02", "2019-02-01T00:00:00+00:00", "2019-03-01T00:00:00+00:00"),
        ("2020-12", "2020-12-01T00:00:00+00:00", "2021-01-01T00:00:00+00:00"),
        ("2020-02-29", "2020-02-29T00:00:00+00:00", "2020-03-01T00:00:00+00:00"),
        ("2000-02-29", "2000-02-29T00:00:00+00:00", "2000-03-01T00:00:00+00:00"),
        ("2020-06-15T10:30", "2020-06-15T10:30:00+00:00", "2020-06-15T10:31:00+00:00"),
        ("2020-06-15T10:30:15", "2020-06-15T10:30:15+00:00", "2020-06-15T10:30:16+00:00"),
        ("2020-06-15T10:30:15Z", "2020-06-15T10:30:15+00:00", "2020-06-15T10:30:16+00:00"),
        ("2020-06-15T10:30:15+02:00", "2020-06-15T08:30:15+00:00", "2020-06-15T08:30:16+00:00"),
        ("2020-06-15T23:30:15-05:30", "2020-06-16T05:00:15+00:00", "2020-06-16T05:00:16+00:00"),
        ("2020-01-01T00:00:00+14:00", "2019-12-31T10:00:00+00:00", "2019-12-31T10:00:01+00:00"),
        ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59+00:00", "1970-01-01T00:00:00+00:00"),
    ],
)
def test_date_range_precisions(text: str, lo: str, hi: str) -> None:
    assert date_range(text) == (at(lo), at(hi))


@pytest.mark.parametrize(
    ("text", "offset", "width"),
    [
        ("2020-06-15T10:30:15.5Z", 500_000, 100_000),
        ("2020-06-15T10:30:15.25Z", 250_000, 10_000),
        ("2020-06-15T10:30:15.123Z", 123_000, 1_000),
        ("2020-06-15T10:30:15.123456Z", 123_456, 1),
        ("2020-06-15T10:30:15.1234567Z", 123_456, 1),
        ("2020-06-15T10:30:15.000+00:00", 0, 1_000),
    ],
)
def test_date_range_fractions(text: str, offset: int, width: int) -> None:
    base = at("2020-06-15T10:30:15+00:00")
    assert date_range(text) == (base + offset, base + offset + width)


def test_date_range_extremes() -> None:
    assert date_range("0001")[0] == at("0001-01-01T00:00:00+00:00")
    assert date_range("9999")[1] == date_range("9999-12-31")[1]
    assert date_range("0001")[0] > DATE_MIN and date_range("9999")[1] < DATE_MAX


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2020-13-01",
        "2020-02-30",
        "2021-02-29",
        "1900-02-29",
        "20200101",
        "2020-1-1",
        "2020-00",
        "0000",
        "abcd",
        " 2020",
        "2020 ",
        "2020-01-01T",
        "2020-01-01T10",
        "2020-01-01T24:00:00",
        "2020-01-01T10:60:00",
        "2020-01-01T10:00:61",
        "2020-01-01Z",
        "2020-01-01T10:00:00+1:00",
        "2020-01-01T10:00:00+15:00",
        "2020-01-01T10:00:00.Z",
        "2020-01-01T10:00:00 ",
        "2020-01-01t10:00:00",
        "２０２０",
        "2020-01-01T10:00:0",
    ],
)
def test_date_range_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError):
        date_range(text)


def test_date_range_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        date_range(None)  # type: ignore[arg-type]


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_date_range_matches_datetime(moment: datetime) -> None:
    moment = moment.replace(tzinfo=UTC)
    seconds = moment.replace(microsecond=0)
    lo = int(seconds.timestamp()) * US
    assert date_range(seconds.strftime("%Y-%m-%dT%H:%M:%SZ").rjust(20, "0")) == (lo, lo + US)
    text = moment.isoformat(timespec="microseconds").replace("+00:00", "Z").rjust(27, "0")
    assert date_range(text) == (lo + moment.microsecond, lo + moment.microsecond + 1)


# --------------------------------------------------------------------------- strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Smith", "smith"),
        ("  John   PAUL\tSmith\n", "john paul smith"),
        ("Zoë Ångström", "zoe angstrom"),
        ("Müller-Lüdenscheidt", "muller-ludenscheidt"),
        ("Straße", "strasse"),
        ("ﬁle", "file"),  # NFKD compatibility decomposition
        ("Ｆｕｌｌ", "full"),
        ("", ""),
    ],
)
def test_normalise_string(text: str, expected: str) -> None:
    assert normalise_string(text) == expected


# --------------------------------------------------------------------------- definitions


REQUIRED = [
    "_lastUpdated",
    "identifier",
    "patient",
    "subject",
    "code",
    "category",
    "status",
    "date",
    "onset-date",
    "authoredon",
    "name",
    "family",
    "given",
    "birthdate",
    "gender",
    "address-postalcode",
    "value-quantity",
]
NODE_TYPES = [
    "Patient",
    "Practitioner",
    "Organization",
    "Location",
    "Encounter",
    "Condition",
    "Observation",
    "Procedure",
    "MedicationRequest",
    "Immunization",
    "AllergyIntolerance",
    "DiagnosticReport",
    "CarePlan",
    "Claim",
    "ExplanationOfBenefit",
    "Coverage",
    "Device",
    "Questionnaire",
    "QuestionnaireResponse",
    "Consent",
    "Provenance",
]
# Where R4 defines them, the required params must exist; spot-check that they do.
MUST_EXIST = {
    "Patient": {
        "identifier",
        "name",
        "family",
        "given",
        "birthdate",
        "gender",
        "address-postalcode",
    },
    "Observation": {"code", "category", "status", "date", "patient", "subject", "value-quantity"},
    "Condition": {"onset-date", "code", "patient", "subject", "category"},
    "MedicationRequest": {"authoredon", "code", "status", "patient", "subject"},
    "Encounter": {"date", "patient", "subject", "status"},
    "Claim": {"patient", "identifier"},
    "ExplanationOfBenefit": {"patient", "identifier", "status"},
    "Coverage": {"patient", "identifier", "status"},
    "Provenance": {"patient"},
}


@pytest.mark.parametrize("rtype", NODE_TYPES)
def test_required_params_are_supported(rtype: str) -> None:
    params = search_params(rtype)
    assert params["_lastUpdated"].supported
    for code in REQUIRED:
        if code in params:
            assert params[code].supported, f"{rtype}.{code} is not supported"
    assert MUST_EXIST.get(rtype, set()) <= set(params)


def test_search_param_definitions() -> None:
    patient = search_params("Observation")["patient"]
    assert patient.type == "reference"
    assert patient.expression == "Observation.subject.where(resolve() is Patient)"
    assert set(patient.targets) == {"Patient", "Group"}
    assert patient.url == "http://hl7.org/fhir/SearchParameter/clinical-patient"
    assert search_params("Observation")["code-value-quantity"].supported is False
    assert search_params("Patient")["_text"].supported is False
    assert search_params("Location")["near"].supported is False
    assert search_params("NotAType") == {}
    assert patient_compartment_params("Coverage")[0] == "beneficiary"
    assert patient_compartment_params("Organization") == ()


def test_generated_data_is_up_to_date(shared: Path) -> None:
    name = "_gen_search_params"
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "gen_search_params.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    sys.modules[name] = gen  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(gen)
        doc = gen.build(shared / "fhir-r4" / "definitions")
    finally:
        del sys.modules[name]
    assert doc == json.loads(DATA_FILE.read_text(encoding="utf-8")), (
        "r4-search-params.json is stale: run tools/gen_search_params.py"
    )


# --------------------------------------------------------------------------- reference data


REQUIRED_COLUMN = {
    "tokens": 2,
    "token_texts": 1,
    "strings": 2,
    "dates": 2,
    "references": 3,
    "quantities": 1,
    "numbers": 1,
    "uris": 1,
}


def test_every_official_example_extracts(shared: Path) -> None:
    files = sorted((shared / "fhir-r4" / "examples").glob("*.json"))
    assert len(files) >= 700
    for path in files:
        resource = orjson.loads(path.read_bytes())
        rows = extract_index(resource)
        patient_compartments(resource)
        codes = search_params(resource["resourceType"])
        for table in IndexRows.__slots__:
            for row in getattr(rows, table):
                assert row[0].removesuffix(":identifier") in codes, (path.name, row)
                assert row[REQUIRED_COLUMN[table]] is not None, (path.name, row)


def _synthea_bundles(shared: Path) -> list[Path]:
    folder = shared / "data" / "synthea"
    files = [*folder.glob("*.json"), *(folder / "blaze-synthea-2.7.0").glob("*.json")]
    return sorted(f for f in files if "Information" not in f.name)


URN = re.compile(r'"(urn:uuid:[0-9A-Fa-f-]+)"')


def _rewrite_urns(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's resources with ``urn:uuid:X`` references rewritten to ``Type/X``."""
    local = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
    }
    text = orjson.dumps([e["resource"] for e in bundle["entry"]]).decode()
    text = URN.sub(lambda m: f'"{local.get(m.group(1), m.group(1))}"', text)
    return orjson.loads(text)


def test_patient_compartment_on_synthea(shared: Path) -> None:
    bundles = _synthea_bundles(shared)
    assert len(bundles) >= 10
    for path in bundles:
        resources = _rewrite_urns(orjson.loads(path.read_bytes()))
        patient_id = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        for resource in resources:
            expected = patient_id if patient_compartment_params(resource["resourceType"]) else None
            assert patient_compartment(resource) == expected, (path.name, resource["id"])
            rows = extract_index(resource)
            assert patient_compartment(resource, rows) == expected


def test_synthea_urn_references_are_not_resolved(shared: Path) -> None:
    bundle = orjson.loads(_synthea_bundles(shared)[0].read_bytes())
    observation = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    assert observation["subject"]["reference"].startswith("urn:uuid:")
    assert patient_compartment(observation) is None
