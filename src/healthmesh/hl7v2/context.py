"""What a message turns into, and the resources every message type shares.

A :class:`Conversion` collects FHIR resources with deterministic ids derived from
business identifiers, so the same patient, visit, order or result sent again
updates the resource it made before instead of adding another:

=============  ===========================================================
Patient        PID-3 identifier (MR, else PI, else the first) and its
               assigning authority, or MSH-4 when it has none
Encounter      PV1-19 visit number and authority; else patient + PV1-44
Organization   the HD (MSH-4 sending facility)
Practitioner   XCN-1 id and XCN-9 authority (else the name), per facility
=============  ===========================================================

Each resource has a write mode: ``replace`` (the message is the source of truth),
``if-absent`` (only create: a lab's sparse PID must not overwrite what ADT
sent) or ``overlay`` (merge onto the stored version: A40's retired patient).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from healthmesh.hl7v2 import datatypes as dt
from healthmesh.hl7v2.errors import REQUIRED_FIELD_MISSING, ConversionError
from healthmesh.hl7v2.message import Components, Hl7Message, Segment, part

__all__ = ["Conversion", "Entry", "make_id"]

GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown",
          "N": "unknown", "X": "other"}
ENCOUNTER_CLASS = {"I": "IMP", "O": "AMB", "E": "EMER", "P": "PRENC", "R": "AMB",
                   "B": "IMP", "C": "AMB"}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_ID_PREFERENCE = ("MR", "PI", "PT", "PN", "AN")


def make_id(*parts: str) -> str:
    """A stable resource id from business-identifier parts (40 hex characters)."""
    key = "\x1f".join(p.strip().upper() for p in parts)
    return hashlib.blake2b(key.encode(), digest_size=20).hexdigest()


@dataclass(slots=True)
class Entry:
    resource: dict[str, Any]
    mode: str = "replace"  # replace | if-absent | overlay


@dataclass
class Conversion:
    """The resources made from one message, in write order, keyed by (type, id)."""

    message: Hl7Message
    tz: tzinfo
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)

    # -- collecting -----------------------------------------------------------------

    def add(self, resource: dict[str, Any], mode: str = "replace") -> dict[str, str]:
        key = (resource["resourceType"], resource["id"])
        old = self.entries.get(key)
        if old is None or mode == "replace" or old.mode != "replace":
            self.entries[key] = Entry(resource, mode)
        return {"reference": f"{key[0]}/{key[1]}"}

    def resources(self) -> list[dict[str, Any]]:
        return [e.resource for e in self.entries.values()]

    # -- helpers ----------------------------------------------------------------------

    def when(self, seg: Segment, number: int, component: int = 1) -> str | None:
        return dt.date_time(seg.get(number, component), seg.where(number), self.tz)

    def facility(self) -> str:
        """The sender's namespace: MSH-4 (else MSH-3), for ids without an authority."""
        return dt.hd_text(self.message.sending_facility) or dt.hd_text(
            self.message.sending_application)

    def organization(self, hd: Components | None = None) -> dict[str, str] | None:
        """An Organization for an HD (default: MSH-4), created if absent."""
        hd = self.message.sending_facility if hd is None else hd
        name = dt.hd_text(hd)
        if not name:
            return None
        org: dict[str, Any] = {"resourceType": "Organization", "id": make_id("org", name),
                               "name": part(hd, 1) or name}
        uid, uid_type = part(hd, 2), part(hd, 3).upper()
        ident: dict[str, Any] = {"value": uid or name}
        if uid and uid_type == "ISO":
            ident = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{uid}"}
        org["identifier"] = [ident]
        return self.add(org, "if-absent")

    def practitioner(self, xcn: Components) -> dict[str, str] | None:
        """A Practitioner for an XCN, created if absent (None when it names nobody)."""
        ident, name = part(xcn, 1), dt.human_name(xcn, offset=1)
        if not ident and name is None:
            return None
        authority = dt.hd_text(xcn, 9) or self.facility()
        key = ident or repr(sorted(name.items()) if name else "")
        prac: dict[str, Any] = {"resourceType": "Practitioner",
                                "id": make_id("practitioner", authority, key)}
        if ident:
            entry: dict[str, Any] = {"value": ident}
            if part(xcn, 9, 2) and part(xcn, 9, 3).upper() == "ISO":
                entry["system"] = f"urn:oid:{part(xcn, 9, 2)}"
            if part(xcn, 13):
                entry["type"] = {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                    "code": part(xcn, 13)}]}
            prac["identifier"] = [entry]
        if name is not None:
            prac["name"] = [name]
        ref = self.add(prac, "if-absent")
        if name is not None:
            ref = {**ref, "display": " ".join([*name.get("given", []), name.get("family", "")])
                   .strip()}
        return ref

    # -- Patient -----------------------------------------------------------------------

    def patient_key(self, cx_list: list[Components], where: str) -> tuple[str, Components]:
        """(authority, chosen CX) of a patient identifier list (PID-3 or MRG-1)."""
        usable = [cx for cx in cx_list if part(cx, 1)]
        if not usable:
            raise ConversionError(f"{where} has no patient identifier",
                                  code=REQUIRED_FIELD_MISSING, location=where)
        ranked = sorted(usable, key=lambda cx: _rank(part(cx, 5).upper()))
        chosen = ranked[0]
        authority = dt.hd_text(chosen, 4) or self.facility()
        return authority, chosen

    def patient_id(self, cx_list: list[Components], where: str) -> str:
        authority, chosen = self.patient_key(cx_list, where)
        return make_id("patient", authority, part(chosen, 1))

    def patient(self, pid: Segment, mode: str) -> dict[str, str]:
        """The Patient of a PID segment (its id from PID-3)."""
        identifiers = pid.reps(3) or pid.reps(2) or pid.reps(4)
        resource: dict[str, Any] = {"resourceType": "Patient",
                                    "id": self.patient_id(identifiers, "PID-3"), "active": True}
        idents = [i for i in (dt.identifier(cx) for cx in
                              [*pid.reps(3), *pid.reps(2), *pid.reps(4)]) if i]
        ssn_ident = dt.identifier([[pid.get(19)]], type_code="SS")
        if ssn_ident and not any(i.get("system", "").endswith("us-ssn") for i in idents):
            idents.append(ssn_ident)
        _put(resource, "identifier", idents)
        _put(resource, "name", [n for n in (dt.human_name(x) for x in pid.reps(5)) if n])
        telecom = [t for t in (dt.contact_point(x) for x in pid.reps(13)) if t]
        for xtn in pid.reps(14):  # PID-14 is the business number
            point = dt.contact_point(xtn)
            if point is not None:
                telecom.append({**point, "use": point.get("use", "work")})
        _put(resource, "telecom", telecom)
        sex = pid.get(8).upper()
        if sex:
            resource["gender"] = GENDER.get(sex, "unknown")
        birth = dt.date(pid.get(7), "PID-7 birth date")
        if birth:
            resource["birthDate"] = birth
        _put(resource, "address", [a for a in (dt.address(x) for x in pid.reps(11)) if a])
        marital = dt.codeable(pid.first(16), "HL70002")
        if marital:
            resource["maritalStatus"] = marital
        death = self.when(pid, 29)
        if death:
            resource["deceasedDateTime"] = death
        elif pid.get(30).upper() in ("Y", "N"):
            resource["deceasedBoolean"] = pid.get(30).upper() == "Y"
        language = dt.codeable(pid.first(15), "ISO639")
        if language:
            resource["communication"] = [{"language": language}]
        org = self.organization()
        if org is not None:
            resource["managingOrganization"] = org
        return self.add(resource, mode)

    # -- Encounter ---------------------------------------------------------------------

    def encounter(self, pv1: Segment | None, patient: dict[str, str], status: str | None,
                  mode: str) -> dict[str, str] | None:
        """The Encounter of a PV1 (None without one, or for class N, not applicable)."""
        if pv1 is None:
            return None
        code = pv1.get(2).upper()
        if code == "N":
            return None
        visit = pv1.first(19)
        start, end = self.when(pv1, 44), self.when(pv1, 45)
        if part(visit, 1):
            rid = make_id("encounter", dt.hd_text(visit, 4) or self.facility(), part(visit, 1))
        elif start:
            rid = make_id("encounter", patient["reference"], start)
        elif code:
            rid = make_id("encounter", self.facility(), self.message.control_id)
        else:
            return None  # an empty PV1 (optional segment sent blank)
        klass = ENCOUNTER_CLASS.get(code)
        enc: dict[str, Any] = {
            "resourceType": "Encounter", "id": rid,
            "status": status or ("finished" if end else "in-progress"),
            "class": {"system": ACT_CODE, "code": klass} if klass else {
                "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"},
            "subject": patient,
        }
        ident = dt.identifier(visit, type_code="VN")
        if ident:
            enc["identifier"] = [ident]
        if start or end:
            enc["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        _put(enc, "participant", self._participants(pv1))
        where = [x for x in (part(pv1.first(3), 1), part(pv1.first(3), 2),
                             part(pv1.first(3), 3), dt.hd_text(pv1.first(3), 4)) if x]
        if where:
            enc["location"] = [{"location": {"display": " ".join(where)}}]
        hosp: dict[str, Any] = {}
        for key, number, table in (("admitSource", 14, "HL70023"),
                                   ("dischargeDisposition", 36, "HL70112")):
            concept = dt.codeable(pv1.first(number), table)
            if concept:
                hosp[key] = concept
        if hosp:
            enc["hospitalization"] = hosp
        org = self.organization()
        if org is not None:
            enc["serviceProvider"] = org
        return self.add(enc, mode)

    def _participants(self, pv1: Segment) -> list[dict[str, Any]]:
        out = []
        for number, code in ((7, "ATND"), (8, "REF"), (9, "CON"), (17, "ADM")):
            for xcn in pv1.reps(number):
                ref = self.practitioner(xcn)
                if ref is not None:
                    out.append({"type": [{"coding": [{"system": PARTICIPATION, "code": code}]}],
                                "individual": ref})
        return out


def _rank(code: str) -> int:
    return _ID_PREFERENCE.index(code) if code in _ID_PREFERENCE else len(_ID_PREFERENCE) + (
        1 if code in ("SS", "DL", "PPN") else 0)


def _put(resource: dict[str, Any], key: str, values: list[Any]) -> None:
    if values:
        resource[key] = values
