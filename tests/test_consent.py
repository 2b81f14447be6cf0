"""The consent model: parsing, network defaults, decisions, the cohort index, labels, text."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import healthmesh.consent as consent_api
from healthmesh.consent import (
    AccessRequest,
    ConsentError,
    ConsentIndex,
    ParsedConsent,
    coverage,
    data_time,
    decide,
    default_policy,
    describe,
    labels_for,
    load_policy,
    parse_consent,
    request_for_resource,
)
from healthmesh.errors import ConfigError, FhirError, HealthmeshError
from healthmesh.fhir.search_params import date_range

CS = "http://terminology.hl7.org/CodeSystem/"
POLICY = default_policy()
EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "fhir-r4" / "examples"


def us(text: str) -> int:
    """Epoch microseconds of the start of a FHIR date/dateTime."""
    return date_range(text)[0]


AT = us("2025-06-01T12:00:00Z")


# --------------------------------------------------------------------------- builders


def prov(kind: str | None = "permit", *, purposes: tuple[str, ...] = (),
         labels: tuple[str, ...] = (), actors: tuple[str, ...] = (),
         actions: tuple[str, ...] = (), classes: tuple[str, ...] = (),
         period: tuple[str | None, str | None] | None = None,
         data_period: tuple[str | None, str | None] | None = None,
         data: tuple[tuple[str, str], ...] = (), codes: tuple[str, ...] = (),
         role: str = "PRCP", nested: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """A Consent.provision (criteria are omitted when empty)."""
    out: dict[str, Any] = {} if kind is None else {"type": kind}
    if purposes:
        out["purpose"] = [{"system": CS + "v3-ActReason", "code": p} for p in purposes]
    if labels:
        out["securityLabel"] = [{"system": CS + "v3-ActCode", "code": c} for c in labels]
    if actors:
        out["actor"] = [{"role": {"coding": [{"system": CS + "v3-ParticipationType",
                                              "code": role}]}, "reference": {"reference": a}}
                        for a in actors]
    if actions:
        out["action"] = [{"coding": [{"system": CS + "consentaction", "code": a}]}
                         for a in actions]
    if classes:
        out["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": c}
                        for c in classes]
    if codes:
        out["code"] = [{"coding": [{"system": "http://loinc.org", "code": c}]} for c in codes]
    for key, value in (("period", period), ("dataPeriod", data_period)):
        if value is not None:
            out[key] = {k: v for k, v in zip(("start", "end"), value, strict=True) if v}
    if data:
        out["data"] = [{"meaning": m, "reference": {"reference": r}} for m, r in data]
    if nested:
        out["provision"] = list(nested)
    return out


def consent(provision: dict[str, Any] | None, *, cid: str = "c1", patient: str = "p1",
            scope: str = "patient-privacy", status: str = "active",
            rule: str | None = None, date: str = "2024-01-01") -> dict[str, Any]:
    """A Consent resource."""
    out: dict[str, Any] = {
        "resourceType": "Consent", "id": cid, "status": status,
        "scope": {"coding": [{"system": CS + "consentscope", "code": scope}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"}, "dateTime": date,
    }
    if rule:
        out["policyRule"] = {"coding": [{"system": CS + "v3-ActCode", "code": rule}]}
    if provision is not None:
        out["provision"] = provision
    return out


def parsed(provision: dict[str, Any] | None, **kw: Any) -> ParsedConsent:
    return parse_consent(consent(provision, **kw))


def req(purpose: str | None = "HRESCH", **kw: Any) -> AccessRequest:
    """An AccessRequest for patient p1 at AT from Organization/uni (overridable)."""
    base: dict[str, Any] = {"patient_id": "p1", "purpose": purpose, "at": AT,
                            "requester": "Organization/uni"}
    base.update(kw)
    for key in ("security_labels", "codes", "references", "sources",
                "patient_payers", "requester_affiliations"):
        if isinstance(base.get(key), (set, list, tuple)):
            base[key] = frozenset(base[key])
    return AccessRequest(**base)


def research_permit(*nested: dict[str, Any], **kw: Any) -> ParsedConsent:
    return parsed(prov("permit", purposes=("HRESCH",), nested=nested), scope="research", **kw)


# --------------------------------------------------------------------------- public API


def test_public_api_names() -> None:
    assert consent_api.__all__ == [
        "AccessRequest", "Actor", "CohortCoverage", "ConsentError", "ConsentIndex",
        "Coverage", "DataItem", "Decision", "ParsedConsent", "Period", "Policy",
        "Provision", "PurposeRule", "coverage", "data_time", "decide", "default_policy",
        "describe", "labels_for", "load_policy", "parse_consent", "request_for_resource",
    ]
    for name in consent_api.__all__:
        assert hasattr(consent_api, name)


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(("purpose", "extra", "permit", "rule"), [
    ("TREAT", {}, True, "default:TREAT"),
    ("ETREAT", {}, True, "default:ETREAT"),
    ("COC", {}, True, "default:TREAT"),
    ("HPAYMT", {"requester": "Organization/ins", "patient_payers": {"Organization/ins"}},
     True, "default:HPAYMT"),
    ("HPAYMT", {"requester": "Organization/other", "patient_payers": {"Organization/ins"}},
     False, "recipient:HPAYMT"),
    ("HOPERAT", {"requester": "Organization/node", "node_org": "Organization/node"},
     True, "default:HOPERAT"),
    ("HOPERAT", {"requester": "Organization/uni", "node_org": "Organization/node"},
     False, "recipient:HOPERAT"),
    ("PUBHLTH", {}, True, "default:PUBHLTH"),
    ("HRESCH", {}, False, "default:HRESCH"),
    ("CLINTRCH", {}, False, "default:HRESCH"),
    ("PATRQT", {"requester": "Patient/p1", "requester_is_patient": True}, True,
     "default:PATRQT"),
    ("PATRQT", {}, False, "recipient:PATRQT"),
    (None, {"requester": "Patient/p1", "requester_is_patient": True}, True, "default:PATRQT"),
    (None, {}, False, "purpose:missing"),
    ("NOSUCH", {}, False, "purpose:unknown"),
])
def test_default_per_purpose(purpose: str | None, extra: dict[str, Any], permit: bool,
                             rule: str) -> None:
    decision = decide(req(purpose, **extra), [], POLICY)
    assert (decision.permit, decision.rule, decision.consent_id) == (permit, rule, None)
    assert decision.reason.endswith(".")


def test_research_opt_in_and_its_subtypes() -> None:
    c = research_permit()
    for purpose in ("HRESCH", "CLINTRCH", "CLINTRCHNPC"):
        decision = decide(req(purpose), [c], POLICY)
        assert decision.permit and decision.rule == "Consent/c1#provision"
    assert "research" in decide(req(), [c], POLICY).reason
    assert decide(req("TREAT"), [c], POLICY).rule == "default:TREAT"  # research scope only


def test_research_opt_out() -> None:
    c = parsed(prov("deny", purposes=("HRESCH",)), scope="research")
    decision = decide(req(), [c], POLICY)
    assert not decision.permit and decision.rule == "Consent/c1#provision"


def test_treatment_opt_out_covers_emergency_treatment_not_the_reverse() -> None:
    out = parsed(prov("deny", purposes=("TREAT",)))
    assert not decide(req("TREAT"), [out], POLICY).permit
    assert not decide(req("ETREAT"), [out], POLICY).permit
    emergency_only = parsed(prov("deny", purposes=("ETREAT",)))
    assert decide(req("TREAT"), [emergency_only], POLICY).permit
    assert not decide(req("ETREAT"), [emergency_only], POLICY).permit


def test_law_and_patient_access_cannot_be_overridden() -> None:
    deny_all = parsed(prov("deny"))
    assert decide(req("PUBHLTH"), [deny_all], POLICY).rule == "default:PUBHLTH"
    own = req("PATRQT", requester="Patient/p1", requester_is_patient=True)
    assert decide(own, [deny_all], POLICY).permit
    assert not decide(req("TREAT"), [deny_all], POLICY).permit


def test_payment_ceiling_cannot_be_widened_by_consent() -> None:
    tpo = parsed(prov("permit", purposes=("TREAT", "HPAYMT", "HOPERAT", "PUBHLTH")))
    payers = {"Organization/ins"}
    assert not decide(req("HPAYMT", patient_payers=payers), [tpo], POLICY).permit
    payer = req("HPAYMT", requester="Organization/ins", patient_payers=payers)
    assert decide(payer, [tpo], POLICY).rule == "Consent/c1#provision"
    no_payment = parsed(prov("deny", purposes=("HPAYMT",)), cid="c2")
    assert not decide(payer, [tpo, no_payment], POLICY).permit


# --------------------------------------------------------------------------- nesting


def test_nested_deny_mental_health_inside_research_permit() -> None:
    c = research_permit(prov("deny", labels=("PSY",)))
    psy = decide(req(security_labels={"PSY"}), [c], POLICY)
    assert not psy.permit and psy.rule == "Consent/c1#provision.provision[0]"
    assert psy.provision == "provision.provision[0]" and psy.consent_id == "c1"
    assert "mental-health" in psy.reason
    assert decide(req(security_labels={"HIV"}), [c], POLICY).permit
    assert decide(req(security_labels=set()), [c], POLICY).permit
    assert not decide(req(security_labels={"PSYTHPN"}), [c], POLICY).permit  # finer label
    unknown = decide(req(), [c], POLICY)
    assert not unknown.permit and unknown.reason.startswith("Some of this data")
    assert coverage(req(), [c], POLICY) == "partial"


def test_nested_permit_for_a_named_organisation_inside_a_deny() -> None:
    c = parsed(prov("deny", purposes=("HRESCH",),
                    nested=(prov("permit", actors=("Organization/uni",)),)), scope="research")
    assert decide(req(requester="Organization/uni"), [c], POLICY).permit
    assert not decide(req(requester="Organization/other"), [c], POLICY).permit
    via_employer = req(requester="Practitioner/dr", requester_affiliations={"Organization/uni"})
    assert decide(via_employer, [c], POLICY).permit
    assert coverage(req(requester=None), [c], POLICY) == "partial"


def test_nested_type_defaults_to_the_opposite_of_the_parent() -> None:
    c = parsed(prov(None, purposes=("HRESCH",), nested=(prov(None, labels=("GDIS",)),)),
               scope="research", rule="OPTIN")
    assert [p.type for p in c.provision.walk()] == ["permit", "deny"]
    assert not decide(req(security_labels={"GDIS"}), [c], POLICY).permit


def test_matching_siblings_deny_wins() -> None:
    c = research_permit(prov("permit", labels=("PSY",)), prov("deny", classes=("Observation",)))
    request = req(security_labels={"PSY"}, resource_type="Observation")
    assert decide(request, [c], POLICY).rule == "Consent/c1#provision.provision[1]"
    assert decide(replace(request, resource_type="Condition"), [c], POLICY).permit


def test_deny_wins_between_consents_whatever_the_order() -> None:
    yes = research_permit(cid="yes", date="2025-01-01")
    no = parsed(prov("deny", purposes=("HRESCH",)), cid="no", scope="research",
                date="2020-01-01")
    for consents in ([yes, no], [no, yes]):
        decision = decide(req(), consents, POLICY)
        assert not decision.permit and decision.consent_id == "no"


def test_confidentiality_levels() -> None:
    c = research_permit(prov("deny", labels=("R",)))
    assert not decide(req(security_labels={"V"}), [c], POLICY).permit
    assert not decide(req(security_labels={"R"}), [c], POLICY).permit
    assert decide(req(security_labels={"N"}), [c], POLICY).permit
    normal_only = parsed(prov("permit", purposes=("HRESCH",), labels=("N",)), scope="research")
    assert decide(req(security_labels=set()), [normal_only], POLICY).permit
    assert not decide(req(security_labels={"R"}), [normal_only], POLICY).permit


# --------------------------------------------------------------------------- criteria


def test_recipient_matching() -> None:
    c = parsed(prov("permit", nested=(prov("deny", actors=("Organization/bad",)),)))
    assert not decide(req("TREAT", requester="Organization/bad"), [c], POLICY).permit
    assert decide(req("TREAT", requester="Organization/good"), [c], POLICY).permit
    assert coverage(req("TREAT", requester=None), [c], POLICY) == "partial"


def test_action_matching() -> None:
    c = research_permit(prov("deny", actions=("disclose",)))
    assert decide(req(action="access"), [c], POLICY).permit
    assert decide(req(action="use"), [c], POLICY).permit
    assert not decide(req(action="disclose"), [c], POLICY).permit


@pytest.mark.parametrize(("at", "applies"), [
    ("2024-12-31T23:59:59Z", False),
    ("2025-01-01T00:00:00Z", True),
    ("2025-12-31T23:59:59Z", True),  # a date-only end includes its whole day
    ("2026-01-01T00:00:00Z", False),
])
def test_consent_period_boundaries(at: str, applies: bool) -> None:
    c = parsed(prov("permit", purposes=("HRESCH",), period=("2025-01-01", "2025-12-31")),
               scope="research")
    assert decide(req(at=us(at)), [c], POLICY).permit is applies


def test_nested_provision_period() -> None:
    c = research_permit(prov("deny", period=("2025-03-01", "2025-03-31")))
    assert not decide(req(at=us("2025-03-15")), [c], POLICY).permit
    assert decide(req(at=us("2025-04-01")), [c], POLICY).permit


@pytest.mark.parametrize(("when", "denied"), [
    ("2019-12-31T23:59:59Z", False), ("2020-01-01T00:00:00Z", True),
    ("2020-12-31T23:59:59Z", True), ("2021-01-01T00:00:00Z", False),
])
def test_data_period_boundaries(when: str, denied: bool) -> None:
    c = research_permit(prov("deny", data_period=("2020-01-01", "2020-12-31")))
    assert decide(req(data_time=us(when)), [c], POLICY).permit is not denied
    assert coverage(req(data_time=None), [c], POLICY) == "partial"


def test_class_code_and_data_criteria() -> None:
    c = research_permit(prov("deny", classes=("Observation",)),
                        prov("deny", codes=("44261-6",)),
                        prov("deny", data=(("instance", "Condition/secret"),)),
                        prov("deny", data=(("related", "Task/example3"),)))
    known: dict[str, Any] = {"codes": set(), "references": set(),
                             "resource_ref": "Condition/ok"}
    assert decide(req(resource_type="Condition", **known), [c], POLICY).permit
    assert not decide(req(resource_type="Observation", **known), [c], POLICY).permit
    coded = {**known, "codes": {"http://loinc.org|44261-6"}}
    assert not decide(req(resource_type="Condition", **coded), [c], POLICY).permit
    secret = {**known, "resource_ref": "Condition/secret"}
    assert not decide(req(resource_type="Condition", **secret), [c], POLICY).permit
    linked = {**known, "references": {"Task/example3"}}
    assert not decide(req(resource_type="Condition", **linked), [c], POLICY).permit


def test_source_actor_matches_authors_and_custodians() -> None:
    c = parsed(prov("permit", nested=(prov("deny", actors=("Organization/f001",),
                                           role="CST"),)))
    assert not decide(req("TREAT", sources={"Organization/f001"}), [c], POLICY).permit
    assert decide(req("TREAT", sources={"Organization/x"}), [c], POLICY).permit


@pytest.mark.parametrize("status", ["draft", "proposed", "rejected", "inactive",
                                    "entered-in-error"])
def test_only_active_consents_count(status: str) -> None:
    c = research_permit(status=status)
    assert decide(req(), [c], POLICY).rule == "default:HRESCH"
    out = parsed(prov("deny"), status=status)
    assert decide(req("TREAT"), [out], POLICY).permit


@pytest.mark.parametrize("scope", ["treatment", "adr"])
def test_care_consents_do_not_govern_data(scope: str) -> None:
    c = parsed(prov("deny"), scope=scope)
    assert decide(req("TREAT"), [c], POLICY).permit
    assert describe(c)[-1].endswith("does not change who may use your data.")


def test_other_patients_consents_are_ignored() -> None:
    assert decide(req(), [research_permit(patient="p2")], POLICY).rule == "default:HRESCH"


# --------------------------------------------------------------------------- index


def test_revocation_takes_effect_on_the_next_decision() -> None:
    raw = consent(prov("permit", purposes=("HRESCH",)), cid="r1", scope="research")
    index = ConsentIndex.from_consents([raw])
    cohort = ["p1", "p2"]
    assert index.permitted_patients(cohort, "HRESCH", "Organization/uni", at=AT) == {"p1"}
    assert index.coverage("p1", "HRESCH", "Organization/uni", at=AT) == "all"
    index.update({**raw, "status": "inactive"})
    assert index.permitted_patients(cohort, "HRESCH", "Organization/uni", at=AT) == set()
    assert index.coverage("p1", "HRESCH", "Organization/uni", at=AT) == "none"
    assert not index.decide(req()).permit


def test_a_new_deny_and_a_removal_take_effect_at_once() -> None:
    index = ConsentIndex.from_consents([research_permit(cid="r1")])
    assert index.partition(["p1"], "HRESCH", "Organization/uni", at=AT).all == {"p1"}
    index.update(parsed(prov("deny", purposes=("HRESCH",)), cid="r2", scope="research"))
    assert index.partition(["p1"], "HRESCH", "Organization/uni", at=AT).none == {"p1"}
    index.remove("r2")
    assert index.coverage("p1", "HRESCH", "Organization/uni", at=AT) == "all"
    index.remove("r1")
    assert index.coverage("p1", "HRESCH", "Organization/uni", at=AT) == "none"
    assert len(index) == 0


def test_index_keeps_the_last_version_of_a_consent() -> None:
    first = research_permit(cid="r1")
    index = ConsentIndex.from_consents([first, replace(first, status="inactive")])
    assert len(index) == 1 and index.consents_for("p1") == ()
    assert "r1" in index and index.patients() == frozenset()
    with pytest.raises(ConsentError, match="id"):
        index.update(replace(first, id=None))


def test_cached_answers_expire_with_the_consent_period() -> None:
    c = parsed(prov("permit", purposes=("HRESCH",), period=("2025-01-01", "2025-06-30")),
               scope="research")
    index = ConsentIndex.from_consents([c])
    for at, expected in (("2025-03-01", {"p1"}), ("2025-07-01", set()),
                         ("2025-03-02", {"p1"}), ("2024-01-01", set())):
        assert index.permitted_patients(["p1"], "HRESCH", "Organization/uni",
                                        at=us(at)) == expected


def test_index_partition_payers_and_mask() -> None:
    tpo = parsed(prov("permit", purposes=("HPAYMT",), nested=(prov("deny", labels=("HIV",)),)))
    index = ConsentIndex.from_consents([tpo])
    payers = {"p1": {"Organization/ins"}, "p2": {"Organization/ins"}, "p3": set()}
    split = index.partition(["p1", "p2", "p3"], "HPAYMT", "Organization/ins", payers=payers,
                            at=AT)
    assert (split.all, split.partial, split.none) == ({"p2"}, {"p1"}, {"p3"})
    assert index.permitted_mask(["p3", "p2", "p1"], "HPAYMT", "Organization/ins",
                                payers=payers, at=AT) == [False, True, False]
    assert index.partition(["p1"], "PUBHLTH", "Organization/ph", at=AT).all == {"p1"}
    with pytest.raises(TypeError):
        index.permitted_patients(["p1"], "TREAT", None, colour="blue")


# --------------------------------------------------------------------------- labels


def _coded(rtype: str, key: str, system: str, code: str) -> dict[str, Any]:
    return {"resourceType": rtype, "id": "x", key: {"coding": [{"system": system,
                                                                 "code": code}]}}


SCT, ICD, LOINC = ("http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm",
                   "http://loinc.org")


@pytest.mark.parametrize(("resource", "expected"), [
    (_coded("Condition", "code", SCT, "35489007"), {"PSY"}),
    (_coded("Condition", "code", ICD, "F32.A"), {"PSY"}),
    (_coded("Condition", "code", ICD, "F48.9"), {"PSY"}),
    (_coded("Condition", "code", ICD, "F10.20"), {"ETH"}),
    (_coded("Condition", "code", SCT, "7200002"), {"ETH"}),
    (_coded("Condition", "code", ICD, "B20"), {"HIV"}),
    (_coded("Condition", "code", ICD, "Z21"), {"HIV"}),
    (_coded("Condition", "code", SCT, "86406008"), {"HIV"}),
    (_coded("Condition", "code", ICD, "A74.9"), {"STD"}),
    (_coded("Condition", "code", ICD, "T74.11XA"), {"SDV"}),
    (_coded("Condition", "code", ICD, "Z30.011"), {"SEX"}),
    (_coded("Condition", "code", ICD, "I10"), set()),
    (_coded("Condition", "code", ICD, "F01.50"), set()),
    (_coded("Observation", "code", LOINC, "44261-6"), {"PSY"}),
    (_coded("Observation", "valueCodeableConcept", SCT, "35489007"), {"PSY"}),
    (_coded("DiagnosticReport", "code", LOINC, "81247-9"), {"GDIS"}),
    (_coded("Procedure", "code", SCT, "171207006"), {"PSY"}),
    (_coded("MedicationRequest", "medicationCodeableConcept",
            "http://www.nlm.nih.gov/research/umls/rxnorm", "1819"), {"ETH"}),
    ({"resourceType": "Observation", "component": [{"valueCodeableConcept": {"coding": [
        {"system": "http://www.genenames.org/geneId", "code": "HGNC:1100"}]}}]}, {"GDIS"}),
    ({"resourceType": "QuestionnaireResponse",
      "questionnaire": "urn:healthmesh:questionnaire:phq-9|1"}, {"PSY"}),
    ({"resourceType": "Observation", "meta": {"security": [
        {"system": CS + "v3-Confidentiality", "code": "R"}]}}, {"R"}),
    ({"resourceType": "Observation", "code": "odd", "note": [None, 3, "x"]}, set()),
])
def test_labels_for(resource: dict[str, Any], expected: set[str]) -> None:
    assert labels_for(resource) == expected


def test_request_for_resource_fills_the_data_attributes() -> None:
    obs = {"resourceType": "Observation", "id": "o1",
           "code": {"coding": [{"system": LOINC, "code": "44261-6"}]},
           "subject": {"reference": "Patient/p1"},
           "performer": [{"reference": "http://x/fhir/Practitioner/dr/_history/2"}],
           "effectivePeriod": {"start": "2020-05-01"}}
    filled = request_for_resource(req(node_org="Organization/node"), obs)
    assert filled.resource_type == "Observation" and filled.resource_ref == "Observation/o1"
    assert filled.security_labels == {"PSY"} and filled.data_time == us("2020-05-01")
    assert filled.codes == {"http://loinc.org|44261-6"}
    assert filled.references == {"Patient/p1", "Practitioner/dr"}
    assert filled.sources == {"Practitioner/dr", "Organization/node"}
    assert data_time({"resourceType": "Patient"}) is None
    assert data_time({"meta": {"lastUpdated": "2021-01-01T00:00:00Z"}}) == us("2021-01-01")


# --------------------------------------------------------------------------- synthetic data


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Resources of a small synthetic population, by resource type."""
    from healthmesh.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, patients=40, sites=("clinic", "hospital", "lab"), seed=11)
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("*/*.ndjson")):
        for line in path.read_text().splitlines():
            resource = json.loads(line)
            found.setdefault(resource["resourceType"], []).append(resource)
    return found


def test_every_synthetic_consent_parses_and_reads(synth: dict[str, list[Any]]) -> None:
    consents = [parse_consent(c) for c in synth["Consent"]]
    assert len(consents) > 10 and {c.scope for c in consents} == {"research", "patient-privacy"}
    assert any(c.provision.provisions for c in consents)
    for c in consents:
        sentences = describe(c)
        assert sentences and all(s.endswith(".") for s in sentences)


def test_code_lists_find_the_generators_labels(synth: dict[str, list[Any]]) -> None:
    labelled = 0
    for resources in synth.values():
        for resource in resources:
            meta = {s["code"] for s in resource.get("meta", {}).get("security", [])}
            assert meta <= labels_for(resource)
            if meta:
                stripped = {k: v for k, v in resource.items() if k != "meta"}
                assert meta <= labels_for(stripped), resource
                labelled += 1
    assert labelled > 10


def test_index_of_synthetic_consents_agrees_with_decide(synth: dict[str, list[Any]]) -> None:
    index = ConsentIndex.from_consents(synth["Consent"])
    patients = sorted({p["id"] for p in synth["Patient"]})
    for purpose in ("HRESCH", "TREAT", "HOPERAT"):
        allowed = index.permitted_patients(patients, purpose, "Organization/uni", at=AT)
        for patient in patients:
            request = req(purpose, patient_id=patient)
            assert (patient in allowed) == decide(request, index.consents_for(patient),
                                                  POLICY).permit


# --------------------------------------------------------------------------- parse errors


def _without(key: str) -> dict[str, Any]:
    raw = consent(prov("permit"))
    del raw[key]
    return raw


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"resourceType": "Patient"}, "not a Consent"),
    (_without("status"), "Consent.status"),
    ({**consent(prov("permit")), "status": "final"}, "Consent.status"),
    (_without("scope"), "Consent.scope"),
    ({**consent(prov("permit")), "scope": {"text": "privacy"}}, "consentscope"),
    (_without("patient"), "Consent.patient"),
    ({**consent(prov("permit")), "patient": {"reference": "Group/g"}}, "a Patient"),
    ({**consent(prov("permit")), "patient": {"reference": "urn:uuid:1234"}}, "literal"),
    (consent(None), "no type"),
    (consent(prov(None)), "no type"),
    (consent(prov("maybe")), "'permit' or 'deny'"),
    (consent(prov("permit", period=("2025-02-01", "2025-01-01"))), "ends before"),
    (consent(prov("permit", period=("2025-13-01", None))), "period.start"),
    (consent({"type": "permit", "action": [{"coding": [{"code": "sell"}]}]}), "action"),
    (consent({"type": "permit", "actor": [{"role": {"text": "x"}}]}), "reference"),
    (consent(prov("deny", actors=("Organization/x",), role="SPRF")), "actor role"),
    (consent({"type": "deny", "class": [{"system": "urn:ietf:bcp:13",
                                          "code": "application/pdf"}]}), "resource type"),
    (consent(prov("permit", classes=("Observaton",))), "not a FHIR R4 resource type"),
    (consent({"type": "deny", "code": [{"coding": [{"code": "123"}]}]}), "no system"),
    (consent({"type": "permit", "data": [{"meaning": "all",
                                           "reference": {"reference": "Task/1"}}]}), "meaning"),
    (consent({"type": "permit", "modifierExtension": [{"url": "x"}]}), "modifierExtension"),
    (consent({"type": "permit", "provision": {"type": "deny"}}), "JSON array"),
    (consent({"type": "permit", "purpose": [{"system": "x"}]}), "no code"),
])
def test_parse_errors(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConsentError) as caught:
        parse_consent(raw)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, HealthmeshError) and isinstance(caught.value, FhirError)
    assert caught.value.status == 400
    assert caught.value.outcome()["issue"][0]["diagnostics"] == str(caught.value)


def test_deep_nesting_is_refused() -> None:
    node: dict[str, Any] = {"type": "permit"}
    for _ in range(20):
        node = {"type": "permit", "provision": [node]}
    with pytest.raises(ConsentError, match="deeper"):
        parse_consent(consent(node))


def test_unverifiable_permit_never_applies() -> None:
    c = parsed({"type": "permit", "purpose": [{"system": CS + "v3-ActReason",
                                                "code": "HRESCH"}],
                "class": [{"system": "urn:ietf:bcp:13", "code": "application/pdf"}]},
               scope="research")
    assert c.provision.unenforceable and decide(req(), [c], POLICY).rule == "default:HRESCH"
    assert any("cannot be checked" in s for s in describe(c))


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="FHIR R4 examples not available")
def test_official_r4_examples_parse() -> None:
    files = sorted(EXAMPLES.glob("Consent-*.json"))
    assert len(files) >= 10
    found = {f.stem: parse_consent(json.loads(f.read_text())) for f in files}
    pkb = found["Consent-consent-example-pkb"]
    assert pkb.provision.type == "deny"
    assert {p.type for p in pkb.provision.provisions} == {"permit"}
    org = req("TREAT", patient_id="example", requester="Organization/f001")
    assert decide(replace(org, security_labels=frozenset({"PSY"})), [pkb], POLICY).permit
    restricted = decide(replace(org, security_labels=frozenset({"R"})), [pkb], POLICY)
    assert not restricted.permit and restricted.rule == "Consent/consent-example-pkb#provision"
    other = replace(org, requester="Organization/x", security_labels=frozenset({"R"}))
    assert decide(other, [pkb], POLICY).rule == "default:TREAT"


# --------------------------------------------------------------------------- policy


def test_default_policy_as_data() -> None:
    data = POLICY.as_dict()
    codes = [p["code"] for p in data["purposes"]]
    assert codes == ["TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PUBHLTH", "HRESCH", "PATRQT"]
    assert len(POLICY.describe()) == 7 and POLICY.lineage("BTG") == ("BTG", "ETREAT", "TREAT")


def test_node_override_merges_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[purpose.HRESCH]\ndefault = "permit"\n\n[purpose.LOCALQI]\n'
                    'parent = "HOPERAT"\nlabel = "quality"\ndefault = "deny"\n'
                    'overridable = true\nrecipients = "node"\nexplanation = "Local QI."\n')
    policy = load_policy(path)
    assert policy.rules["HRESCH"].default == "permit"
    assert policy.rules["HRESCH"].label == "research"
    assert decide(req(), [], policy).permit
    assert policy.rule_for("LOCALQI") is policy.rules["LOCALQI"]
    assert policy.sources[-1] == str(path)


@pytest.mark.parametrize(("text", "fragment"), [
    ("colour = 1\n", "unknown key 'colour'"),
    ("[purpose.HRESCH]\ndefault = \"maybe\"\n", "purpose.HRESCH.default"),
    ("[purpose.HRESCH]\nrecipients = \"friends\"\n", "purpose.HRESCH.recipients"),
    ("[purpose.HRESCH]\noverridable = \"yes\"\n", "purpose.HRESCH.overridable"),
    ("[purpose.HRESCH]\nwhen = 1\n", "purpose.HRESCH.when"),
    ("[purpose.NEWTHING]\nlabel = \"x\"\ndefault = \"deny\"\noverridable = true\n"
     "recipients = \"any\"\nexplanation = \"x\"\n", "purpose.NEWTHING"),
    ("[purpose.NEWTHING]\ndefault = \"deny\"\n", "purpose.NEWTHING.label"),
    ("[purpose.hresch]\n", "not an ActReason code"),
    ("[purpose\n", "not valid TOML"),
])
def test_policy_errors_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="policy") as caught:
        load_policy(path)
    assert fragment in str(caught.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml"):
        load_policy(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- plain language


def test_describe_research_consent_with_exception() -> None:
    c = parsed(prov("permit", purposes=("HRESCH",), period=(None, "2026-12-31"),
                    nested=(prov("deny", labels=("PSY",)),)), scope="research",
               date="2025-03-04")
    assert describe(c) == [
        "You allow research use of your data, except mental-health records, until 31 Dec 2026.",
        "You gave this consent on 4 Mar 2025.",
    ]


def test_describe_exception_for_an_organisation_and_status() -> None:
    raw = consent(prov("deny", purposes=("HRESCH",),
                       nested=(prov("permit", actors=("Organization/uni",)),)),
                  scope="research", status="inactive")
    assert describe(raw)[:3] == [
        "This consent has been withdrawn or has ended, so it no longer applies.",
        "You do not allow research use of your data.",
        "As an exception, you allow research use of your data by Organization/uni.",
    ]


# --------------------------------------------------------------------------- properties

PURPOSES = ("TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PUBHLTH", "HRESCH", "CLINTRCH", "PATRQT")
LABELS = ("PSY", "HIV", "GDIS", "R", "V", "PSYTHPN")
ORGS = ("Organization/a", "Organization/b", "Organization/node")
DATES = (None, "2020-01-01", "2024-06-30", "2026-01-01")


@st.composite
def provisions(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    period = draw(st.sampled_from([None, ("2020-01-01", None), (None, "2024-12-31"),
                                   ("2025-01-01", "2025-12-31")]))
    data_period = draw(st.sampled_from([None, ("2019-01-01", "2019-12-31")]))
    nested = () if depth >= 2 else tuple(draw(st.lists(provisions(depth + 1),
                                                       max_size=2 - depth)))
    pick = st.lists
    return prov(draw(st.sampled_from(["permit", "deny"])),
                purposes=tuple(draw(pick(st.sampled_from(PURPOSES), max_size=2, unique=True))),
                labels=tuple(draw(pick(st.sampled_from(LABELS), max_size=1))),
                actors=tuple(draw(pick(st.sampled_from(ORGS), max_size=1))),
                actions=tuple(draw(pick(st.sampled_from(("access", "disclose")), max_size=1))),
                classes=tuple(draw(pick(st.sampled_from(("Observation", "Condition")),
                                        max_size=1))),
                period=period, data_period=data_period, nested=nested)


@st.composite
def consent_lists(draw: st.DrawFn, patient: str = "p1", prefix: str = "c") -> list[ParsedConsent]:
    count = draw(st.integers(0, 3))
    out = []
    for i in range(count):
        out.append(parse_consent(consent(
            draw(provisions()), cid=f"{prefix}{patient}-{i}", patient=patient,
            scope=draw(st.sampled_from(["patient-privacy", "research"])),
            status=draw(st.sampled_from(["active", "active", "inactive"])),
            date=f"202{draw(st.integers(0, 4))}-01-01")))
    return out


@st.composite
def requests(draw: st.DrawFn, concrete: bool = False) -> AccessRequest:
    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(strategy if concrete else st.one_of(st.none(), strategy))

    return req(
        draw(st.sampled_from((*PURPOSES, None))),
        requester=draw(st.sampled_from(ORGS)) if concrete else draw(
            st.sampled_from((*ORGS, None))),
        requester_is_patient=draw(st.booleans()),
        action=draw(st.sampled_from(("access", "disclose", "use"))),
        resource_type=maybe(st.sampled_from(("Observation", "Condition"))),
        security_labels=maybe(st.frozensets(st.sampled_from(LABELS), max_size=2)),
        data_time=maybe(st.sampled_from([us(d) for d in ("2019-06-01", "2023-01-01")])),
        at=us(draw(st.sampled_from(("2019-06-01", "2024-12-31", "2025-06-01", "2027-01-01")))),
        patient_payers=draw(st.sampled_from([frozenset(), frozenset({"Organization/a"})])),
        node_org="Organization/node",
    )


FAST = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(consent_lists(), requests(), st.randoms(use_true_random=False))
def test_decide_is_deterministic(consents: list[ParsedConsent], request: AccessRequest,
                                 rnd: random.Random) -> None:
    first = decide(request, consents, POLICY)
    shuffled = list(consents)
    rnd.shuffle(shuffled)
    again = decide(request, shuffled, POLICY)
    assert first == again and first.reason == again.reason


@FAST
@given(consent_lists(), requests(), provisions())
def test_adding_a_deny_never_turns_deny_into_permit(consents: list[ParsedConsent],
                                                    request: AccessRequest,
                                                    extra: dict[str, Any]) -> None:
    deny_only = json.loads(json.dumps(extra).replace('"permit"', '"deny"'))
    added = parse_consent(consent(deny_only, cid="extra"))
    before = decide(request, consents, POLICY)
    if not before.permit:
        assert not decide(request, [*consents, added], POLICY).permit
    if not before.permit and before.consent_id is not None:  # any consent, even permits
        anything = parse_consent(consent(extra, cid="extra2"))
        assert not decide(request, [*consents, anything], POLICY).permit


@FAST
@given(consent_lists(), requests())
def test_no_active_consent_means_exactly_the_default(consents: list[ParsedConsent],
                                                     request: AccessRequest) -> None:
    inactive = [replace(c, status="inactive") for c in consents]
    decision = decide(request, inactive, POLICY)
    assert decision == decide(request, [], POLICY) and decision.consent_id is None
    purpose = request.purpose or ("PATRQT" if request.requester_is_patient else None)
    rule = POLICY.rule_for(purpose) if purpose else None
    if rule is not None and decision.rule.startswith("default:"):
        assert decision.permit is rule.permits_by_default


@FAST
@given(consent_lists(), requests(), requests(concrete=True))
def test_coverage_bounds_every_concrete_decision(consents: list[ParsedConsent],
                                                 general: AccessRequest,
                                                 concrete: AccessRequest) -> None:
    cov = coverage(general, consents, POLICY)
    assert (cov == "all") == decide(general, consents, POLICY).permit
    specific = replace(concrete, **{k: getattr(general, k) for k in (
        "purpose", "requester", "requester_is_patient", "action", "at", "patient_payers")})
    for key in ("resource_type", "security_labels", "data_time"):
        if getattr(general, key) is not None:
            specific = replace(specific, **{key: getattr(general, key)})
    if general.requester is None:
        return
    if cov == "all":
        assert decide(specific, consents, POLICY).permit
    if cov == "none":
        assert not decide(specific, consents, POLICY).permit


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(consent_lists(), min_size=1, max_size=6), requests(), st.data())
def test_index_agrees_with_decide_for_every_patient(per_patient: list[list[ParsedConsent]],
                                                    request: AccessRequest,
                                                    data: st.DataObject) -> None:
    patients = [f"p{i}" for i in range(len(per_patient) + 2)]  # two without consents
    request = replace(request, resource_type=None, security_labels=None, data_time=None)
    consents = [replace(c, id=f"{c.id}-{i}", patient_id=f"p{i}")
                for i, group in enumerate(per_patient) for c in group]
    index = ConsentIndex.from_consents(consents)
    payers = {p: set(request.patient_payers) for p in patients}
    options = {"at": request.at, "action": request.action, "node_org": request.node_org,
               "requester_is_patient": request.requester_is_patient}
    for _ in range(2):  # before and after a random change to one patient's consents
        allowed = index.permitted_patients(patients, request.purpose, request.requester,
                                           payers=payers, **options)
        split = index.partition(patients, request.purpose, request.requester,
                                payers=payers, **options)
        for patient in patients:
            mine = replace(request, patient_id=patient)
            theirs = index.consents_for(patient)
            assert (patient in allowed) == decide(mine, theirs, POLICY).permit
            assert patient in getattr(split, coverage(mine, theirs, POLICY))
        if consents:
            target = data.draw(st.sampled_from(consents))
            index.update(replace(target, status=data.draw(st.sampled_from(
                ["inactive", "active"]))))
