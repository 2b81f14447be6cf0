"""Terminology used by the generator: SNOMED CT, ICD-10-CM, LOINC, RxNorm, CVX, HL7 codes.

The code tables live in ``data/terminology.json`` (conditions with SNOMED CT + ICD-10-CM,
LOINC observations and answers, RxNorm medications, CVX vaccines, procedures, allergies,
care plans); this module turns them into plain dicts once, and every resource that uses a
coded value shares the same dict (the writer only serialises them, nothing mutates them).
Codes come from the Synthea modules, the LOINC and HL7 tables and CDC's CVX list; they are
realistic, not a curated clinical value set (see docs/synthetic-data.md).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
HGNC = "http://www.genenames.org/geneId"
HGVS = "http://varnomen.hgvs.org"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"

Concept = dict[str, Any]
_T = json.loads(resources.files(__package__).joinpath("data").joinpath("terminology.json")
                .read_text("utf-8"))


def coding(system: str, code: str, display: str) -> dict[str, str]:
    """A Coding."""
    return {"system": system, "code": code, "display": display}


def concept(system: str, code: str, display: str, text: str | None = None) -> Concept:
    """A CodeableConcept with one coding."""
    return {"coding": [coding(system, code, display)], "text": text or display}


def text_concept(text: str) -> Concept:
    """A CodeableConcept with text only."""
    return {"text": text}


def _condition_concept(sct: str, sct_display: str, icd: str, icd_display: str) -> Concept:
    return {"coding": [coding(SCT, sct, sct_display), coding(ICD10, icd, icd_display)],
            "text": sct_display.rsplit(" (", 1)[0]}


# --- conditions: key -> [SNOMED code, SNOMED display, ICD-10-CM code, ICD-10-CM display]
CONDITION = {k: _condition_concept(*v) for k, v in _T["conditions"].items()}
ICD10_CODING = {k: {"coding": [coding(ICD10, v[2], v[3])]} for k, v in _T["conditions"].items()}
SENSITIVE = {"depression": "PSY", "chlamydia": "STD"}
SECURITY = {label: [coding(V3_ACT, label, display)] for label, display in (
    ("PSY", "psychiatry disorder information sensitivity"),
    ("ETH", "substance abuse information sensitivity"),
    ("HIV", "HIV/AIDS information sensitivity"),
    ("GDIS", "genetic disease information sensitivity"),
    ("STD", "sexually transmitted disease information sensitivity"),
)}

_CS = "http://terminology.hl7.org/CodeSystem/"
CLINICAL = {s: {"coding": [{"system": _CS + "condition-clinical", "code": s}]}
            for s in ("active", "resolved", "remission", "inactive")}
CONFIRMED = {"coding": [{"system": _CS + "condition-ver-status", "code": "confirmed"}]}
PROBLEM_LIST = [concept(_CS + "condition-category", "problem-list-item", "Problem List Item")]
ENCOUNTER_DX = [concept(_CS + "condition-category", "encounter-diagnosis", "Encounter Diagnosis")]

# --- encounters
ENC_CLASS = {
    "AMB": coding(V3_ACT, "AMB", "ambulatory"),
    "EMER": coding(V3_ACT, "EMER", "emergency"),
    "IMP": coding(V3_ACT, "IMP", "inpatient encounter"),
}
ENC_TYPE = {k: [concept(SCT, c, d)] for k, (c, d) in _T["encounter_types"].items()}
PRIMARY_PERFORMER = [concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "PPRF", "primary performer")]
DISCHARGE = {
    "home": concept(_CS + "discharge-disposition", "home", "Home"),
    "exp": concept(_CS + "discharge-disposition", "exp", "Expired"),
}

# --- observations
VITAL_SIGNS = [concept(OBS_CAT, "vital-signs", "Vital Signs")]
LABORATORY = [concept(OBS_CAT, "laboratory", "Laboratory")]
SOCIAL_HISTORY = [concept(OBS_CAT, "social-history", "Social History")]
SURVEY = [concept(OBS_CAT, "survey", "Survey")]
ACTIVITY = [concept(OBS_CAT, "activity", "Activity")]
SDOH = [concept(OBS_CAT, "survey", "Survey"),
        concept("http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "sdoh", "SDOH")]
LAB_REPORT = [concept(V2_0074, "LAB", "Laboratory")]
GENETICS_REPORT = [concept(V2_0074, "GE", "Genetics")]
OBS = {k: concept(LOINC, c, d) for k, (c, d) in _T["loinc"].items()}
LOINC_CODE = {k: c for k, (c, d) in _T["loinc"].items()}
SMOKING = {k: concept(SCT, c, d) for k, (c, d) in _T["smoking"].items()}
LA = {k: coding(LOINC, c, d) for k, (c, d) in _T["loinc_answers"].items()}
PHQ_ANSWERS = tuple(coding(LOINC, c, d) for c, d in _T["phq9_answers"])
PHQ_ITEMS = tuple((c, text) for c, text in _T["phq9_items"])

# --- medications: key -> [RxNorm code, display, dose form]
MED = {k: concept(RXNORM, c, d) for k, (c, d, _) in _T["medications"].items()}
MED_FORM = {k: form for k, (_, _, form) in _T["medications"].items()}
MED_CODE = {k: c for k, (c, _, _) in _T["medications"].items()}

# --- immunizations, procedures, allergies, care plans
VACCINE = {k: concept(CVX, k, d) for k, d in _T["vaccines"].items()}
PROCEDURE = {k: concept(SCT, c, d) for k, (c, d) in _T["procedures"].items()}
ALLERGY = {k: tuple(v) for k, v in _T["allergies"].items()}  # code, display, category, reaction
ALLERGY_CODE = {k: concept(SCT, c, d) for k, (c, d, _, _) in ALLERGY.items()}
REACTION = {k: [concept(SCT, c, d)] for k, (c, d) in _T["reactions"].items()}
CAREPLAN_CATEGORY = concept(SCT, "734163000", "Care plan (record artifact)")
CAREPLAN = {k: (concept(SCT, c, d), [concept(SCT, ac, ad) for ac, ad in acts])
            for k, (c, d, acts) in _T["care_plans"].items()}

# --- identifiers, organisations, payers
MR_TYPE = {"coding": [coding(V2_0203, "MR", "Medical record number")], "text": "MRN"}
MEMBER_TYPE = {"coding": [coding(V2_0203, "MB", "Member Number")], "text": "Member number"}
HEALTH_CARD_TYPE = {
    "coding": [coding(V2_0203, "HC", "Health Card Number")],
    "text": "Family health card",
}
NPI = "http://hl7.org/fhir/sid/us-npi"
ORG_TYPE = {
    k: [concept(_CS + "organization-type", k, d)]
    for k, d in (
        ("prov", "Healthcare Provider"),
        ("ins", "Insurance Company"),
        ("govt", "Government"),
    )
}
CLAIM_TYPE = {
    k: concept(_CS + "claim-type", k, k.capitalize())
    for k in ("professional", "institutional", "pharmacy", "oral")
}
PRIORITY_NORMAL = {"coding": [{"system": _CS + "processpriority", "code": "normal"}]}
ADJUDICATION = {
    k: concept(_CS + "adjudication", k, d)
    for k, d in (
        ("submitted", "Submitted Amount"),
        ("eligible", "Eligible Amount"),
        ("copay", "CoPay"),
        ("benefit", "Benefit Amount"),
    )
}
SUBSCRIBER_RELATIONSHIP = {
    k: concept(_CS + "subscriber-relationship", k, k.capitalize())
    for k in ("self", "spouse", "child", "other")
}
COVERAGE_TYPE = {
    k: concept(V3_ACT, k, d)
    for k, d in (("HIP", "health insurance plan policy"), ("PUBLICPOL", "public healthcare"))
}
COVERAGE_CLASS = {k: concept(_CS + "coverage-class", k, k.capitalize()) for k in ("group", "plan")}
DISPENSE_TYPE = {k: concept(V3_ACT, k, d) for k, d in (("FF", "First Fill"), ("RF", "Refill"))}
IMMUNIZATION_ORIGIN = concept(_CS + "immunization-origin", "provider", "Other Provider")
