"""HTTP semantics of the FHIR API, checked against a live server process on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from healthmesh.node import init_node
from tests.conftest import LiveServer

pytestmark = pytest.mark.xdist_group("live-server")
FHIR = {"content-type": "application/fhir+json"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = init_node(tmp_path_factory.mktemp("api") / "node")
    os.environ["HEALTHMESH_MAX_BODY_BYTES"] = "200000"
    try:
        server = LiveServer(folder)
    finally:
        del os.environ["HEALTHMESH_MAX_BODY_BYTES"]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.base, timeout=30, headers=live.clinician) as client:
        yield client


def post(http: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    return http.post(path, content=orjson.dumps(body), headers={**FHIR, **headers})


def put(http: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    return http.put(path, content=orjson.dumps(body), headers={**FHIR, **headers})


def outcome_text(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return " ".join(i.get("diagnostics", "") + str(i.get("expression", "")) for i in body["issue"])


def test_metadata_tells_what_is_supported(http: httpx.Client) -> None:
    cs = http.get("/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    obs_params = {p["name"] for p in by_type["Observation"]["searchParam"]}
    assert {"code", "date", "patient", "subject", "value-quantity", "_id"} <= obs_params
    assert "everything" in {o["name"] for o in by_type["Patient"]["operation"]}


def test_create_read_vread_update_delete(http: httpx.Client) -> None:
    created = post(http, "/Patient", {"resourceType": "Patient", "gender": "female"})
    assert created.status_code == 201
    assert created.headers["etag"] == 'W/"1"'
    assert "/Patient/" in created.headers["location"]
    assert created.headers["content-type"].startswith("application/fhir+json")
    pid = created.json()["id"]
    assert http.get(f"/Patient/{pid}").json()["gender"] == "female"
    updated = put(http, f"/Patient/{pid}", {"resourceType": "Patient", "id": pid, "gender": "male"},
                  **{"if-match": 'W/"1"'})
    assert updated.status_code == 200 and updated.headers["etag"] == 'W/"2"'
    stale = put(http, f"/Patient/{pid}", {"resourceType": "Patient", "id": pid},
                **{"if-match": 'W/"1"'})
    assert stale.status_code == 412
    assert http.get(f"/Patient/{pid}/_history/1").json()["gender"] == "female"
    assert http.get(f"/Patient/{pid}/_history/9").status_code == 404
    history = http.get(f"/Patient/{pid}/_history").json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    assert http.delete(f"/Patient/{pid}").status_code == 204
    gone = http.get(f"/Patient/{pid}")
    assert gone.status_code == 410 and "deleted" in outcome_text(gone)


def test_update_creates_with_client_id(http: httpx.Client) -> None:
    response = put(http, "/Patient/client-chosen-1", {"resourceType": "Patient",
                                                      "id": "client-chosen-1"})
    assert response.status_code == 201
    mismatch = put(http, "/Patient/a1", {"resourceType": "Patient", "id": "b2"})
    assert mismatch.status_code == 400


def test_prefer_return_minimal(http: httpx.Client) -> None:
    response = post(http, "/Patient", {"resourceType": "Patient"}, prefer="return=minimal")
    assert response.status_code == 201 and response.content == b""
    assert response.headers["location"]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "text"),
    [
        ("GET", "/Foo/1", None, {}, 404, "Unknown resource type"),
        ("GET", "/Patient/does-not-exist", None, {}, 404, "not known"),
        ("PATCH", "/Patient/x", b"{}", {}, 405, "not supported"),
        ("POST", "/Patient", b"{not json", FHIR, 400, "not valid JSON"),
        ("POST", "/Patient", b"", FHIR, 400, "empty"),
        ("POST", "/Patient", b"<Patient/>", {"content-type": "application/fhir+xml"}, 415,
         "not supported"),
        ("POST", "/Patient", b'{"resourceType":"Observation"}', FHIR, 400, "must be Patient"),
        ("POST", "/Patient", b'{"resourceType":"Patient","birthDate":"1990-02-30"}', FHIR, 400,
         "Patient.birthDate"),
        ("POST", "/Patient", b'{"resourceType":"Patient","nickname":"x"}', FHIR, 400,
         "Patient.nickname"),
        ("POST", "/Patient", b"[" * 5000 + b"]" * 5000, FHIR, 400, "JSON"),
        ("POST", "/Patient", b'{"resourceType":"Patient","a":"' + b"x" * 300000 + b'"}', FHIR,
         413, "exceeds"),
        ("GET", "/Patient?birthdate=notadate", None, {}, 400, "birthdate"),
        ("GET", "/Patient?_count=many", None, {}, 400, "_count"),
        ("GET", "/Patient?nosuchparam=1", None, {"prefer": "handling=strict"}, 400, "nosuchparam"),
        ("GET", "/Patient?_sort=nosuch", None, {}, 400, "sort"),
        ("GET", "/Patient?_cursor=!!!", None, {}, 400, "cursor"),
    ],
)
def test_errors_are_operation_outcomes(
    http: httpx.Client, method: str, path: str, body: bytes | None, headers: dict[str, str],
    status: int, text: str,
) -> None:
    response = http.request(method, path, content=body, headers=headers)
    assert response.status_code == status
    assert text.lower() in outcome_text(response).lower()
    assert "Traceback" not in response.text and "/src/" not in response.text


def test_unknown_parameter_is_a_warning_in_lenient_mode(http: httpx.Client) -> None:
    bundle = http.get("/Patient?nosuchparam=1").json()
    outcomes = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcomes and "nosuchparam" in str(outcomes[0]["resource"])


def test_conditional_create(http: httpx.Client) -> None:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "C-1"}]}
    first = post(http, "/Patient", body, **{"if-none-exist": "identifier=urn:mrn|C-1"})
    second = post(http, "/Patient", body, **{"if-none-exist": "identifier=urn:mrn|C-1"})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]


def transaction(entries: list[dict[str, Any]], btype: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": btype, "entry": entries}


def test_transaction_rewrites_references_and_is_atomic(http: httpx.Client) -> None:
    post(http, "/Organization", {"resourceType": "Organization", "name": "Org T",
                                 "identifier": [{"system": "urn:org", "value": "T1"}]})
    tx = transaction([
        {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
         "resource": {"resourceType": "Patient", "name": [{"family": "Txn"}],
                      "managingOrganization": {"reference": "Organization?identifier=urn:org|T1"}},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final",
                      "code": {"text": "weight"},
                      "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}},
         "request": {"method": "POST", "url": "Observation"}},
    ])
    response = post(http, "", tx)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "201 Created"]
    patient_loc = result["entry"][0]["response"]["location"].split("/_history")[0]
    obs_id = result["entry"][1]["response"]["location"].split("/")[1]
    obs = http.get(f"/Observation/{obs_id}").json()
    assert obs["subject"]["reference"] == patient_loc
    patient = http.get(f"/{patient_loc}").json()
    assert patient["managingOrganization"]["reference"].startswith("Organization/")

    before = http.get("/Patient?family=atomic&_summary=count").json()["total"]
    bad = transaction([
        {"resource": {"resourceType": "Patient", "name": [{"family": "Atomic"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final"},
         "request": {"method": "POST", "url": "Observation"}},
    ])
    failed = post(http, "", bad)
    assert failed.status_code == 400 and "entry[1]" in outcome_text(failed)
    assert http.get("/Patient?family=atomic&_summary=count").json()["total"] == before


def test_batch_reports_each_entry(http: httpx.Client) -> None:
    batch = transaction([
        {"resource": {"resourceType": "Patient", "name": [{"family": "Batchy"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "mail"},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
    ], "batch")
    result = post(http, "", batch).json()
    statuses = [e["response"]["status"].split()[0] for e in result["entry"]]
    assert statuses == ["201", "400", "404"]
    assert http.get("/Patient?family=batchy&_summary=count").json()["total"] == 1


def test_history_type_and_system(http: httpx.Client) -> None:
    post(http, "/Device", {"resourceType": "Device"})
    post(http, "/Device", {"resourceType": "Device"})
    bundle = http.get("/Device/_history?_count=1").json()
    assert bundle["type"] == "history" and len(bundle["entry"]) == 1
    assert any(link["relation"] == "next" for link in bundle["link"])
    assert http.get("/_history?_count=3").json()["entry"]


def test_read_with_elements_is_marked_subsetted(http: httpx.Client) -> None:
    pid = post(http, "/Patient", {"resourceType": "Patient", "gender": "female",
                                  "birthDate": "1970"}).json()["id"]
    body = http.get(f"/Patient/{pid}?_elements=gender").json()
    assert "birthDate" not in body and body["gender"] == "female"
    assert body["meta"]["tag"][0]["code"] == "SUBSETTED"


def test_openapi_docs_served(live: LiveServer) -> None:
    root = live.base.removesuffix("/fhir")
    assert httpx.get(root + "/openapi.json").json()["info"]["title"].startswith("healthmesh")
    assert httpx.get(root + "/docs").status_code == 200




def test_consent_policy_is_published(live: LiveServer, http: httpx.Client) -> None:
    root = live.base.removesuffix("/fhir")
    policy = httpx.get(root + "/consent-policy").json()
    assert policy["plain_language"] and "HRESCH" in str(policy["policy"])
    security = http.get("/metadata").json()["rest"][0]["security"]["description"]
    assert "/consent-policy" in security


def test_reads_need_a_token_with_a_purpose(live: LiveServer) -> None:
    from healthmesh.auth import TokenService, parse_scopes

    anonymous = httpx.get(live.base + "/Patient", headers={"X-Requester": "Organization/x"})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"]
    token, _ = TokenService(live.folder).issue(
        subject="svc", client_id="svc", scopes=parse_scopes("system/*.rs"), purpose=None,
        org="Organization/x", ttl=60)
    response = httpx.get(live.base + "/Patient", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and "purpose" in outcome_text(response).lower()


def test_form_posted_search(http: httpx.Client) -> None:
    post(http, "/Patient", {"resourceType": "Patient", "gender": "other", "birthDate": "1911"})
    found = http.post("/Patient/_search", content=b"gender=other&birthdate=1911",
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert found.status_code == 200 and found.json()["total"] == 1
    broken = http.post("/Patient/_search", content=b"garbage",
                       headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert broken.status_code == 400 and "multipart" in outcome_text(broken).lower()
