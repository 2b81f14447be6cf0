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


def test_system_export_honours_consent(gate_node: Node) -> None:  # noqa: F811
    research = run(gate_node, lambda c: export(c, "/fhir/$export", research_headers(gate_node)))
    assert patients(research["files"]) == {"p1", "p2"}
    conditions = {r["id"] for r in research["files"]["Condition"]}
    assert conditions == {"dep-p1", "htn-p1", "htn-p2"}  # not p2's mental-health record
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
