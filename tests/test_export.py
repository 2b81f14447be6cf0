"""FHIR Bulk Data $export through the egress gate (async kick-off, polling, NDJSON files)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from healthmesh.node import Node
from tests.conftest import bearer, run_asgi
from tests.test_gate import node as gate_node  # noqa: F401  (the same consented data)

ASYNC = {"Prefer": "respond-async"}


def research_headers(node: Node) -> dict[str, str]:
    return {**bearer(node, "Organization/uni-research", "HRESCH", "system/*.rs"), **ASYNC}


def clinic_headers(node: Node) -> dict[str, str]:
    return {**bearer(node, "Organization/city-clinic", "TREAT", "system/*.rs"), **ASYNC}


def run(node: Node, calls: Any) -> Any:
    return run_asgi(node, calls)


async def export(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    kick = await client.get(url, headers=headers)
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["content-location"]
    for _ in range(200):
        status = await client.get(status_url, headers=headers)
        if status.status_code == 200:
            manifest: dict[str, Any] = status.json()
            files = {}
            for item in manifest["output"]:
                body = await client.get(item["url"], headers=headers)
                assert body.headers["content-type"].startswith("application/fhir+ndjson")
                files[item["type"]] = [orjson.loads(x) for x in body.content.splitlines()]
                assert len(files[item["type"]]) == item["count"]
            return {"manifest": manifest, "files": files, "status_url": status_url}
        assert status.status_code == 202 and status.headers["x-progress"]
        time.sleep(0.05)
    raise AssertionError("export did not finish")


def patients(files: dict[str, list[dict[str, Any]]]) -> set[str]:
    from healthmesh.fhir.search_params import patient_compartment

    return {p for rows in files.values() for r in rows if (p := patient_compartment(r))}


def _research_key(node: Node, org: str = "Organization_uni-research") -> Any:
    from healthmesh.privacy.deid import load_key_file

    return load_key_file(node.folder / "keys" / "deid" / f"{org}.key")


def _source_ids(key: Any, rtype: str, pseudonyms: set[str], candidates: list[str]) -> set[str]:
    from healthmesh.privacy.deid.reidentify import reidentify

    found = reidentify(key, rtype, sorted(pseudonyms), candidates)
    assert all(len(ids) == 1 for ids in found.values()), found  # every pseudonym is one id
    return {ids[0] for ids in found.values()}


def test_system_export_honours_consent(gate_node: Node) -> None:  # noqa: F811
    research = run(gate_node, lambda c: export(c, "/fhir/$export", research_headers(gate_node)))
    # research exports are pseudonymised (the default); the node's key maps them back
    key = _research_key(gate_node)
    people = ["p1", "p2", "p3", "p4"]
    assert _source_ids(key, "Patient", patients(research["files"]), people) == {"p1", "p2"}
    conditions = {r["id"] for r in research["files"]["Condition"]}
    candidates = [f"{kind}-{p}" for kind in ("dep", "htn") for p in people]
    assert _source_ids(key, "Condition", conditions, candidates) == \
        {"dep-p1", "htn-p1", "htn-p2"}  # not p2's mental-health record
    headers = clinic_headers(gate_node)
    clinic = run(gate_node, lambda c: export(c, "/fhir/$export?_type=Observation", headers))
    assert set(clinic["files"]) == {"Observation"}
    assert patients(clinic["files"]) == {"p1", "p2", "p3"}  # p4 opted out of treatment


def test_patient_and_group_level(gate_node: Node) -> None:  # noqa: F811
    gate_node.store.put({"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
                         "member": [{"entity": {"reference": "Patient/p2"}},
                                    {"entity": {"reference": "Patient/p3"}}]})
    group = run(gate_node, lambda c: export(c, "/fhir/Group/g1/$export", clinic_headers(gate_node)))
    assert patients(group["files"]) == {"p2", "p3"}
    level = run(gate_node, lambda c: export(c, "/fhir/Patient/$export", clinic_headers(gate_node)))
    assert "Organization" not in level["files"]


def test_since_filters_by_last_updated(gate_node: Node) -> None:  # noqa: F811
    headers = clinic_headers(gate_node)
    result = run(gate_node, lambda c: export(c, "/fhir/$export?_since=2999-01-01", headers))
    assert result["files"] == {}


def test_export_is_audited(gate_node: Node) -> None:  # noqa: F811
    headers = research_headers(gate_node)
    run(gate_node, lambda c: export(c, "/fhir/$export?_type=Condition", headers))
    exports = [e.record for e in gate_node.audit.entries(action="export", limit=10)]
    assert exports and exports[0].purpose == "HRESCH"
    assert set(exports[0].patients) == {"p1", "p2"}


@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [
        ("/fhir/$export", "clinic-sync", 400),
        ("/fhir/$export?_type=Nope", "clinic", 400),
        ("/fhir/$export?_since=yesterday", "clinic", 400),
        ("/fhir/$export?_outputFormat=text/csv", "clinic", 400),
        ("/fhir/$export", "no-token", 401),
        ("/fhir/$export?_type=Observation", "condition-scope", 403),
        ("/fhir/Group/none/$export", "clinic", 404),
    ],
)
def test_bad_kick_offs(gate_node: Node, url: str, headers: str,  # noqa: F811
                       status: int) -> None:
    sent = {
        "clinic": clinic_headers(gate_node),
        "clinic-sync": bearer(gate_node, "Organization/city-clinic", "TREAT", "system/*.rs"),
        "no-token": ASYNC,
        "condition-scope": {**bearer(gate_node, "Organization/city-clinic", "TREAT",
                                     "system/Condition.rs"), **ASYNC},
    }[headers]

    async def call(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(url, headers=sent)

    response = run(gate_node, call)
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"


def test_only_the_requester_may_poll_and_download(gate_node: Node) -> None:  # noqa: F811
    async def calls(client: httpx.AsyncClient) -> tuple[int, int, int]:
        done = await export(client, "/fhir/$export?_type=Observation", clinic_headers(gate_node))
        other = await client.get(done["status_url"], headers=research_headers(gate_node))
        url = done["manifest"]["output"][0]["url"]
        stolen = await client.get(url, headers=research_headers(gate_node))
        cancel = await client.delete(done["status_url"], headers=clinic_headers(gate_node))
        return other.status_code, stolen.status_code, cancel.status_code

    assert run(gate_node, calls) == (403, 403, 202)


IDENTIFIED_P1 = {
    "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1961-07-14",
    "name": [{"family": "Okafor", "given": ["Adaeze"]}],
    "telecom": [{"system": "phone", "value": "+44 20 7946 0958"}],
    "address": [{"line": ["12 Mill Lane"], "city": "Leeds", "postalCode": "LS1 4AP",
                 "country": "GB"}],
    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}],
}


def _identifying_strings(files: dict[str, list[dict[str, Any]]]) -> list[str]:
    text = orjson.dumps(files).decode()
    return [s for s in ("Okafor", "Adaeze", "7946", "Mill Lane", "LS1", "9434765919",
                        "1961-07-14", '"p1"', "Patient/p1", "o-p1") if s in text]


def test_research_exports_are_deidentified_with_a_key_per_recipient(
        gate_node: Node) -> None:  # noqa: F811
    gate_node.store.put(IDENTIFIED_P1)
    url = "/fhir/$export?_type=Patient,Observation"
    first = run(gate_node, lambda c: export(c, url, research_headers(gate_node)))
    assert first["manifest"]["extension"]["deidentification"]["profile"] == "pseudonymize"
    assert _identifying_strings(first["files"]) == []
    (patient,) = [p for p in first["files"]["Patient"]
                  if _source_ids(_research_key(gate_node), "Patient", {p["id"]}, ["p1", "p2"])
                  == {"p1"}]
    assert "PSEUDED" in {label["code"] for label in patient["meta"]["security"]}
    assert patient["birthDate"] != IDENTIFIED_P1["birthDate"]  # shifted per patient
    observations = {o["subject"]["reference"] for o in first["files"]["Observation"]}
    assert f"Patient/{patient['id']}" in observations  # references rewritten consistently
    again = run(gate_node, lambda c: export(c, url, research_headers(gate_node)))
    assert again["files"]["Patient"] == first["files"]["Patient"]  # same key, same output
    other = {**bearer(gate_node, "Organization/pharma-lab", "HRESCH", "system/*.rs"), **ASYNC}
    theirs = run(gate_node, lambda c: export(c, url, other))
    assert {p["id"] for p in theirs["files"]["Patient"]}.isdisjoint(
        {p["id"] for p in first["files"]["Patient"]})  # unlinkable across recipients
    keys = sorted(p.name for p in (gate_node.folder / "keys" / "deid").iterdir())
    assert keys == ["Organization_pharma-lab.key", "Organization_uni-research.key"]


def test_deidentification_can_be_asked_for_but_not_refused_for_research(
        gate_node: Node) -> None:  # noqa: F811
    gate_node.store.put(IDENTIFIED_P1)

    async def kick(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Any:
        return await client.get(url, headers=headers)

    research, clinic = research_headers(gate_node), clinic_headers(gate_node)
    refused = run(gate_node, lambda c: kick(c, "/fhir/$export?_deidentify=none", research))
    assert refused.status_code == 403 and "de-identified" in refused.text
    bad = run(gate_node, lambda c: kick(c, "/fhir/$export?_deidentify=scramble", clinic))
    assert bad.status_code == 400 and "safe-harbor" in bad.text
    url = "/fhir/$export?_type=Patient&_deidentify=safe-harbor"
    harbor = run(gate_node, lambda c: export(c, url, clinic))
    (p1,) = [p for p in harbor["files"]["Patient"] if p.get("birthDate")]
    assert p1["birthDate"] == "1961" and "name" not in p1 and "telecom" not in p1
    assert p1["address"] == [{"country": "GB"}]  # no line, city or (non-US) postcode
    assert {"REDACTED", "PSEUDED"} <= {label["code"] for label in p1["meta"]["security"]}
    assert _identifying_strings(harbor["files"]) == []
    plain = run(gate_node, lambda c: export(c, "/fhir/$export?_type=Patient", clinic))
    assert "extension" not in plain["manifest"]  # treatment exports stay identified
    assert any(p.get("name") for p in plain["files"]["Patient"])
    assert not (gate_node.folder / "keys" / "deid").exists()  # safe harbor needs no key
