"""ORU^R01 results -> DiagnosticReport + Observation; ORM^O01 / OML^O21 -> ServiceRequest.

Segments are read in order: PID starts a patient, PV1 its visit, ORC an order,
OBR a request or report, OBX a result of the current OBR (or a patient-level
observation before any OBR), NTE a note on what precedes it. The patient of a
result message is created only if absent (ADT owns demographics).

Ids: a report is keyed by its filler order number (OBR-3, else ORC-3), else its
placer order number, else MSH-10 + its OBR position; an observation by its report,
OBX-3 code, OBX-4 sub-id and how often that pair occurred before, so a corrected
result (OBX-11 ``C``) sent later updates the observation it corrects.
"""

from __future__ import annotations

from typing import Any

from healthmesh.hl7v2 import datatypes as dt
from healthmesh.hl7v2.context import Conversion, make_id
from healthmesh.hl7v2.errors import DATA_TYPE_ERROR, REQUIRED_FIELD_MISSING, ConversionError
from healthmesh.hl7v2.message import Segment, part
from healthmesh.hl7v2.units import interpretation, number, quantity, reference_range

__all__ = ["convert_orders", "convert_results"]

OBS_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "preliminary",
              "S": "preliminary", "I": "registered", "O": "registered", "A": "amended",
              "X": "cancelled", "D": "entered-in-error", "W": "entered-in-error",
              "U": "final", "N": "unknown"}
REPORT_STATUS = {"O": "registered", "I": "registered", "S": "registered", "A": "partial",
                 "P": "preliminary", "C": "corrected", "R": "partial", "F": "final",
                 "X": "cancelled", "Y": "unknown", "Z": "unknown"}
ORDER_CONTROL = {"NW": "active", "XO": "active", "RL": "active", "OK": "active",
                 "CA": "revoked", "OC": "revoked", "DC": "revoked", "OD": "revoked",
                 "CR": "revoked", "HD": "on-hold", "OH": "on-hold"}
ORDER_STATUS = {"CM": "completed", "IP": "active", "SC": "active", "A": "active",
                "CA": "revoked", "DC": "revoked", "HD": "on-hold", "ER": "entered-in-error"}
PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "urgent", "T": "urgent"}
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"


class _Walk:
    """The current patient, visit and order while walking a message's segments."""

    def __init__(self, conv: Conversion) -> None:
        self.conv = conv
        self.patient: dict[str, str] | None = None
        self.encounter: dict[str, str] | None = None
        self.orc: Segment | None = None

    def on_patient_segment(self, seg: Segment) -> bool:
        if seg.id == "PID":
            self.patient, self.encounter, self.orc = self.conv.patient(seg, "if-absent"), None, None
        elif seg.id == "PV1" and self.patient is not None:
            self.encounter = self.conv.encounter(seg, self.patient, None, "if-absent")
        elif seg.id == "ORC":
            self.orc = seg
        else:
            return False
        return True

    def need_patient(self, seg: Segment) -> dict[str, str]:
        if self.patient is None:
            raise ConversionError(f"{seg.id} (segment {seg.position}) comes before any PID",
                                  code=REQUIRED_FIELD_MISSING, location="PID")
        return self.patient


def order_key(conv: Conversion, obr: Segment | None, orc: Segment | None,
              prefer_filler: bool) -> str:
    """The business key of an order/report: filler or placer order number, else position."""
    def ei(seg: Segment | None, number: int) -> str:
        if seg is None or not seg.get(number):
            return ""
        return f"{seg.get(number, 2) or seg.get(number, 3) or conv.facility()}|{seg.get(number)}"

    filler = ei(obr, 3) or ei(orc, 3)
    placer = ei(obr, 2) or ei(orc, 2)
    first, second = (filler, placer) if prefer_filler else (placer, filler)
    if first:
        return ("F|" if prefer_filler else "P|") + first
    if second:
        return ("P|" if prefer_filler else "F|") + second
    where = obr or orc
    position = where.position if where is not None else 0
    return f"M|{conv.facility()}|{conv.message.control_id}|{position}"


def _order_identifiers(obr: Segment | None, orc: Segment | None) -> list[dict[str, Any]]:
    out = []
    for code, field in (("PLAC", 2), ("FILL", 3)):
        seg = obr if obr is not None and obr.get(field) else orc
        if seg is None or not seg.get(field):
            continue
        ident: dict[str, Any] = {"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]},
            "value": seg.get(field)}
        if seg.get(field, 2):
            ident["assigner"] = {"display": seg.get(field, 2)}
        out.append(ident)
    return out


# -- ORU ------------------------------------------------------------------------------


def convert_results(conv: Conversion) -> None:
    """ORU^R01: one DiagnosticReport per OBR, one Observation per OBX."""
    walk = _Walk(conv)
    report: dict[str, Any] | None = None
    seen: dict[tuple[str, str], int] = {}
    last: dict[str, Any] | None = None
    loose = 0
    for seg in conv.message.segments[1:]:
        if walk.on_patient_segment(seg):
            report, last = None, None
        elif seg.id == "OBR":
            report = _report(conv, walk, seg)
            seen, last = {}, report
        elif seg.id == "OBX":
            patient = walk.need_patient(seg)
            if report is None:
                loose += 1
                key = f"M|{conv.facility()}|{conv.message.control_id}|obx|{loose}"
            else:
                code = (seg.get(3), seg.get(4))
                seen[code] = seen.get(code, 0) + 1
                key = f"{report['_key']}|{code[0]}|{code[1]}|{seen[code]}"
            last = _observation(conv, walk, seg, patient, report, key)
        elif seg.id == "NTE" and last is not None:
            _note(last, seg)
    for entry in conv.entries.values():
        entry.resource.pop("_key", None)


def _report(conv: Conversion, walk: _Walk, obr: Segment) -> dict[str, Any]:
    patient = walk.need_patient(obr)
    key = order_key(conv, obr, walk.orc, prefer_filler=True)
    code = dt.codeable(obr.first(4))
    if code is None:
        raise ConversionError(f"OBR (segment {obr.position}) has no OBR-4 universal service "
                              "identifier", code=REQUIRED_FIELD_MISSING, location="OBR-4")
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": make_id("report", key), "_key": key,
        "status": REPORT_STATUS.get(obr.get(25).upper(), "unknown"), "code": code,
        "subject": patient,
    }
    idents = _order_identifiers(obr, walk.orc)
    if idents:
        report["identifier"] = idents
    section = obr.get(24)
    report["category"] = [{"coding": [{"system": _V2_0074, "code": section or "LAB"}]}]
    if walk.encounter is not None:
        report["encounter"] = walk.encounter
    effective = conv.when(obr, 7)
    if effective:
        report["effectiveDateTime"] = effective
    issued = conv.when(obr, 22)
    if issued:
        report["issued"] = issued
    org = conv.organization()
    if org is not None:
        report["performer"] = [org]
    conv.add(report)
    return report


def _observation(conv: Conversion, walk: _Walk, obx: Segment, patient: dict[str, str],
                 report: dict[str, Any] | None, key: str) -> dict[str, Any]:
    code = dt.codeable(obx.first(3))
    if code is None:
        raise ConversionError(f"OBX (segment {obx.position}) has no OBX-3 observation "
                              "identifier", code=REQUIRED_FIELD_MISSING, location="OBX-3")
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": make_id("observation", key),
        "status": OBS_STATUS.get(obx.get(11).upper(), "unknown"),
        "category": [{"coding": [{"system": _CATEGORY, "code": "laboratory"}]}],
        "code": code, "subject": patient,
    }
    if walk.encounter is not None:
        obs["encounter"] = walk.encounter
    effective = conv.when(obx, 14) or (report or {}).get("effectiveDateTime")
    if effective:
        obs["effectiveDateTime"] = effective
    _value(conv, obs, obx)
    unit_text, unit_system = obx.get(6, 1) or obx.get(6, 2), obx.get(6, 3)
    rng = reference_range(obx.get(7), unit_text, unit_system)
    if rng:
        obs["referenceRange"] = [rng]
    flags = [i for i in (interpretation(part(f, 1), part(f, 2)) for f in obx.reps(8)) if i]
    if flags:
        obs["interpretation"] = flags
    performers = [p for p in (conv.practitioner(x) for x in obx.reps(16)) if p]
    if performers:
        obs["performer"] = performers
    ref = conv.add(obs)
    if report is not None:
        report.setdefault("result", []).append(ref)
    return obs


def _value(conv: Conversion, obs: dict[str, Any], obx: Segment) -> None:
    """OBX-5 by OBX-2 value type; repetitions of a numeric value after the first go to a note."""
    vtype = obx.get(2).upper()
    reps = obx.reps(5)
    if not reps:
        return
    unit_text, unit_system = obx.get(6, 1) or obx.get(6, 2), obx.get(6, 3)
    if vtype == "NM":
        values = [_numeric(part(r, 1), obx) for r in reps]
        obs["valueQuantity"] = quantity(values[0][1], unit_text, unit_system, values[0][0])
        if len(reps) > 1:
            _add_note(obs, "further values: " + ", ".join(part(r, 1) for r in reps[1:]))
    elif vtype == "SN":
        _structured_numeric(obs, reps[0], unit_text, unit_system, obx)
    elif vtype in ("CE", "CWE", "CNE", "CF"):
        concept = dt.codeable(reps[0])
        if concept:
            obs["valueCodeableConcept"] = concept
    elif vtype in ("DT", "TS", "DTM"):
        when = dt.date(part(reps[0], 1), "OBX-5") if vtype == "DT" else \
            dt.date_time(part(reps[0], 1), "OBX-5", conv.tz)
        if when:
            obs["valueDateTime"] = when
    elif vtype in ("ED",):
        _add_note(obs, f"encapsulated data ({part(reps[0], 2)}/{part(reps[0], 3)}) not stored")
    else:  # ST, TX, FT, RP, ID, IS and unknown types: the text as sent
        text = "\n".join("^".join("&".join(c) for c in r).rstrip("^") if vtype != "RP"
                         else part(r, 1) for r in reps)
        obs["valueString"] = text


def _numeric(text: str, obx: Segment) -> tuple[str | None, float | int]:
    text = text.strip()
    comparator = None
    for sign in ("<=", ">=", "<", ">"):
        if text.startswith(sign):
            comparator, text = sign, text[len(sign):]
            break
    value = number(text)
    if value is None:
        raise ConversionError(f"OBX-5 '{text}' of OBX (segment {obx.position}) is not a number "
                              "though OBX-2 says NM", code=DATA_TYPE_ERROR, location="OBX-5")
    return comparator, value


def _structured_numeric(obs: dict[str, Any], sn: list[list[str]], unit_text: str,
                        unit_system: str, obx: Segment) -> None:
    comparator, first, sep, second = (part(sn, 1), part(sn, 2), part(sn, 3), part(sn, 4))
    low = number(first) if first else None
    if first and low is None:
        raise ConversionError(f"OBX-5 structured numeric '{first}' is not a number",
                              code=DATA_TYPE_ERROR, location="OBX-5")
    high = number(second) if second else None
    if sep in ("-", "") and second and high is not None and low is not None:
        obs["valueRange"] = {"low": quantity(low, unit_text, unit_system),
                             "high": quantity(high, unit_text, unit_system)}
    elif sep in (":", "/") and high is not None and low is not None:
        obs["valueRatio"] = {"numerator": {"value": low}, "denominator": {"value": high}}
    elif low is not None:
        cmp = comparator if comparator in ("<", "<=", ">", ">=") else None
        obs["valueQuantity"] = quantity(low, unit_text, unit_system, cmp)


def _note(resource: dict[str, Any], nte: Segment) -> None:
    text = "\n".join(part(r, 1) for r in nte.reps(3))
    if text:
        _add_note(resource, text)


def _add_note(resource: dict[str, Any], text: str) -> None:
    if resource.get("resourceType") == "DiagnosticReport":
        resource["conclusion"] = "\n".join(filter(None, [resource.get("conclusion"), text]))
    else:
        resource.setdefault("note", []).append({"text": text})


# -- ORM / OML ----------------------------------------------------------------------------


def convert_orders(conv: Conversion) -> None:
    """ORM^O01 / OML^O21: one ServiceRequest per ORC (with the OBR that follows it)."""
    walk = _Walk(conv)
    segments = conv.message.segments
    current: dict[str, Any] | None = None
    made = 0
    for index, seg in enumerate(segments[1:], start=1):
        if seg.id == "ORC":
            walk.orc = seg
            obr = _next_obr(segments, index)
            current = _service_request(conv, walk, seg, obr)
            made += 1
        elif seg.id == "NTE" and current is not None:
            _note(current, seg)
        elif seg.id in ("PID", "PV1"):
            walk.on_patient_segment(seg)
            current = None
    if not made:
        raise ConversionError(f"{conv.message.kind} has no ORC segment",
                              code=REQUIRED_FIELD_MISSING, location="ORC")


def _next_obr(segments: list[Segment], index: int) -> Segment | None:
    for seg in segments[index + 1:]:
        if seg.id == "OBR":
            return seg
        if seg.id in ("ORC", "PID"):
            return None
    return None


def _service_request(conv: Conversion, walk: _Walk, orc: Segment,
                     obr: Segment | None) -> dict[str, Any]:
    patient = walk.need_patient(orc)
    key = order_key(conv, obr, orc, prefer_filler=False)
    control = orc.get(1).upper()
    status = ORDER_STATUS.get(orc.get(5).upper()) if control == "SC" or orc.get(5) else None
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": make_id("order", key),
        "status": status or ORDER_CONTROL.get(control, "active"), "intent": "order",
        "subject": patient,
    }
    idents = _order_identifiers(obr, orc)
    if idents:
        request["identifier"] = idents
    code = dt.codeable(obr.first(4)) if obr is not None else None
    if code:
        request["code"] = code
    priority = PRIORITY.get((obr.get(5) if obr is not None else "") or orc.get(7, 6))
    if priority:
        request["priority"] = priority
    if walk.encounter is not None:
        request["encounter"] = walk.encounter
    authored = conv.when(orc, 9)
    if authored:
        request["authoredOn"] = authored
    when = conv.when(obr, 6) if obr is not None else None
    if when:
        request["occurrenceDateTime"] = when
    requester = conv.practitioner(orc.first(12)) or (
        conv.practitioner(obr.first(16)) if obr is not None else None)
    if requester:
        request["requester"] = requester
    if obr is not None:
        reasons = [c for c in (dt.codeable(r) for r in obr.reps(31)) if c]
        if reasons:
            request["reasonCode"] = reasons
    conv.add(request)
    return request
