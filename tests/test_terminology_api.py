"""$lookup, $validate-code and $translate on the node's FHIR API; ``healthmesh terminology``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import bearer, run_asgi, run_cli

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
VS = "https://healthmesh.dev/fhir/ValueSet/"


def _values(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in params["parameter"]:
        value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        out.setdefault(p["name"], []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def _calls(node: Any, requests: list[tuple[str, str, Any]], auth: bool = True
           ) -> list[httpx.Response]:
    headers = bearer(node) if auth else {}

    async def calls(client: httpx.AsyncClient) -> list[httpx.Response]:
        out = []
        for method, url, body in requests:
            out.append(await client.request(method, url, headers=headers, json=body))
        return out

    return run_asgi(node, calls)


def test_lookup_by_get_and_post(make_node: Any) -> None:
    node = make_node()
    get, post, coding = _calls(node, [
        ("GET", f"/fhir/CodeSystem/$lookup?system={LOINC}&code=4548-4", None),
        ("POST", "/fhir/CodeSystem/$lookup", {"resourceType": "Parameters", "parameter": [
            {"name": "system", "valueUri": SCT}, {"name": "code", "valueCode": "44054006"}]}),
        ("POST", "/fhir/CodeSystem/$lookup", {"resourceType": "Parameters", "parameter": [
            {"name": "coding", "valueCoding": {"system": ICD, "code": "N18.4"}}]}),
    ])
    assert get.status_code == 200 and get.headers["content-type"].startswith(
        "application/fhir+json")
    assert _values(get.json()) == {"name": "LOINC",
                                   "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}
    found = _values(post.json())
    assert found["display"] == "Diabetes mellitus type 2 (disorder)"
    parts = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
             for p in found["property"]}
    assert parts["code"] == "mapped-to" and parts["value"]["code"] == "E11.9"
    assert _values(coding.json())["display"] == "Chronic kidney disease, stage 4 (severe)"


@pytest.mark.parametrize(("url", "status", "message"), [
    ("/fhir/CodeSystem/$lookup?system=http://example.org/cs&code=1", 404, "not known"),
    (f"/fhir/CodeSystem/$lookup?system={LOINC}&code=99999-5", 404, "not in this node's"),
    (f"/fhir/CodeSystem/$lookup?system={LOINC}&code=4548-5", 404, "check digit"),
    (f"/fhir/CodeSystem/$lookup?system={LOINC}", 400, "'code' is required"),
    ("/fhir/CodeSystem/$lookup?code=1", 400, "'system' is required"),
    (f"/fhir/CodeSystem/$lookup?system={LOINC}&code=1&code=2", 400, "more than once"),
    (f"/fhir/CodeSystem/$lookup?system={LOINC}&code={'9' * 300}", 400, "longer than 256"),
    (f"/fhir/ValueSet/$validate-code?url={VS}nope&system={ICD}&code=I10", 404, "value set"),
])
def test_bad_requests_are_operation_outcomes(make_node: Any, url: str, status: int,
                                             message: str) -> None:
    (response,) = _calls(make_node(), [("GET", url, None)])
    assert response.status_code == status
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert message in body["issue"][0]["diagnostics"]


def test_post_bodies_must_be_parameters(make_node: Any) -> None:
    node = make_node()
    wrong, no_value = _calls(node, [
        ("POST", "/fhir/CodeSystem/$lookup", {"resourceType": "Patient"}),
        ("POST", "/fhir/CodeSystem/$lookup", {"resourceType": "Parameters",
                                              "parameter": [{"name": "code"}]}),
    ])
    assert wrong.status_code == 400 and "Parameters resource" in wrong.text
    assert no_value.status_code == 400 and "needs one string" in no_value.text


def test_operations_need_an_authenticated_caller(make_node: Any) -> None:
    (response,) = _calls(make_node(), [
        ("GET", f"/fhir/CodeSystem/$lookup?system={LOINC}&code=4548-4", None)], auth=False)
    assert response.status_code == 401


def test_validate_code_against_code_systems_and_value_sets(make_node: Any) -> None:
    node = make_node()
    responses = _calls(node, [
        ("GET", f"/fhir/CodeSystem/$validate-code?url={SCT}&code=38341003", None),
        ("GET", f"/fhir/CodeSystem/$validate-code?system={SCT}&code=38341004", None),
        ("GET", f"/fhir/CodeSystem/$validate-code?system={ICD}&code=I10&display=Wrong", None),
        ("GET", f"/fhir/CodeSystem/$validate-code?system={ICD}&code=I10"
                "&display=essential%20(primary)%20hypertension", None),
        ("GET", f"/fhir/ValueSet/$validate-code?url={VS}diabetes&system={ICD}&code=E11.9",
         None),
        ("GET", f"/fhir/ValueSet/$validate-code?url={VS}diabetes&system={ICD}&code=I10", None),
        ("POST", "/fhir/ValueSet/$validate-code", {"resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": f"{VS}ckd"},
            {"name": "coding", "valueCoding": {"system": SCT, "code": "431857002"}}]}),
    ])
    results = [_values(r.json()) for r in responses]
    assert all(r.status_code == 200 for r in responses)
    assert results[0]["result"] is True
    assert results[1]["result"] is False and "Verhoeff" in results[1]["message"]
    assert results[2]["result"] is False and "'Wrong'" in results[2]["message"]
    assert results[3]["result"] is True  # display compared case-insensitively
    assert results[4]["result"] is True
    assert results[5]["result"] is False and "is not in" in results[5]["message"]
    assert results[6]["result"] is True


def test_translate_between_snomed_and_icd10cm(make_node: Any) -> None:
    node = make_node()
    forward, none = _calls(node, [
        ("GET", f"/fhir/ConceptMap/$translate?system={ICD}&code=I10&targetsystem={SCT}", None),
        ("GET", f"/fhir/ConceptMap/$translate?system={ICD}&code=Z00.00", None),
    ])
    matches = _values(forward.json())["match"]
    codes = {}
    for parts in matches:
        named = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
                 for p in parts}
        codes[named["concept"]["code"]] = named["equivalence"]
    assert codes == {"59621000": "equivalent", "1201005": "narrower", "38341003": "wider"}
    assert _values(none.json())["result"] is False


def test_capability_statement_lists_the_operations(make_node: Any) -> None:
    (response,) = _calls(make_node(), [("GET", "/fhir/metadata", None)], auth=False)
    resources = {r["type"]: r for r in response.json()["rest"][0]["resource"]}
    assert [o["name"] for o in resources["CodeSystem"]["operation"]] == ["lookup",
                                                                         "validate-code"]
    assert [o["name"] for o in resources["ValueSet"]["operation"]] == ["validate-code"]
    assert [o["name"] for o in resources["ConceptMap"]["operation"]] == ["translate"]


def test_stored_resources_carry_code_warnings_over_the_api(make_node: Any) -> None:
    node = make_node()
    obs = {"resourceType": "Observation", "status": "final", "subject": {"reference":
                                                                        "Patient/p1"},
           "code": {"coding": [{"system": LOINC, "code": "99999-5"}]}}
    created, found = _calls(node, [
        ("POST", "/fhir/Observation", obs),
        ("GET", "/fhir/Observation?_tag=https://healthmesh.dev/fhir/CodeSystem/ingest-warning"
                "|unknown-code", None),
    ])
    assert created.status_code == 201, created.text
    tags = created.json()["meta"]["tag"]
    assert tags[0]["code"] == "unknown-code"
    assert found.status_code == 200 and found.json()["total"] == 1


# -- the command ---------------------------------------------------------------------------


def test_cli_lookup() -> None:
    result = run_cli("terminology", "lookup", "I10", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)["found"]
    assert {f["system"] for f in found} == {ICD, "http://hl7.org/fhir/sid/icd-10"}
    icd = next(f for f in found if f["system"] == ICD)
    assert "hypertension" in icd["value_sets"]
    assert {m["code"] for m in icd["maps_to"]} == {"59621000", "1201005", "38341003"}
    text = run_cli("terminology", "lookup", "4548-4", "--system", "loinc")
    assert text.returncode == 0 and "Hemoglobin A1c" in text.stdout
    bad = run_cli("terminology", "lookup", "4548-5", "--system", "loinc")
    assert bad.returncode == 1 and "check digit" in bad.stderr
    unknown = run_cli("terminology", "lookup", "1", "--system", "http://example.org")
    assert unknown.returncode == 2 and "unknown code system" in unknown.stderr


def test_cli_convert_and_valuesets() -> None:
    result = run_cli("terminology", "convert", "126", "mg/dL", "mmol/L", "--analyte", "glucose",
                     "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result"] == pytest.approx(126 * 10 / 180.156, rel=1e-5)
    bad = run_cli("terminology", "convert", "126", "mg/dL", "mmol/L")
    assert bad.returncode == 2 and "molar mass" in bad.stderr
    listed = run_cli("terminology", "valuesets", "--json")
    names = {v["name"] for v in json.loads(listed.stdout)["value_sets"]}
    assert {"hypertension", "ckd", "sdoh-screening"} <= names
