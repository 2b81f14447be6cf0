"""The insurer's view: Coverage, Claim and ExplanationOfBenefit with costs.

Members are whole insured households: the head of household is the subscriber, partners
and children are covered as ``spouse`` / ``child`` (adult relatives hold their own policy);
people switch to a public plan at 65 and some change plan mid-window (a new Coverage).
Every encounter at a network provider (clinic, hospital, dental practice) during coverage is
a Claim (professional, institutional or oral; the clinic's lab orders are extra items) with
its adjudicated ExplanationOfBenefit; pharmacy fills appear as pharmacy EOBs only, as in
payer APIs such as CARIN Blue Button (pharmacy claims reach payers outside FHIR Claim).
Amounts are in the region's currency: eligible 85% of billed, a fixed copay, the rest paid.
"""

from __future__ import annotations

from typing import Any

from . import codes
from .clinical import Life, Med, Visit
from .sites import Chart
from .timeline import Clock, day_str

__all__ = ["claims"]

_LAB_PRICE = {"bmp": 38.0, "lipid": 52.0, "a1c": 34.0, "cbc": 28.0, "troponin": 61.0}
_GENETIC_PRICE = 2450.0
_FILL_PRICE = {"insulin": 240.0, "albuterol": 58.0, "fluticasone": 145.0, "atorvastatin": 14.0,
               "clopidogrel": 19.0}
_COPAY = {"EMER": 150.0, "IMP": 350.0, "AMB": 25.0}
_ADJ_SUBMITTED = codes.ADJUDICATION["submitted"]
_ADJ_ELIGIBLE = codes.ADJUDICATION["eligible"]
_ADJ_COPAY = codes.ADJUDICATION["copay"]
_ADJ_BENEFIT = codes.ADJUDICATION["benefit"]
_PLAN = {"commercial": ("HIP", "GRP-1001", "Commonwealth Mutual PPO"),
         "public": ("PUBLICPOL", "GRP-6500", "Commonwealth Mutual Senior (public plan)")}


def claims(chart: Chart, clock: Clock, life: Life) -> bool:
    """Add the person's Coverage, Claims and EOBs to ``chart``; False if not a member."""
    periods = life.extra["coverage"]
    if not periods:
        return False
    covers: list[tuple[int, int | None, dict[str, str]]] = [
        (start, end, chart.link(_coverage(chart, life, start, end, plan)))
        for start, end, plan in periods]
    for visit in life.visits:
        cov = _covering(covers, visit.day)
        if cov is not None and visit.site in ("clinic", "hospital", "dental"):
            _visit_claim(chart, clock, visit, cov)
    for med in life.meds:
        for day in med.fills:
            cov = _covering(covers, day)
            if cov is not None:
                chart.add(_pharmacy_eob(chart, clock, med, day, cov))
    return True


def _covering(covers: list[tuple[int, int | None, dict[str, str]]], day: int
              ) -> dict[str, str] | None:
    for start, end, ref in covers:
        if start <= day and (end is None or day <= end):
            return ref
    return None


def _coverage(chart: Chart, life: Life, start: int, end: int | None, plan: str) -> dict[str, Any]:
    person = life.person
    head = person.household.members[0]
    relationship = {"head": "self", "partner": "spouse", "child": "child"}.get(person.role, "self")
    if plan == "public" or (relationship == "child" and life.age(start) >= 26):
        relationship = "self"
    subscriber = person if relationship == "self" else head
    kind, group, name = _PLAN[plan]
    period = {"start": day_str(start)}
    if end is not None:
        period["end"] = day_str(end)
    site = chart.site
    return {
        "resourceType": "Coverage", "id": chart.new_id(), "status": "active",
        "type": codes.COVERAGE_TYPE[kind],
        "subscriber": {"reference": f"Patient/{site.patient_id(subscriber.index)}"},
        "subscriberId": site.mrn(subscriber.index), "beneficiary": chart.subject,
        "relationship": codes.SUBSCRIBER_RELATIONSHIP[relationship], "period": period,
        "payor": [site.org_ref],
        "class": [{"type": codes.COVERAGE_CLASS["group"], "value": group, "name": name},
                  {"type": codes.COVERAGE_CLASS["plan"], "value": plan}],
    }


def _items(visit: Visit) -> list[tuple[dict[str, Any], float]]:
    items = [(codes.ENC_TYPE[visit.kind][0], visit.cost)]
    if visit.site == "dental":
        share = round(visit.cost / (len(visit.procedures) + 1), 2)
        items = [(codes.ENC_TYPE["dental"][0], share)]
        items += [(codes.PROCEDURE[p], share) for p in visit.procedures]
    elif visit.site == "clinic":
        for lab in visit.labs:
            if lab.panel.startswith("genetic:"):
                items.append((codes.OBS["genetic"], _GENETIC_PRICE))
            else:
                items.append((codes.OBS[lab.panel], _LAB_PRICE[lab.panel]))
    return items


def _claim_type(visit: Visit) -> dict[str, Any]:
    if visit.site == "dental":
        return codes.CLAIM_TYPE["oral"]
    return codes.CLAIM_TYPE["institutional" if visit.cls in ("EMER", "IMP") else "professional"]


def _visit_claim(chart: Chart, clock: Clock, visit: Visit, cov: dict[str, str]) -> None:
    currency = chart.site.region.currency
    served = day_str(visit.day)
    items: list[dict[str, Any]] = [
        {"sequence": n, "productOrService": service, "servicedDate": served,
         "net": {"value": price, "currency": currency}}
        for n, (service, price) in enumerate(_items(visit), start=1)]
    total = round(sum(it["net"]["value"] for it in items), 2)
    period = clock.period(visit.day, visit.minute, visit.end, visit.end_minute)
    created = period["end"]
    provider = {"reference": f"Organization/{visit.site}"}
    kind = _claim_type(visit)
    claim: dict[str, Any] = {
        "resourceType": "Claim", "id": chart.new_id(), "status": "active", "type": kind,
        "use": "claim", "patient": chart.subject, "billablePeriod": period, "created": created,
        "provider": provider, "priority": codes.PRIORITY_NORMAL}
    if visit.reason is not None:
        claim["diagnosis"] = [{"sequence": 1,
                               "diagnosisCodeableConcept": codes.ICD10_CODING[visit.reason.key]}]
    claim["insurance"] = [{"sequence": 1, "focal": True, "coverage": cov}]
    claim["item"] = items
    claim["total"] = {"value": total, "currency": currency}
    claim_ref = chart.link(claim)
    copay = min(total, _COPAY[visit.cls] if visit.site != "dental" else 20.0)
    chart.add(_eob(chart, kind, period, created, provider, claim_ref, cov, items, total, copay,
                   currency))


def _eob(chart: Chart, kind: dict[str, Any], period: dict[str, str], created: str,
         provider: dict[str, str], claim_ref: dict[str, str] | None, cov: dict[str, str],
         claim_items: list[dict[str, Any]], total: float, copay: float,
         currency: str) -> dict[str, Any]:
    """The adjudicated claim: eligible 85% of billed, minus the copay, is paid."""
    eligible = round(0.85 * total, 2)
    benefit = round(max(0.0, eligible - copay), 2)
    ratio = benefit / total if total else 0.0
    submitted, paid = _ADJ_SUBMITTED, _ADJ_BENEFIT
    items = [{"sequence": it["sequence"], "productOrService": it["productOrService"],
              "servicedDate": it["servicedDate"], "net": it["net"],
              "adjudication": [{"category": submitted, "amount": it["net"]},
                               {"category": paid, "amount": {
                                   "value": round(it["net"]["value"] * ratio, 2),
                                   "currency": currency}}]}
             for it in claim_items]
    benefit_amount = {"value": benefit, "currency": currency}
    eob: dict[str, Any] = {
        "resourceType": "ExplanationOfBenefit", "id": chart.new_id(), "status": "active",
        "type": kind, "use": "claim", "patient": chart.subject, "billablePeriod": period,
        "created": created, "insurer": chart.site.org_ref, "provider": provider}
    if claim_ref is not None:
        eob["claim"] = claim_ref
    eob["outcome"] = "complete"
    eob["insurance"] = [{"focal": True, "coverage": cov}]
    eob["item"] = items
    eob["total"] = [{"category": submitted, "amount": {"value": total, "currency": currency}},
                    {"category": _ADJ_ELIGIBLE, "amount": {"value": eligible,
                                                           "currency": currency}},
                    {"category": _ADJ_COPAY, "amount": {"value": copay, "currency": currency}},
                    {"category": paid, "amount": benefit_amount}]
    eob["payment"] = {"amount": benefit_amount}
    return eob


def _pharmacy_eob(chart: Chart, clock: Clock, med: Med, day: int,
                  cov: dict[str, str]) -> dict[str, Any]:
    currency = chart.site.region.currency
    supply = 30 if med.key == "insulin" else 90 if med.chronic else 10
    price = round(_FILL_PRICE.get(med.key, 9.0) * (supply / 30 if med.key != "insulin" else 1), 2)
    when = clock.at(day, 660)
    item = {"sequence": 1, "productOrService": codes.MED[med.key], "servicedDate": day_str(day),
            "net": {"value": price, "currency": currency}}
    return _eob(chart, codes.CLAIM_TYPE["pharmacy"], {"start": when, "end": when}, when,
                {"reference": "Organization/pharmacy"}, None, cov, [item], price,
                min(price, 10.0), currency)
