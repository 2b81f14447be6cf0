"""ADT messages: A01, A03, A04, A08 (Patient + Encounter), A28, A31 (Patient), A40 (merge).

ADT is the authoritative demographics feed, so its Patient replaces the stored
version; the Encounter of PV1 replaces the stored visit. A40 marks the retired
record (MRG-1) inactive with ``link`` type ``replaced-by`` and gives the surviving
one (PID-3) a ``replaces`` link, as the v2-to-FHIR IG does; resources that point at
the retired patient are left as they are.
"""

from __future__ import annotations

from typing import Any

from healthmesh.hl7v2 import datatypes as dt
from healthmesh.hl7v2.context import Conversion
from healthmesh.hl7v2.errors import (
    REQUIRED_FIELD_MISSING,
    UNSUPPORTED_EVENT,
    ConversionError,
    MessageRejected,
)
from healthmesh.hl7v2.message import Segment

__all__ = ["ADT_EVENTS", "convert_adt"]

# event -> Encounter status when PV1-45 (discharge time) does not say "finished"
VISIT_EVENTS = {"A01": "in-progress", "A04": "arrived", "A08": None, "A03": "finished"}
PERSON_EVENTS = ("A28", "A31")
ADT_EVENTS = (*VISIT_EVENTS, *PERSON_EVENTS, "A40")


def convert_adt(conv: Conversion) -> None:
    """Fill ``conv`` from an ADT message."""
    msg = conv.message
    event = msg.event or _evn_event(msg.one("EVN"))
    if event not in ADT_EVENTS:
        raise MessageRejected(f"ADT event '{event}' (MSH-9.2, else EVN-1) is not supported "
                              f"({', '.join(ADT_EVENTS)})", code=UNSUPPORTED_EVENT,
                              location="MSH-9")
    if event == "A40":
        _merge(conv)
        return
    pid = _required(conv, "PID")
    patient = conv.patient(pid, "replace")
    if event in PERSON_EVENTS:
        return
    pv1 = _following(msg.segments, pid, "PV1")
    status = VISIT_EVENTS.get(event)
    if pv1 is not None and pv1.get(45) and event != "A04":
        status = "finished"
    elif status is None and pv1 is not None:
        status = "finished" if pv1.get(45) else "in-progress"
    conv.encounter(pv1, patient, status, "replace")


def _merge(conv: Conversion) -> None:
    """A40: one PID/MRG pair per merged patient (the PATIENT group repeats)."""
    segments = conv.message.segments
    pids = [s for s in segments if s.id == "PID"]
    if not pids:
        raise ConversionError("ADT^A40 has no PID segment", code=REQUIRED_FIELD_MISSING,
                              location="PID")
    for pid in pids:
        mrg = _following(segments, pid, "MRG")
        if mrg is None or not mrg.reps(1):
            raise ConversionError(f"ADT^A40: PID (segment {pid.position}) has no MRG-1 "
                                  "prior patient identifier", code=REQUIRED_FIELD_MISSING,
                                  location="MRG-1")
        survivor = conv.patient(pid, "overlay")
        old_id = conv.patient_id(mrg.reps(1), "MRG-1")
        if f"Patient/{old_id}" == survivor["reference"]:
            raise ConversionError("ADT^A40: MRG-1 names the same patient as PID-3",
                                  location="MRG-1")
        resource = conv.entries[("Patient", survivor["reference"].split("/")[1])].resource
        resource["link"] = [{"other": {"reference": f"Patient/{old_id}"}, "type": "replaces"}]
        retired: dict[str, Any] = {
            "resourceType": "Patient", "id": old_id, "active": False,
            "link": [{"other": survivor, "type": "replaced-by"}],
        }
        idents = [i for i in (dt.identifier(cx) for cx in mrg.reps(1)) if i]
        if idents:
            retired["identifier"] = idents
        conv.add(retired, "overlay")


def _required(conv: Conversion, segment_id: str) -> Segment:
    seg = conv.message.one(segment_id)
    if seg is None:
        raise ConversionError(f"{conv.message.kind} has no {segment_id} segment",
                              code=REQUIRED_FIELD_MISSING, location=segment_id)
    return seg


def _following(segments: list[Segment], after: Segment, wanted: str) -> Segment | None:
    """The first ``wanted`` segment after ``after`` and before the next PID."""
    for seg in segments[after.position:]:
        if seg.id == wanted:
            return seg
        if seg.id == "PID":
            return None
    return None


def _evn_event(evn: Segment | None) -> str:
    return evn.get(1).upper() if evn is not None else ""
