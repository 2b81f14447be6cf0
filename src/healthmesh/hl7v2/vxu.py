"""VXU^V04 -> Immunization (one per RXA), after the v2-to-FHIR IG's RXA map.

The immunization's id comes from its ORC-3 filler order number (else ORC-2 placer,
else patient + vaccine + administration time), so a re-sent or corrected record
(RXA-21 ``U``, or ``D`` for entered-in-error) updates the same Immunization.
"""

from __future__ import annotations

from typing import Any

from healthmesh.hl7v2 import datatypes as dt
from healthmesh.hl7v2.context import Conversion, make_id
from healthmesh.hl7v2.errors import REQUIRED_FIELD_MISSING, ConversionError
from healthmesh.hl7v2.lab import order_key
from healthmesh.hl7v2.message import Segment, part

__all__ = ["convert_vaccinations"]

COMPLETION = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}
_FUNCTION = "http://terminology.hl7.org/CodeSystem/v2-0443"


def convert_vaccinations(conv: Conversion) -> None:
    """Fill ``conv`` from a VXU^V04."""
    msg = conv.message
    pid = msg.one("PID")
    if pid is None:
        raise ConversionError("VXU^V04 has no PID segment", code=REQUIRED_FIELD_MISSING,
                              location="PID")
    patient = conv.patient(pid, "if-absent")
    encounter = None
    orc: Segment | None = None
    made = 0
    for index, seg in enumerate(msg.segments):
        if seg.id == "PV1":
            encounter = conv.encounter(seg, patient, None, "if-absent")
        elif seg.id == "ORC":
            orc = seg
        elif seg.id == "RXA":
            rxr = msg.segments[index + 1] if index + 1 < len(msg.segments) else None
            _immunization(conv, seg, orc, rxr if rxr and rxr.id == "RXR" else None,
                          patient, encounter)
            orc = None
            made += 1
    if not made:
        raise ConversionError("VXU^V04 has no RXA segment", code=REQUIRED_FIELD_MISSING,
                              location="RXA")


def _immunization(conv: Conversion, rxa: Segment, orc: Segment | None, rxr: Segment | None,
                  patient: dict[str, str], encounter: dict[str, str] | None) -> None:
    vaccine = dt.codeable(rxa.first(5))
    if vaccine is None:
        raise ConversionError(f"RXA (segment {rxa.position}) has no RXA-5 administered code",
                              code=REQUIRED_FIELD_MISSING, location="RXA-5")
    when = conv.when(rxa, 3)
    if when is None:
        raise ConversionError(f"RXA (segment {rxa.position}) has no RXA-3 administration "
                              "date", code=REQUIRED_FIELD_MISSING, location="RXA-3")
    if orc is not None and (orc.get(3) or orc.get(2)):
        key = order_key(conv, None, orc, prefer_filler=True)
    else:
        key = f"{patient['reference']}|{rxa.get(5)}|{when}"
    status = COMPLETION.get(rxa.get(20).upper(), "completed")
    if rxa.get(21).upper() == "D":
        status = "entered-in-error"
    imm: dict[str, Any] = {
        "resourceType": "Immunization", "id": make_id("immunization", key),
        "status": status, "vaccineCode": vaccine, "patient": patient,
        "occurrenceDateTime": when,
    }
    if orc is not None:
        idents = [i for i in (dt.identifier(orc.first(n), type_code=t)
                              for n, t in ((2, "PLAC"), (3, "FILL"))) if i]
        if idents:
            imm["identifier"] = idents
    if encounter is not None:
        imm["encounter"] = encounter
    source = rxa.get(9).strip()
    if source in ("00", "01"):
        imm["primarySource"] = source == "00"
        if source == "01":
            imm["reportOrigin"] = dt.codeable(rxa.first(9), "NIP001")
    _dose(imm, rxa)
    _product(imm, rxa)
    _performers(conv, imm, rxa, orc)
    if rxa.get(20).upper() == "PA":
        imm["isSubpotent"] = True
    reason = dt.codeable(rxa.first(18))
    if reason and status == "not-done":
        imm["statusReason"] = reason
    if rxr is not None:
        route, site = dt.codeable(rxr.first(1), "HL70162"), dt.codeable(rxr.first(2), "HL70163")
        if route:
            imm["route"] = route
        if site:
            imm["site"] = site
    conv.add(imm)


def _dose(imm: dict[str, Any], rxa: Segment) -> None:
    amount = rxa.get(6).strip()
    if not amount or amount == "999":  # 999: amount unknown (CDC IG)
        return
    try:
        value: float | int = int(amount) if amount.isdigit() else float(amount)
    except ValueError:
        return
    dose: dict[str, Any] = {"value": value}
    unit = rxa.get(7)
    if unit:
        dose["unit"] = rxa.get(7, 2) or unit
        if rxa.get(7, 3).upper() == "UCUM":
            dose.update({"system": "http://unitsofmeasure.org", "code": unit})
    imm["doseQuantity"] = dose


def _product(imm: dict[str, Any], rxa: Segment) -> None:
    lot = rxa.get(15)
    if lot:
        imm["lotNumber"] = lot
    expires = dt.date(rxa.get(16), "RXA-16 expiration date")
    if expires:
        imm["expirationDate"] = expires
    maker = rxa.first(17)
    if part(maker, 1) or part(maker, 2):
        ref: dict[str, Any] = {"display": part(maker, 2) or part(maker, 1)}
        if part(maker, 1):
            ref["identifier"] = {"system": dt.coding_system(part(maker, 3) or "MVX")
                                 or "http://hl7.org/fhir/sid/mvx", "value": part(maker, 1)}
        imm["manufacturer"] = ref


def _performers(conv: Conversion, imm: dict[str, Any], rxa: Segment,
                orc: Segment | None) -> None:
    performers = []
    for xcn, code in ((rxa.first(10), "AP"), (orc.first(12) if orc else [], "OP")):
        actor = conv.practitioner(xcn) if xcn else None
        if actor is not None:
            performers.append({"function": {"coding": [{"system": _FUNCTION, "code": code}]},
                               "actor": actor})
    if performers:
        imm["performer"] = performers
    place = dt.hd_text(rxa.first(11), 4)
    if place:
        imm["location"] = {"display": place}
