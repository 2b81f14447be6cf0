"""The egress gate: consent applied on every read path, no leaks, everything audited."""

from __future__ import annotations

from typing import Any

import pytest

from healthmesh.errors import FhirError, NotFound
from healthmesh.gate.requester import Requester
from healthmesh.node import Node

V3_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
V3_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RESEARCHER = Requester("Organization/uni-research", "HRESCH")
CLINICIAN = Requester("Organization/city-clinic", "TREAT")


def consent(cid: str, patient: str, purpose: str, kind: str = "permit",
            nested_deny_label: str | None = None, status: str = "active",
            recipient: str | None = None) -> dict[str, Any]:
    scope = "research" if purpose == "HRESCH" else "patient-privacy"
    provision: dict[str, Any] = {"type": kind,
                                 "purpose": [{"system": V3_REASON, "code": purpose}]}
    if nested_deny_label:
        provision["provision"] = [{"type": "deny", "securityLabel": [
            {"system": V3_CODE, "code": nested_deny_label}]}]
    if recipient:
        provision["actor"] = [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP"}]}, "reference": {"reference": recipient}}]
    return {
        "resourceType": "Consent", "id": cid, "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": scope}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "policyRule": {"coding": [{"system": V3_CODE,
                                   "code": "OPTIN" if kind == "permit" else "OPTOUT"}]},
        "provision": provision,
    }


def condition(cid: str, patient: str, snomed: str, text: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": snomed}],
                     "text": text}}


def obs(oid: str, patient: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/e-{patient}"},
            "effectiveDateTime": "2024-05-01"}


@pytest.fixture
def node(make_node: Any) -> Node:
    n: Node = make_node(organization="Organization/city-clinic")
    resources: list[dict[str, Any]] = [{"resourceType": "Organization", "id": "city-clinic"}]
    for p in ("p1", "p2", "p3", "p4"):
        resources += [
            {"resourceType": "Patient", "id": p, "gender": "female"},
            {"resourceType": "Encounter", "id": f"e-{p}", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                       "code": "AMB"}, "subject": {"reference": f"Patient/{p}"}},
            obs(f"o-{p}", p),
            condition(f"dep-{p}", p, "35489007", "Depression"),  # mental health (PSY)
            condition(f"htn-{p}", p, "38341003", "Hypertension"),
        ]
    resources += [
        consent("c1", "p1", "HRESCH"),  # research opt-in
        consent("c2", "p2", "HRESCH", nested_deny_label="PSY"),  # opt-in, not mental health
        consent("c4", "p4", "TREAT", kind="deny"),  # treatment opt-out
    ]
    for r in resources:
        n.fhir.validate(r)
    n.store.put_many(resources)
    return n


def patients_of(items: list[Any]) -> set[str]:
    return {s.patient for s in items if s.patient}


def ids(items: list[Any]) -> set[str]:
    return {f"{s.type}/{s.id}" for s in items}


def search(node: Node, who: Requester, rtype: str, *params: tuple[str, str]) -> Any:
    repo = node.gate.for_request(who)
    query = repo.parse(rtype, [*params, ("_count", "100"), ("_total", "accurate")], strict=True)
    return repo.search(query)


def test_research_sees_only_opted_in_data(node: Node) -> None:
    page = search(node, RESEARCHER, "Condition")
    assert ids(page.matches) == {"Condition/dep-p1", "Condition/htn-p1", "Condition/htn-p2"}
    assert page.total == 3
    count = search(node, RESEARCHER, "Condition", ("_summary", "count"))
    assert count.total == 3 and count.matches == []


def test_treatment_default_permits_except_opt_out(node: Node) -> None:
    page = search(node, CLINICIAN, "Observation")
    assert patients_of(page.matches) == {"p1", "p2", "p3"}
    with pytest.raises(NotFound):
        node.gate.for_request(CLINICIAN).read("Observation", "o-p4")
    assert node.gate.for_request(CLINICIAN).read("Observation", "o-p3").id == "o-p3"


def test_no_purpose_is_refused(node: Node) -> None:
    anonymous = Requester("Organization/somebody", None)
    repo = node.gate.for_request(anonymous)
    for call in (lambda: repo.read("Patient", "p1"),
                 lambda: repo.search(repo.parse("Patient", [], strict=True)),
                 lambda: repo.everything("p1")):
        with pytest.raises(FhirError) as info:
            call()
        assert info.value.status == 403


def test_patient_reads_own_data_only(node: Node) -> None:
    me = Requester("Patient/p4", "PATRQT", patient="p4")
    page = search(node, me, "Observation")
    assert patients_of(page.matches) == {"p4"}
    with pytest.raises(NotFound):
        node.gate.for_request(me).read("Observation", "o-p1")


def test_nested_deny_hides_mental_health_per_record(node: Node) -> None:
    repo = node.gate.for_request(RESEARCHER)
    assert repo.read("Condition", "htn-p2").id == "htn-p2"
    with pytest.raises(NotFound):
        repo.read("Condition", "dep-p2")
    everything = ids(repo.everything("p2"))
    assert "Condition/htn-p2" in everything and "Condition/dep-p2" not in everything


def test_includes_and_revincludes_do_not_leak(node: Node) -> None:
    page = search(node, RESEARCHER, "Observation", ("_include", "Observation:subject"),
                  ("_include", "Observation:encounter"))
    assert patients_of(page.matches) | patients_of(page.included) == {"p1", "p2"}
    page = search(node, RESEARCHER, "Patient", ("_revinclude", "Condition:subject"))
    assert patients_of(page.included) == {"p1", "p2"}
    assert "Condition/dep-p2" not in ids(page.included)


def test_everything_of_a_non_consenting_patient_is_refused(node: Node) -> None:
    with pytest.raises(NotFound):
        node.gate.for_request(RESEARCHER).everything("p3")


def test_history_is_filtered(node: Node) -> None:
    repo = node.gate.for_request(RESEARCHER)
    entries = repo.history("Condition", None, count=100, offset=0, since=None)
    assert patients_of([e.stored for e in entries if e.stored.content]) <= {"p1", "p2"}
    assert "Condition/dep-p2" not in ids([e.stored for e in entries])


def test_revocation_takes_effect_at_once_even_mid_paging(node: Node) -> None:
    repo = node.gate.for_request(RESEARCHER)
    query = repo.parse("Condition", [("_count", "1")], strict=True)
    first = repo.search(query)
    assert first.next_cursor
    revoked = consent("c1", "p1", "HRESCH", status="inactive")
    node.fhir.update("Consent", "c1", revoked)
    rest: list[Any] = []
    cursor = first.next_cursor
    while cursor:
        page = node.gate.for_request(RESEARCHER).search(
            repo.parse("Condition", [("_count", "1")], strict=True), cursor)
        rest += page.matches
        cursor = page.next_cursor
    assert "p1" not in patients_of(rest)
    assert search(node, RESEARCHER, "Condition").total == 1  # htn-p2 only


def test_new_opt_in_takes_effect_at_once(node: Node) -> None:
    assert search(node, RESEARCHER, "Observation").total == 2
    node.fhir.create("Consent", {k: v for k, v in consent("x", "p3", "HRESCH").items()
                                 if k != "id"})
    assert search(node, RESEARCHER, "Observation").total == 3


def test_invalid_consent_is_refused_at_write(node: Node) -> None:
    bad = consent("bad", "p3", "HRESCH")
    bad["patient"] = {"display": "somebody"}  # no reference: cannot be enforced
    with pytest.raises(FhirError):
        node.fhir.update("Consent", "bad", bad)


def test_every_access_is_audited_with_its_decision(node: Node) -> None:
    repo = node.gate.for_request(RESEARCHER)
    repo.read("Condition", "htn-p1")
    with pytest.raises(NotFound):
        repo.read("Condition", "htn-p3")
    entries = node.audit.entries(patient="p3", limit=10)
    denied = [e.record for e in entries if e.record.decision == "deny"]
    assert denied and denied[0].actor == "Organization/uni-research"
    assert denied[0].purpose == "HRESCH" and denied[0].resources == ("Condition/htn-p3",)
    permitted = [e.record for e in node.audit.entries(patient="p1", limit=10)]
    assert any(r.decision == "permit" and r.action == "read" for r in permitted)
    assert node.audit.verify().ok


def test_first_opt_out_on_a_node_takes_effect_at_once(make_node: Any) -> None:
    """With nobody opted out, treatment reads need no filter; the first opt-out adds it."""
    n: Node = make_node("fresh")
    n.store.put_many([{"resourceType": "Patient", "id": p} for p in ("a", "b")]
                     + [obs("oa", "a"), obs("ob", "b")])
    assert search(n, CLINICIAN, "Observation", ("_summary", "count")).total == 2
    n.fhir.update("Consent", "out", consent("out", "a", "TREAT", kind="deny"))
    assert search(n, CLINICIAN, "Observation", ("_summary", "count")).total == 1
    assert patients_of(search(n, CLINICIAN, "Observation").matches) == {"b"}


def test_a_bundle_cannot_reveal_a_hidden_match_through_if_none_exist(node: Node) -> None:
    """A conditional create that matches a record the caller may not see must not name it."""
    from tests.conftest import bearer, run_asgi

    research = bearer(node, "Organization/uni-research", "HRESCH")
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{
        "resource": {"resourceType": "Patient"},
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": "_id=p3"}}]}

    async def call(client: Any) -> Any:
        return (await client.post("/fhir", json=bundle, headers=research)).json()

    entry = run_asgi(node, call)["entry"][0]
    assert entry["response"]["status"].startswith("404")  # as for a read of it
    assert "location" not in entry["response"]  # the hidden record is not named


def test_aggregate_population_follows_consents_and_data(node: Node) -> None:
    def population(types: list[str]) -> Any:
        return node.gate.for_request(RESEARCHER).population(types)

    first = population(["Condition"])
    assert sorted(first.allowed) == ["p1", "p2"]  # research: opted-in patients only
    assert first.denied == ["Condition/dep-p2"]  # p2's mental-health record is withheld
    assert population(["Observation"]).denied == []  # only the types the aggregate reads
    assert population(["Condition"]) is first  # decided once while nothing changes

    # a new sensitive record of a partially consenting patient is withheld at once
    new = condition("dep2-p2", "p2", "35489007", "Depression")
    node.fhir.validate(new)
    node.store.put_many([new])
    assert sorted(population(["Condition"]).denied) == ["Condition/dep-p2", "Condition/dep2-p2"]

    # a revoked opt-in removes the patient from the next aggregate
    revoked = consent("c1", "p1", "HRESCH", status="inactive")
    node.fhir.validate(revoked)
    node.store.put_many([revoked])
    assert population(["Condition"]).allowed == ["p2"]


def test_aggregate_population_follows_the_clock_of_timed_consents(node: Node) -> None:
    import time
    from datetime import UTC, datetime, timedelta

    ends = datetime.now(UTC) + timedelta(seconds=2)
    timed = consent("c1", "p1", "HRESCH")
    timed["provision"]["period"] = {"start": "2020-01-01",
                                    "end": ends.isoformat(timespec="seconds")}
    node.fhir.validate(timed)
    node.store.put_many([timed])
    repo = node.gate.for_request(RESEARCHER)
    assert sorted(repo.population(["Condition"]).allowed) == ["p1", "p2"]
    time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 1.1)
    # no write happened: the period's end alone must take p1 out of the next aggregate
    assert node.gate.for_request(RESEARCHER).population(["Condition"]).allowed == ["p2"]
