"""The patient portal (``/web/me``): my data, my consents, who looked, my questionnaires.

Every page acts for the patient of the signed-in access token and goes through the same
core as the patient API (:class:`~healthmesh.gate.patient.PatientPortal`): consents are
written as FHIR Consents and enforced by the gate from the very next request; reads of
the patient's data are audited like any other; questionnaire answers are written through
the patient's guarded repository (the token's scopes decide).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, Response

from healthmesh.consent.text import PURPOSE_NAMES
from healthmesh.gate.patient import LABELS, ConsentChoice, PatientPortal
from healthmesh.node import Node
from healthmesh.web.errors import PageError
from healthmesh.web.questionnaires import (
    IncompleteAnswers,
    build_response,
    needs_alert,
    phq9_severity,
    questionnaires,
    total_score,
)
from healthmesh.web.render import html_page, language, redirect, translator
from healthmesh.web.routing import PageRoute
from healthmesh.web.session import Caller, read_form, signed_in_caller

__all__ = ["router"]

router = APIRouter(prefix="/web/me", route_class=PageRoute, include_in_schema=False)
SWITCH_PURPOSES = ("HRESCH", "PUBHLTH", "TREAT")
_RECIPIENT = re.compile(r"^Organization/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PAGE_SIZE = 50


def _me(request: Request) -> tuple[Caller, PatientPortal, str]:
    found = signed_in_caller(request, "patient")
    patient = found.requester.patient
    if patient is None:
        raise PageError("This account is not linked to a patient record.", 403)
    node: Node = request.app.state.node
    return found, PatientPortal(node), patient


# -- my data ---------------------------------------------------------------------------

@router.get("")
def overview(request: Request) -> Response:
    _, portal, patient = _me(request)
    stored = portal.my_data(patient)
    counts = Counter(s.type for s in stored)
    recent = [_line(s.resource()) for s in stored
              if s.type in ("Condition", "Observation", "Immunization", "MedicationRequest")]
    recent.sort(key=lambda r: r["date"], reverse=True)
    return html_page(request, "portal/overview.html", patient=patient,
                     counts=sorted(counts.items()), recent=recent[:25])


def _line(resource: dict[str, Any]) -> dict[str, str]:
    """One readable line of a clinical resource: what, value and date."""
    concept = resource.get("code") or resource.get("vaccineCode") or \
        resource.get("medicationCodeableConcept") or {}
    coding = (concept.get("coding") or [{}])[0]
    what = concept.get("text") or coding.get("display") or coding.get("code") or "-"
    quantity = resource.get("valueQuantity") or {}
    value = f"{quantity.get('value', '')} {quantity.get('unit', '')}".strip()
    date = str(resource.get("effectiveDateTime") or resource.get("onsetDateTime") or
               resource.get("occurrenceDateTime") or resource.get("authoredOn") or
               resource.get("recordedDate") or "")[:10]
    return {"type": resource["resourceType"], "what": str(what)[:200], "value": value,
            "date": date}


@router.get("/data.json")
def download(request: Request) -> Response:
    """All my data as a FHIR Bundle (the right of access), like GET /patient/data."""
    _, portal, patient = _me(request)
    entries = b",".join(b'{"resource":' + (s.content or b"{}") + b"}"
                        for s in portal.my_data(patient))
    body = b'{"resourceType":"Bundle","type":"collection","entry":[' + entries + b"]}"
    return Response(body, media_type="application/fhir+json", headers={
        "Content-Disposition": f'attachment; filename="my-data-{patient}.json"',
        "Cache-Control": "no-store"})


# -- consents --------------------------------------------------------------------------

@router.get("/consents")
def consents(request: Request) -> Response:
    _, portal, patient = _me(request)
    node = portal.node
    return html_page(request, "portal/consents.html", switches=_switches(node, patient),
                     shared=_recipient_shares(node, patient), history=portal.consents(patient),
                     labels=LABELS, saved=request.query_params.get("saved", "")[:64])


def _active(node: Node, patient: str) -> list[Any]:
    rows = [c for c in node.gate.scopes.consents_of(patient) if c.status == "active"]
    return sorted(rows, key=lambda c: c.date_time or 0, reverse=True)


def _switches(node: Node, patient: str) -> list[dict[str, Any]]:
    """Per purpose: whether it is allowed now, and whether by the patient's own choice."""
    active = _active(node, patient)
    out = []
    for purpose in SWITCH_PURPOSES:
        own = next((c for c in active if purpose in c.provision.purposes
                    and not c.provision.recipients), None)
        rule = node.policy.rule_for(purpose)
        if own is not None:
            allowed, source = own.provision.type == "permit", "choice"
            excepted = sorted({code for p in own.provision.provisions
                               for code in p.security_labels if code in LABELS})
        else:
            allowed = bool(rule and rule.permits_by_default)
            source, excepted = "default", []
        out.append({"purpose": purpose, "name": PURPOSE_NAMES.get(purpose, purpose),
                    "allowed": allowed, "source": source, "except": excepted,
                    "overridable": rule.overridable if rule else True,
                    "explanation": rule.explanation if rule else ""})
    return out


def _recipient_shares(node: Node, patient: str) -> list[dict[str, Any]]:
    """Active treatment-sharing choices naming an organisation (newest first)."""
    out, seen = [], set()
    for consent in _active(node, patient):
        root = consent.provision
        for actor in root.recipients:
            key = (actor.reference, tuple(sorted(root.purposes)))
            if key in seen or "TREAT" not in root.purposes:
                continue
            seen.add(key)
            out.append({"recipient": actor.reference, "allowed": root.type == "permit",
                        "consent": consent.id})
    return out


@router.post("/consents")
async def choose(request: Request) -> Response:
    """A switch: allow or refuse a purpose (optionally for one organisation, except some
    sensitive categories); the newest choice supersedes the earlier one."""
    _, portal, patient = _me(request)
    form = await read_form(request)
    purpose = form.get("purpose", [""])[0]
    allow = form.get("allow", ["no"])[-1] == "yes"
    recipient = form.get("recipient", [""])[0].strip() or None
    if recipient is not None and not _RECIPIENT.match(recipient):
        raise PageError("Name the organisation like Organization/city-hospital.", 422)
    if purpose not in SWITCH_PURPOSES:
        raise PageError(f"Unknown purpose '{purpose[:40]}'.", 422)
    rule = portal.node.policy.rule_for(purpose)
    if rule is not None and not rule.overridable and recipient is None:
        raise PageError(f"Use for {PURPOSE_NAMES.get(purpose, purpose)} is set by the "
                        "network's rules and cannot be changed by a consent.", 422)
    labels = tuple(sorted(set(form.get("except", []))))
    receipt = portal.grant(patient, ConsentChoice(purpose, allow, recipient, labels))
    consent_id = receipt["consent"].split("/", 1)[1]
    return redirect(request, f"/web/me/consents?saved={consent_id}")


@router.post("/consents/{consent_id}/revoke")
async def revoke(request: Request, consent_id: str) -> Response:
    _, portal, patient = _me(request)
    await read_form(request)
    portal.revoke(patient, consent_id[:64])
    return redirect(request, f"/web/me/consents?saved={consent_id[:64]}")


@router.get("/consents/{consent_id}/receipt")
def receipt(request: Request, consent_id: str) -> Response:
    _, portal, patient = _me(request)
    return html_page(request, "portal/receipt.html",
                     receipt=portal.receipt(patient, consent_id[:64]))


# -- who looked at my data -------------------------------------------------------------

@router.get("/access-log")
def access_log(request: Request) -> Response:
    _, portal, patient = _me(request)
    page = _page_number(request)
    rows = portal.access_log(patient, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
    return html_page(request, "portal/access_log.html", rows=rows[:PAGE_SIZE], page=page,
                     more=len(rows) > PAGE_SIZE)


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise PageError("page must be a whole number from 1.", 400)
    return int(raw)


# -- questionnaires --------------------------------------------------------------------

@router.get("/questionnaires")
def questionnaire_list(request: Request) -> Response:
    found, portal, patient = _me(request)
    done = _my_responses(portal.node, found, patient)
    return html_page(request, "portal/questionnaires.html", offered=questionnaires(),
                     done=done)


def _my_responses(node: Node, found: Caller, patient: str) -> list[dict[str, Any]]:
    repo = node.gate.for_request(found.requester)
    query = repo.parse("QuestionnaireResponse", [("subject", f"Patient/{patient}"),
                                                 ("_sort", "-_lastUpdated"),
                                                 ("_count", "50")], strict=True)
    by_url = {q.url: q for q in questionnaires().values()}
    out = []
    for stored in repo.search(query).matches:
        resource = stored.resource()
        q = by_url.get(str(resource.get("questionnaire", "")).split("|")[0])
        if q is None:
            continue
        score = total_score(resource, q)
        out.append({"title": q.title, "authored": str(resource.get("authored", ""))[:16],
                    "score": score, "severity": phq9_severity(score)
                    if q.name == "phq-9" and score is not None else None})
    return out


@router.get("/questionnaires/{name}")
def questionnaire_form(request: Request, name: str) -> Response:
    _me(request)
    q = _questionnaire(name)
    return html_page(request, "portal/questionnaire.html", q=q, missing=[], answers={})


def _questionnaire(name: str) -> Any:
    q = questionnaires().get(name)
    if q is None:
        raise PageError("There is no such questionnaire.", 404)
    return q


@router.post("/questionnaires/{name}")
async def questionnaire_answer(request: Request, name: str) -> Response:
    found, portal, patient = _me(request)
    q = _questionnaire(name)
    form = await read_form(request)
    t = translator(language(request))
    try:
        response = build_response(q, form, patient, t)
    except IncompleteAnswers as exc:
        answers = {k: v[0] for k, v in form.items() if v}
        return html_page(request, "portal/questionnaire.html", status=422, q=q,
                         missing=exc.missing, answers=answers)
    repo = portal.node.gate.for_request(found.requester)
    repo.create("QuestionnaireResponse", response, None)
    score = total_score(response, q)
    return html_page(request, "portal/questionnaire_done.html", q=q, score=score,
                     severity=phq9_severity(score) if q.name == "phq-9" and score is not None
                     else None, alert=needs_alert(response, q))
