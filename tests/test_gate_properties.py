"""Property: for random consents and requests, no path returns a record the consent
model does not permit, and searches return exactly the permitted records."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from healthmesh.consent.decide import decide
from healthmesh.consent.parse import parse_consent
from healthmesh.consent.records import request_for_resource
from healthmesh.errors import FhirError
from healthmesh.gate.requester import Requester
from healthmesh.node import init_node, open_node
from tests.test_gate import condition, consent, obs

PATIENTS = ("p1", "p2", "p3")
PURPOSES = ("TREAT", "HRESCH", "PUBHLTH", "HPAYMT", "HOPERAT")
ORGS = ("Organization/uni-research", "Organization/city-clinic", "Organization/insurer")
LABELS = (None, "PSY")

# consents mostly about the purposes asked for, so that their interplay is exercised
consent_spec = st.tuples(
    st.sampled_from(PATIENTS), st.sampled_from(("TREAT", "HRESCH", "HRESCH", "HPAYMT")),
    st.sampled_from(("permit", "deny")),
    st.sampled_from(LABELS), st.sampled_from(("active", "inactive")),
    st.sampled_from((None, *ORGS)),
)


def build(folder: Path, specs: list[tuple[Any, ...]]) -> tuple[Any, list[dict[str, Any]]]:
    node = open_node(init_node(folder), {"organization": "Organization/city-clinic"})
    data: list[dict[str, Any]] = [{"resourceType": "Organization", "id": "insurer"}]
    for p in PATIENTS:
        data += [{"resourceType": "Patient", "id": p}, obs(f"o-{p}", p),
                 condition(f"dep-{p}", p, "35489007", "Depression"),
                 {"resourceType": "Coverage", "id": f"cov-{p}", "status": "active",
                  "beneficiary": {"reference": f"Patient/{p}"},
                  "payor": [{"reference": "Organization/insurer"}]}]
    consents = [consent(f"c{i}", p, purpose, kind, label, status, org)
                for i, (p, purpose, kind, label, status, org) in enumerate(specs)]
    node.store.put_many(data + consents)
    return node, data + consents


def oracle(node: Any, requester: Requester, resource: dict[str, Any],
           consents: list[dict[str, Any]]) -> bool:
    """The consent model's own answer, from the generated Consents (not the gate's tables)."""
    from healthmesh.fhir.search_params import patient_compartment

    patient = patient_compartment(resource)
    if patient is None:
        return True
    mine = f"Patient/{patient}"
    parsed = [parse_consent(c) for c in consents if c["patient"]["reference"] == mine]
    base = node.gate.scopes.request(requester, patient)
    return decide(request_for_resource(base, resource), parsed, node.policy).permit


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(consent_spec, max_size=6),
       purpose=st.sampled_from(("TREAT", "HRESCH", "HRESCH", *PURPOSES)),
       actor=st.sampled_from(ORGS))
@example(specs=[("p1", "HRESCH", "permit", "PSY", "active", None)], purpose="HRESCH",
         actor="Organization/uni-research")  # a research opt-in except mental health
@example(specs=[("p2", "TREAT", "deny", None, "active", "Organization/city-clinic")],
         purpose="TREAT", actor="Organization/city-clinic")  # opt-out for one provider
def test_no_path_leaks_and_search_is_complete(
    specs: list[tuple[Any, ...]], purpose: str, actor: str
) -> None:
    folder = Path(tempfile.mkdtemp())
    node, everything = build(folder / "node", specs)
    try:
        requester = Requester(actor, purpose)
        consents = [r for r in everything if r["resourceType"] == "Consent"]
        permitted = {f"{r['resourceType']}/{r['id']}" for r in everything
                     if r["resourceType"] in ("Observation", "Condition", "Patient")
                     and oracle(node, requester, r, consents)}
        repo = node.gate.for_request(requester)
        seen: set[str] = set()
        for rtype in ("Observation", "Condition", "Patient"):
            query = repo.parse(rtype, [("_count", "100"), ("_total", "accurate")], strict=True)
            page = repo.search(query)
            found = {f"{s.type}/{s.id}" for s in page.matches}
            assert page.total == len(found)
            seen |= found
        assert seen == permitted  # nothing leaks, nothing permitted is hidden
        for ref in [f"{r['resourceType']}/{r['id']}" for r in everything]:
            rtype, rid = ref.split("/")
            if rtype not in ("Observation", "Condition", "Patient"):
                continue
            try:
                node.gate.for_request(requester).read(rtype, rid)
                assert ref in permitted
            except FhirError:
                assert ref not in permitted
        for p in PATIENTS:
            try:
                got = {f"{s.type}/{s.id}" for s in repo.everything(p)}
            except FhirError:
                got = set()
            assert {g for g in got if not g.startswith(("Organization", "Coverage", "Consent"))} \
                <= permitted
        query = repo.parse("Observation", [("_include", "Observation:subject")], strict=True)
        page = repo.search(query)
        assert {f"{s.type}/{s.id}" for s in page.included} <= permitted
    finally:
        node.close()
        shutil.rmtree(folder, ignore_errors=True)
