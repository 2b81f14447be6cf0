"""The patient API: my consents, choices that take effect at once, receipts, access log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from healthmesh.node import Node
from tests.conftest import bearer, patient_bearer, run_asgi
from tests.test_gate import node as gate_node  # noqa: F401


def run(node: Node, calls: Any) -> Any:
    return run_asgi(node, calls)


@pytest.fixture
def token(gate_node: Node) -> dict[str, str]:  # noqa: F811
    return patient_bearer(gate_node, "p3")


def test_opt_in_takes_effect_and_revocation_removes_it(
    gate_node: Node, token: dict[str, str]  # noqa: F811
) -> None:
    research = bearer(gate_node, "Organization/uni-research", "HRESCH")

    async def calls(client: httpx.AsyncClient) -> dict[str, Any]:
        before = (await client.get("/fhir/Observation?_summary=count", headers=research)).json()
        granted = await client.post("/patient/consents", headers=token,
                                    json={"purpose": "HRESCH", "allow": True, "except": ["PSY"]})
        during = (await client.get("/fhir/Condition", headers=research)).json()
        receipt = granted.json()
        revoked = await client.post(f"/patient/{receipt['consent']}/revoke".replace(
            "/patient/Consent/", "/patient/consents/"), headers=token)
        after = (await client.get("/fhir/Observation?_summary=count", headers=research)).json()
        mine = (await client.get("/patient/consents", headers=token)).json()
        html = await client.get(f"/patient/consents/{receipt['consent'][8:]}/receipt?format=html",
                                headers=token)
        return {"before": before["total"], "granted": granted, "during": during,
                "revoked": revoked, "after": after["total"], "mine": mine, "html": html}

    r = run(gate_node, calls)
    assert r["granted"].status_code == 201
    receipt = r["granted"].json()
    assert receipt["status"] == "active" and "revoke" in receipt["how_to_revoke"].lower()
    assert any("research" in s.lower() for s in receipt["agreed"])
    conditions = {e["resource"]["id"] for e in r["during"]["entry"]}
    assert "htn-p3" in conditions and "dep-p3" not in conditions  # except mental health
    assert r["revoked"].json()["status"] == "inactive"
    assert r["after"] == r["before"]  # revocation: p3 is gone again
    statuses = {c["status"] for c in r["mine"]["consents"]}
    assert statuses == {"inactive"} and r["mine"]["consents"][0]["plain_language"]
    assert r["html"].headers["content-type"].startswith("text/html")
    assert "Consent receipt" in r["html"].text


def test_access_log_shows_who_looked_and_what_was_refused(
    gate_node: Node, token: dict[str, str]  # noqa: F811
) -> None:
    researcher = bearer(gate_node, "Organization/uni-research", "HRESCH")
    clinician = bearer(gate_node, "Organization/city-clinic", "TREAT")

    async def calls(client: httpx.AsyncClient) -> Any:
        await client.get("/fhir/Condition/htn-p3", headers=researcher)  # refused: no opt-in
        await client.get("/fhir/Condition/htn-p3", headers=clinician)
        return (await client.get("/patient/access-log", headers=token)).json()

    log = run(gate_node, calls)["accesses"]
    research = [a for a in log if a["who"] == "Organization/uni-research"]
    clinic = [a for a in log if a["who"] == "Organization/city-clinic"]
    assert research[0]["decision"] == "deny" and research[0]["purpose"] == "HRESCH"
    assert clinic[0]["decision"] == "permit" and clinic[0]["resource_types"] == ["Condition"]


def test_my_data_download_and_isolation(gate_node: Node, token: dict[str, str]) -> None:  # noqa: F811
    async def calls(client: httpx.AsyncClient) -> Any:
        mine = await client.get("/patient/data", headers=token)
        other = await client.post("/patient/consents/c1/revoke", headers=token)  # p1's consent
        no_token = await client.get("/patient/consents")
        bad_token = await client.get("/patient/consents",
                                     headers={"Authorization": "Bearer nope"})
        bad_body = await client.post("/patient/consents", headers=token,
                                     json={"purpose": "MOON", "allow": True})
        return mine, other, no_token, bad_token, bad_body

    mine, other, no_token, bad_token, bad_body = run(gate_node, calls)
    ids = {e["resource"]["id"] for e in mine.json()["entry"]}
    assert {"p3", "o-p3", "dep-p3", "htn-p3"} <= ids and not ids & {"p1", "o-p1"}
    assert other.status_code == 404  # not the caller's consent
    assert no_token.status_code == 401 and bad_token.status_code == 401
    assert bad_body.status_code == 400


def test_a_new_yes_replaces_an_old_no(gate_node: Node) -> None:  # noqa: F811
    clinic = bearer(gate_node, "Organization/city-clinic", "TREAT")
    p4 = patient_bearer(gate_node, "p4")

    async def calls(client: httpx.AsyncClient) -> tuple[int, int, list[str]]:
        before = (await client.get("/fhir/Observation/o-p4", headers=clinic)).status_code
        await client.post("/patient/consents", headers=p4, json={"purpose": "TREAT",
                                                                  "allow": True})
        after = (await client.get("/fhir/Observation/o-p4", headers=clinic)).status_code
        mine = (await client.get("/patient/consents", headers=p4)).json()["consents"]
        return before, after, sorted(c["status"] for c in mine)

    assert run(gate_node, calls) == (404, 200, ["active", "inactive"])
