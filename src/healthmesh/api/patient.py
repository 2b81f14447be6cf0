"""Patient API (``/patient``): a patient's consents, receipts, access log and own data.

Authenticated with a patient token (``Authorization: Bearer ...``, issued by
``healthmesh patient token``); every route acts for that patient only.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from healthmesh.api.bodies import read_json_body
from healthmesh.api.fhir import FHIR_JSON, json_response, requester_of
from healthmesh.api.openapi import responses
from healthmesh.errors import InvalidRequest
from healthmesh.gate.patient import ConsentChoice, PatientPortal, receipt_html
from healthmesh.gate.requester import Forbidden
from healthmesh.node import Node

__all__ = ["router"]

router = APIRouter(prefix="/patient", tags=["Patient"], responses=responses(
    (201, "Created", "application/json")))


def _me(request: Request) -> tuple[PatientPortal, str]:
    node: Node = request.app.state.node
    requester = requester_of(request)
    if requester.patient is None:
        raise Forbidden("This API is for patients: send 'Authorization: Bearer <patient token>'")
    return PatientPortal(node), requester.patient


@router.get("/consents", summary="My consents, in plain language")
def my_consents(request: Request) -> Response:
    portal, patient = _me(request)
    return json_response({"patient": patient, "consents": portal.consents(patient)})


@router.post("/consents", summary="Grant or refuse a use of my data")
async def choose(request: Request) -> Response:
    portal, patient = _me(request)
    body = await read_json_body(request, portal.node.settings)
    if not isinstance(body, dict) or not isinstance(body.get("purpose"), str) \
            or not isinstance(body.get("allow"), bool):
        raise InvalidRequest("Send {\"purpose\": \"HRESCH\", \"allow\": true|false, "
                             "\"recipient\"?: \"Organization/x\", \"except\"?: [\"PSY\"]}")
    labels = body.get("except") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise InvalidRequest("'except' must be a list of sensitive category codes")
    recipient = body.get("recipient")
    if recipient is not None and not isinstance(recipient, str):
        raise InvalidRequest("'recipient' must be a reference like Organization/x")
    choice = ConsentChoice(body["purpose"], body["allow"], recipient, tuple(labels))
    return json_response(portal.grant(patient, choice), 201)


@router.post("/consents/{consent_id}/revoke", summary="Revoke one of my consents")
def revoke(request: Request, consent_id: str) -> Response:
    portal, patient = _me(request)
    return json_response(portal.revoke(patient, consent_id))


@router.get("/consents/{consent_id}/receipt", summary="Consent receipt (JSON or printable HTML)")
def receipt(request: Request, consent_id: str) -> Response:
    portal, patient = _me(request)
    data = portal.receipt(patient, consent_id)
    wants_html = request.query_params.get("format") == "html" or \
        "text/html" in request.headers.get("accept", "")
    if wants_html:
        return HTMLResponse(receipt_html(data))
    return json_response(data)


@router.get("/access-log", summary="Who looked at my data")
def access_log(request: Request) -> Response:
    portal, patient = _me(request)
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit():
        raise InvalidRequest(f"limit must be a positive integer, not '{raw}'")
    limit = max(1, min(int(raw), 1000))
    return json_response({"patient": patient, "accesses": portal.access_log(patient, limit)})


@router.get("/data", summary="Download all my data as a FHIR Bundle")
def my_data(request: Request) -> Response:
    portal, patient = _me(request)
    entries = b",".join(
        b'{"resource":' + (s.content or b"{}") + b"}" for s in portal.my_data(patient)
    )
    body = b'{"resourceType":"Bundle","type":"collection","entry":[' + entries + b"]}"
    return Response(body, media_type=FHIR_JSON,
                    headers={"Content-Disposition": f'attachment; filename="{patient}.json"'})
