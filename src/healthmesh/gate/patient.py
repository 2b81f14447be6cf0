"""What a patient can do about their own data at a node: see and change consents,
get a receipt, and see every access to their records.

Only the patient (authenticated by a patient token) reaches these functions through
the API; every change is written as a FHIR Consent (so the gate enforces it at once)
and audited as a ``consent-change``.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from healthmesh.audit import AuditRecord
from healthmesh.consent.text import PURPOSE_NAMES, describe
from healthmesh.errors import InvalidRequest, NotFound
from healthmesh.fhir.service import FhirService
from healthmesh.gate.egress import GuardedRepository
from healthmesh.gate.requester import Requester
from healthmesh.node import Node
from healthmesh.store.base import StoredResource

__all__ = ["ConsentChoice", "PatientPortal"]

V3_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
V3_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
LABELS = {"PSY": "mental health", "HIV": "HIV", "ETH": "substance use", "GDIS": "genetic",
          "SEX": "sexual health", "STD": "sexually transmitted disease", "SDV": "sexual and "
          "domestic violence"}


@dataclass(frozen=True, slots=True)
class ConsentChoice:
    """A patient's choice: allow or refuse a purpose, optionally for one recipient and
    except some sensitive categories."""

    purpose: str
    allow: bool
    recipient: str | None = None
    except_labels: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.purpose not in PURPOSE_NAMES:
            raise InvalidRequest(f"Unknown purpose '{self.purpose}'; one of "
                                 f"{', '.join(sorted(PURPOSE_NAMES))}")
        unknown = [x for x in self.except_labels if x not in LABELS]
        if unknown:
            raise InvalidRequest(f"Unknown sensitive categories: {', '.join(unknown)}")


class PatientPortal:
    """The patient-facing operations of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.fhir: FhirService = node.fhir

    def _repo(self, patient: str) -> GuardedRepository:
        """The patient's own guarded repository: their reads are audited like any other."""
        return self.node.gate.for_request(Requester(f"Patient/{patient}", "PATRQT", patient))

    def my_data(self, patient: str) -> list[StoredResource]:
        """Everything this node holds about the patient (the right of access)."""
        return self._repo(patient).everything(patient)

    # -- consents ---------------------------------------------------------------------

    def consents(self, patient: str) -> list[dict[str, Any]]:
        """The patient's consents with plain-language sentences, newest first."""
        rows = self.node.gate.scopes.consents_of(patient)
        out = []
        repo = self._repo(patient)
        for parsed in rows:
            if parsed.id is None:  # stored Consents always have an id
                continue
            stored = repo.read("Consent", parsed.id)
            out.append({"id": parsed.id, "status": parsed.status,
                        "updated": stored.resource()["meta"]["lastUpdated"],
                        "plain_language": describe(parsed)})
        return sorted(out, key=lambda c: c["updated"], reverse=True)

    def grant(self, patient: str, choice: ConsentChoice) -> dict[str, Any]:
        """Record a choice as a new active Consent; returns its receipt.

        The patient's earlier active consents about the same purpose and recipient are
        made inactive in the same transaction: the newest choice is the one that holds
        (otherwise an old refusal would outweigh a new yes, since a deny wins).
        """
        choice.validate()
        consent = _consent(patient, choice)
        with self.fhir.store.transaction():
            for old in self._superseded(patient, choice):
                old["status"] = "inactive"
                self.fhir.update("Consent", old["id"], old)
                self._audit(patient, "replace", old["id"])
            result = self.fhir.update("Consent", consent["id"], consent)
        self._audit(patient, "grant" if choice.allow else "refuse", result.stored.id)
        return self.receipt(patient, result.stored.id)

    def _superseded(self, patient: str, choice: ConsentChoice) -> list[dict[str, Any]]:
        recipients = frozenset({choice.recipient} if choice.recipient else ())
        out = []
        for parsed in self.node.gate.scopes.consents_of(patient):
            root = parsed.provision
            same_recipients = frozenset(a.reference for a in root.recipients) == recipients
            if parsed.status == "active" and choice.purpose in root.purposes \
                    and same_recipients and parsed.id:
                out.append(self._own(patient, parsed.id))
        return out

    def revoke(self, patient: str, consent_id: str) -> dict[str, Any]:
        """Make one of the patient's consents inactive at once; returns the receipt."""
        resource = self._own(patient, consent_id)
        resource["status"] = "inactive"
        self.fhir.update("Consent", consent_id, resource)
        self._audit(patient, "revoke", consent_id)
        return self.receipt(patient, consent_id)

    def _own(self, patient: str, consent_id: str) -> dict[str, Any]:
        stored = self._repo(patient).read("Consent", consent_id)
        resource = stored.resource()
        if resource.get("patient", {}).get("reference") != f"Patient/{patient}":
            raise NotFound(f"Consent/{consent_id} is not known")
        return resource

    def receipt(self, patient: str, consent_id: str) -> dict[str, Any]:
        """What was agreed, when, with whom, and how to revoke it."""
        resource = self._own(patient, consent_id)
        node_name = self.node.settings.name
        return {
            "consent": f"Consent/{consent_id}",
            "patient": f"Patient/{patient}",
            "status": resource["status"],
            "recorded": resource["meta"]["lastUpdated"],
            "version": resource["meta"]["versionId"],
            "organisation": node_name,
            "agreed": describe(resource),
            "how_to_revoke": (f"Revoke at any time in the patient portal of {node_name}, or "
                              f"with POST /patient/consents/{consent_id}/revoke. A revocation "
                              "takes effect for the very next request."),
        }

    # -- transparency -----------------------------------------------------------------

    def access_log(self, patient: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Every recorded access to the patient's records, newest first."""
        entries = self.node.audit.entries(patient=patient, limit=limit, offset=offset)
        return [_access(e.position, e.record) for e in entries]

    def _audit(self, patient: str, what: str, consent_id: str) -> None:
        self.node.audit.append(AuditRecord(
            actor=f"Patient/{patient}", action="consent-change", purpose="PATRQT",
            resource_types=("Consent",), resources=(f"Consent/{consent_id}",),
            patients=(patient,), decision="permit", rule="patient:own-consent",
            reason=f"The patient chose to {what}", outcome="success",
        ))


def _consent(patient: str, choice: ConsentChoice) -> dict[str, Any]:
    scope = "research" if choice.purpose == "HRESCH" else "patient-privacy"
    provision: dict[str, Any] = {
        "type": "permit" if choice.allow else "deny",
        "purpose": [{"system": V3_REASON, "code": choice.purpose}],
    }
    if choice.recipient:
        provision["actor"] = [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP"}]}, "reference": {"reference": choice.recipient}}]
    if choice.except_labels:
        provision["provision"] = [{
            "type": "deny" if choice.allow else "permit",
            "securityLabel": [{"system": V3_CODE, "code": c} for c in choice.except_labels],
        }]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "resourceType": "Consent", "id": uuid.uuid4().hex, "status": "active",
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": scope}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"}, "dateTime": now,
        "performer": [{"reference": f"Patient/{patient}"}],
        "policyRule": {"coding": [{"system": V3_CODE,
                                   "code": "OPTIN" if choice.allow else "OPTOUT"}]},
        "provision": provision,
    }


def _access(position: int, record: Any) -> dict[str, Any]:
    when = datetime.fromtimestamp(record.time / 1_000_000, UTC).isoformat(timespec="seconds")
    return {
        "entry": position, "when": when, "who": record.actor,
        "organisation": record.organisation, "purpose": record.purpose,
        "purpose_text": PURPOSE_NAMES.get(record.purpose or "", record.purpose),
        "action": record.action, "resource_types": list(record.resource_types),
        "decision": record.decision, "rule": record.rule, "reason": record.reason,
    }


def receipt_html(receipt: dict[str, Any]) -> str:
    """A printable consent receipt."""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in receipt["agreed"])
    esc = {k: html.escape(str(v)) for k, v in receipt.items() if isinstance(v, str)}
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Consent receipt</title><style>body{font-family:sans-serif;max-width:40em;"
        "margin:2em auto;line-height:1.5}dt{font-weight:bold}</style></head><body>"
        f"<h1>Consent receipt</h1><dl><dt>Organisation</dt><dd>{esc['organisation']}</dd>"
        f"<dt>Consent</dt><dd>{esc['consent']} (version {esc['version']}, "
        f"status {esc['status']})</dd><dt>Recorded</dt><dd>{esc['recorded']}</dd>"
        f"<dt>What you agreed</dt><dd><ul>{items}</ul></dd>"
        f"<dt>How to revoke</dt><dd>{esc['how_to_revoke']}</dd></dl></body></html>"
    )
