"""Audit entries as FHIR R4 ``AuditEvent`` resources (for export and for patients).

Mapping of an :class:`~healthmesh.audit.AuditEntry`:

============================  ==========================================================
``type``                      ``rest`` (audit-event-type) for FHIR interactions; DICOM
                              ``110106`` Export for export, federated tasks and linkage,
                              ``110114`` User Authentication for login, ``110100``
                              Application Activity for admin and unknown actions
``subtype``                   the restful-interaction code where one fits, then the
                              healthmesh action itself (``urn:healthmesh:codesystem:
                              audit-action``)
``action``                    C create; R read/vread/history; U update/patch/
                              consent-change; D delete; E search and operations
``recorded``                  the record time (instant, microseconds, UTC)
``outcome``                   0 success (status < 400), 4 minor failure (4xx, e.g. a
                              denied request), 8 serious failure (5xx, ``failure``)
``outcomeDesc``               the decision's reason
``purposeOfEvent``            the purpose, coded in v3-ActReason
``agent[0]``                  the actor (``who.reference`` when it is a FHIR reference an
                              agent may hold, else ``who.display``), ``requestor`` true
``agent[1]``                  the organisation, when given and not the actor
``source``                    ``observer.display`` and ``site`` = the node name
``entity``                    patients (role 1 Patient), resources (role 4 Domain
                              Resource), resource types without a resource (role 24 Query)
``extension``                 ``urn:healthmesh:extension:audit-log-entry``: position,
                              hash, log, decision, rule, requestId, detail
============================  ==========================================================
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from healthmesh.audit.records import AuditEntry, AuditRecord

__all__ = ["EXTENSION_URL", "instant_us", "to_audit_event"]

EXTENSION_URL = "urn:healthmesh:extension:audit-log-entry"
ACTION_SYSTEM = "urn:healthmesh:codesystem:audit-action"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_DICOM = "http://dicom.nema.org/resources/ontology/DCM"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_INTEGER = 2**31 - 1

_ACTION_CODES = {
    "create": "C", "read": "R", "vread": "R", "history": "R", "update": "U", "patch": "U",
    "consent-change": "U", "delete": "D",
}
_INTERACTIONS = {
    "read": "read", "vread": "vread", "search": "search", "history": "history",
    "create": "create", "update": "update", "patch": "patch", "delete": "delete",
    "transaction": "transaction", "operation": "operation", "everything": "operation",
    "export": "operation",
}
_REST = {"code": "rest", "display": "RESTful Operation", "system": _EVENT_TYPE}
_EXPORT = {"system": _DICOM, "code": "110106", "display": "Export"}
_TYPES = {
    "export": _EXPORT, "federated-task": _EXPORT, "linkage": _EXPORT,
    "login": {"system": _DICOM, "code": "110114", "display": "User Authentication"},
    "admin": {"system": _DICOM, "code": "110100", "display": "Application Activity"},
    "consent-change": _REST, "everything": _REST,
}
_AGENT_REFERENCE = re.compile(
    r"(Practitioner|PractitionerRole|Organization|Device|Patient|RelatedPerson)"
    r"/[A-Za-z0-9\-.]{1,64}"
)
_ROLES = {
    "patient": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
    "resource": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
    "query": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
}


def instant_us(us: int) -> str:
    """Epoch microseconds as a FHIR instant with microsecond precision (UTC)."""
    moment = _EPOCH + timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


def _event_type(action: str) -> dict[str, str]:
    if action in _TYPES:
        return dict(_TYPES[action])
    return dict(_REST) if action in _INTERACTIONS else dict(_TYPES["admin"])


def _subtypes(action: str) -> list[dict[str, str]]:
    out = [{"system": ACTION_SYSTEM, "code": action}]
    if action in _INTERACTIONS:
        out.insert(0, {"system": _INTERACTION, "code": _INTERACTIONS[action]})
    return out


def _outcome(outcome: int | str) -> str:
    if outcome == "success":
        return "0"
    if outcome == "failure" or not isinstance(outcome, int):
        return "8"
    return "0" if outcome < 400 else "4" if outcome < 500 else "8"


def _who(actor: str) -> dict[str, Any]:
    if _AGENT_REFERENCE.fullmatch(actor):
        return {"reference": actor}
    return {"identifier": {"system": "urn:healthmesh:actor", "value": actor}, "display": actor}


def _agents(record: AuditRecord) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = [{"who": _who(record.actor), "requestor": True}]
    org = record.organisation
    if org and org != record.actor and org != record.actor.removeprefix("Organization/"):
        reference = org if org.startswith("Organization/") else f"Organization/{org}"
        agents.append({"who": _who(reference), "requestor": False})
    return agents


def _type_coding(rtype: str) -> dict[str, str]:
    return {"system": _RESOURCE_TYPES, "code": rtype}


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    patient_refs = {f"Patient/{p}" for p in record.patients}
    out: list[dict[str, Any]] = [
        {"what": {"reference": f"Patient/{p}"}, "type": _type_coding("Patient"),
         "role": _ROLES["patient"]}
        for p in dict.fromkeys(record.patients)
    ]
    out += [
        {"what": {"reference": ref}, "type": _type_coding(ref.split("/", 1)[0]),
         "role": _ROLES["resource"]}
        for ref in dict.fromkeys(record.resources) if ref not in patient_refs
    ]
    named = {ref.split("/", 1)[0] for ref in record.resources} | (
        {"Patient"} if record.patients else set())
    role = _ROLES["query"] if record.action == "search" else _ROLES["resource"]
    out += [{"type": _type_coding(t), "role": role, "description": f"{t} resources"}
            for t in dict.fromkeys(record.resource_types) if t not in named]
    return out


def _extension(entry: AuditEntry, log_id: str | None) -> dict[str, Any]:
    record = entry.record
    position: dict[str, Any] = (
        {"valueInteger": entry.position} if entry.position <= _MAX_INTEGER
        else {"valueString": str(entry.position)}
    )
    parts: list[dict[str, Any]] = [
        {"url": "position", **position},
        {"url": "hash", "valueString": entry.hash},
        {"url": "decision", "valueCode": record.decision},
    ]
    optional = {
        "log": f"urn:uuid:{log_id}" if log_id else None, "rule": record.rule,
        "requestId": record.request_id,
        "detail": orjson.dumps(record.detail, option=orjson.OPT_SORT_KEYS).decode()
        if record.detail else None,
    }
    parts += [{"url": url, "valueString": value} for url, value in optional.items() if value]
    return {"url": EXTENSION_URL, "extension": parts}


def to_audit_event(
    entry: AuditEntry, *, node_name: str = "healthmesh node", log_id: str | None = None
) -> dict[str, Any]:
    """The FHIR R4 AuditEvent for one entry (see the module docstring for the mapping)."""
    record = entry.record
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(entry.position),
        "extension": [_extension(entry, log_id)],
        "type": _event_type(record.action),
        "subtype": _subtypes(record.action),
        "action": _ACTION_CODES.get(record.action, "E"),
        "recorded": instant_us(record.time),
        "outcome": _outcome(record.outcome),
    }
    if record.reason:
        event["outcomeDesc"] = record.reason
    if record.purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": _ACT_REASON, "code": record.purpose}]}]
    event["agent"] = _agents(record)
    event["source"] = {
        "site": node_name, "observer": {"display": node_name},
        "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    entities = _entities(record)
    if entities:
        event["entity"] = entities
    return event
