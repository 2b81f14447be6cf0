"""The Patient resource as one site holds it.

Built from the site's noisy copy of the demographics (:class:`~healthmesh.synth.noise.Recorded`)
in the site's own conventions: its identifier system and MRN format, which real-world
identifiers it records (national id, family health card), upper case at the insurer,
abbreviated or full street types, phone formats, US Core race/ethnicity/birth-sex extensions
at the sites that collect them (regions with ``race_ethnicity``), a guardian contact for
children, and a death date only where the site would know of it.
"""

from __future__ import annotations

from typing import Any

from . import codes
from .noise import Recorded
from .population import Address, Person, Region
from .sites import Site

__all__ = ["patient_resource"]

_US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
_OMB = "urn:oid:2.16.840.1.113883.6.238"
_ETHNICITY = {True: ("2135-2", "Hispanic or Latino"), False: ("2186-5", "Not Hispanic or Latino")}
_MARITAL = {"M": "Married", "S": "Never Married", "D": "Divorced", "W": "Widowed",
            "T": "Domestic partner", "U": "unmarried"}
_RACE_SITES = ("hospital", "clinic", "insurer")
_MARITAL_SITES = ("hospital", "clinic", "insurer")
_CONTACT_SITES = ("hospital", "clinic", "dental")
_PHONE_STYLE = {"hospital": "parens", "insurer": "digits"}
_NEXT_OF_KIN = [codes.concept("http://terminology.hl7.org/CodeSystem/v2-0131", "N",
                              "Next-of-Kin")]


def patient_resource(site: Site, pid: str, person: Person, rec: Recorded, region: Region,
                     deceased: str | None) -> dict[str, Any]:
    """The Patient as ``site`` records ``person``; ``deceased`` is a dateTime or None."""
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if region.race_ethnicity and site.kind in _RACE_SITES:
        res["extension"] = _us_core_extensions(person)
    res["identifier"] = _identifiers(site, person, rec, region)
    res["active"] = True
    res["name"] = [_name(rec)]
    telecom = _telecom(site.kind, rec.phone, person.household.landline, region)
    if telecom:
        res["telecom"] = telecom
    res["gender"] = rec.gender
    if rec.birth_date is not None:
        res["birthDate"] = rec.birth_date
    if deceased is not None:
        res["deceasedDateTime"] = deceased
    if rec.address is not None:
        res["address"] = [_address(rec.address, rec.street_style, rec.upper)]
    if site.kind in _MARITAL_SITES and person.marital != "U":
        res["maritalStatus"] = _marital(person.marital)
    if person.guardian is not None and site.kind in _CONTACT_SITES:
        res["contact"] = [_guardian(person.guardian, site.kind, region)]
    return res


def _us_core_extensions(person: Person) -> list[dict[str, Any]]:
    race_code, race_display = person.race or ("2131-1", "Other Race")
    eth_code, eth_display = _ETHNICITY[person.hispanic]
    return [
        {"url": _US_CORE + "us-core-race", "extension": [
            {"url": "ombCategory", "valueCoding": codes.coding(_OMB, race_code, race_display)},
            {"url": "text", "valueString": race_display}]},
        {"url": _US_CORE + "us-core-ethnicity", "extension": [
            {"url": "ombCategory", "valueCoding": codes.coding(_OMB, eth_code, eth_display)},
            {"url": "text", "valueString": eth_display}]},
        {"url": _US_CORE + "us-core-birthsex", "valueCode": "M" if person.sex == "male" else "F"},
    ]


def _identifiers(site: Site, person: Person, rec: Recorded, region: Region) -> list[dict]:
    own_type = codes.MEMBER_TYPE if site.kind == "insurer" else codes.MR_TYPE
    out = [{"use": "usual", "type": own_type, "system": site.mrn_system,
            "value": site.mrn(person.index)}]
    if rec.national_id is not None:
        nid = region.national_id
        out.append({"use": "official", "type": {"coding": [codes.coding(
            codes.V2_0203, nid["type"], nid["display"])], "text": nid["display"]},
            "system": nid["system"], "value": rec.national_id})
    if rec.health_card is not None:
        out.append({"use": "secondary", "type": codes.HEALTH_CARD_TYPE,
                    "system": f"urn:healthmesh:region:{region.name}:family-health-card",
                    "value": rec.health_card})
    return out


def _name(rec: Recorded) -> dict[str, Any]:
    if rec.upper:
        return {"use": "official", "family": rec.family.upper(),
                "given": [g.upper() for g in rec.given]}
    return {"use": "official", "family": rec.family, "given": rec.given}


def _telecom(kind: str, mobile: str | None, landline: str | None, region: Region) -> list[dict]:
    out = []
    if mobile is not None:
        out.append({"system": "phone", "value": _phone(mobile, kind, region), "use": "mobile"})
    if landline is not None and kind in ("hospital", "clinic", "insurer"):
        out.append({"system": "phone", "value": _phone(landline, kind, region), "use": "home"})
    return out


def _phone(number: str, kind: str, region: Region) -> str:
    style = _PHONE_STYLE.get(kind)
    if region.phone != "us" or style is None:
        return number
    area, exchange, line = number.split("-")
    return f"({area}) {exchange}-{line}" if style == "parens" else area + exchange + line


def _address(a: Address, style: str, upper: bool) -> dict[str, Any]:
    street_type = a.street_type[1] if style == "abbrev" else a.street_type[0]
    line = f"{a.number} {a.street} {street_type}"
    lines = [line] if a.unit is None else (
        [f"{line} #{a.unit}"] if style == "abbrev" else [line, f"Apt {a.unit}"])
    if upper:
        lines = [x.upper() for x in lines]
    out: dict[str, Any] = {"use": "home", "line": lines,
                           "city": a.city.upper() if upper else a.city}
    if a.state:
        out["state"] = a.state
    out["postalCode"] = a.postal_code
    out["country"] = a.country
    return out


def _marital(code: str) -> dict[str, Any]:
    return codes.concept("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", code,
                         _MARITAL[code])


def _guardian(guardian: Person, kind: str, region: Region) -> dict[str, Any]:
    contact: dict[str, Any] = {"relationship": _NEXT_OF_KIN,
                               "name": {"family": guardian.family, "given": [guardian.given]}}
    if guardian.phone is not None:
        contact["telecom"] = [{"system": "phone", "value": _phone(guardian.phone, kind, region),
                               "use": "mobile"}]
    return contact
