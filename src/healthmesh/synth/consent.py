"""FHIR R4 Consent resources held by the clinic and the hospital.

Each adult patient is asked (85%) for a research consent (scope ``research``, category LOINC
59284-0, policy rule ``hipaa-research``, purpose HRESCH): about 70% permit, the rest deny
(opt-out); about 6% of those who permitted revoke later (status ``inactive``, provision
period ended on the revocation day); 15% of permits exclude a sensitive category through a
nested ``deny`` provision with a v3 ActCode security label (GDIS, PSY, HIV). Half the
patients also sign a privacy consent (scope ``patient-privacy``, policy ``hipaa-npp``)
permitting treatment, payment, operations and public health (TREAT, HPAYMT, HOPERAT,
PUBHLTH), 12% of them with a nested deny for PSY, ETH, HIV or STD data.

A person's decisions are the same at both sites (they are the person's); dates differ.
"""

from __future__ import annotations

from typing import Any

from . import codes
from .codes import V3_REASON, coding
from .sites import Chart
from .timeline import Clock, day_str

__all__ = ["consents"]

_CS = "http://terminology.hl7.org/CodeSystem/"
_SCOPE = {k: codes.concept(_CS + "consentscope", k, d) for k, d in (
    ("research", "Research"), ("patient-privacy", "Privacy Consent"))}
_CATEGORY = [codes.concept(codes.LOINC, "59284-0", "Patient Consent")]
_POLICY = {k: codes.concept(_CS + "consentpolicycodes", k, d) for k, d in (
    ("hipaa-research", "HIPAA Research Authorization"),
    ("hipaa-npp", "HIPAA Notice of Privacy Practices"))}
_PURPOSE = {k: coding(V3_REASON, k, d) for k, d in (
    ("HRESCH", "healthcare research"), ("TREAT", "treatment"), ("HPAYMT", "healthcare payment"),
    ("HOPERAT", "healthcare operations"), ("PUBHLTH", "public health"))}
_PRIVACY_PURPOSES = [_PURPOSE[k] for k in ("TREAT", "HPAYMT", "HOPERAT", "PUBHLTH")]


def consents(chart: Chart, clock: Clock, decisions: dict[str, Any], day: int, minute: int,
             window_end: int) -> None:
    """Research and privacy Consents signed on ``day`` (the patient's first visit)."""
    day = min(window_end, day + decisions["day_offset"])
    if decisions["asked"]:
        chart.add(_research(chart, clock, decisions, day, minute, window_end))
    if decisions["privacy"]:
        chart.add(_privacy(chart, clock, decisions, day, minute))


def _base(chart: Chart, clock: Clock, scope: str, policy: str, day: int, minute: int,
          status: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "id": chart.new_id(), "status": status,
            "scope": _SCOPE[scope], "category": _CATEGORY, "patient": chart.subject,
            "dateTime": clock.at(day, minute), "performer": [chart.subject],
            "organization": [chart.site.org_ref], "policyRule": _POLICY[policy]}


def _research(chart: Chart, clock: Clock, decisions: dict[str, Any], day: int, minute: int,
              window_end: int) -> dict[str, Any]:
    revoke = decisions["revoke_after"]
    revoked = revoke is not None and day + revoke <= window_end
    res = _base(chart, clock, "research", "hipaa-research", day, minute,
                "inactive" if revoked else "active")
    period = {"start": day_str(day)}
    if revoked:
        period["end"] = day_str(day + revoke)
    provision: dict[str, Any] = {"type": "permit" if decisions["permit"] else "deny",
                                 "period": period, "purpose": [_PURPOSE["HRESCH"]]}
    label = decisions["research_deny"]
    if label is not None:
        provision["provision"] = [{"type": "deny", "securityLabel": codes.SECURITY[label]}]
    res["provision"] = provision
    return res


def _privacy(chart: Chart, clock: Clock, decisions: dict[str, Any], day: int,
             minute: int) -> dict[str, Any]:
    res = _base(chart, clock, "patient-privacy", "hipaa-npp", day, minute, "active")
    provision: dict[str, Any] = {"type": "permit", "period": {"start": day_str(day)},
                                 "purpose": _PRIVACY_PURPOSES}
    label = decisions["privacy_deny"]
    if label is not None:
        provision["provision"] = [{"type": "deny", "securityLabel": codes.SECURITY[label]}]
    res["provision"] = provision
    return res
