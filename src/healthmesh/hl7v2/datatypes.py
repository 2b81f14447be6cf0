"""HL7 v2 data types to FHIR data types (after the v2-to-FHIR IG's data type maps).

TS/DTM -> dateTime, DT -> date, CX -> Identifier, XPN -> HumanName, XAD -> Address,
XTN -> ContactPoint, CE/CWE/CNE -> CodeableConcept, HD -> a namespace text.
A value that cannot be read (a date that does not exist, say) raises
:class:`~healthmesh.hl7v2.errors.ConversionError` naming the field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from healthmesh.errors import ConfigError
from healthmesh.hl7v2.errors import DATA_TYPE_ERROR, ConversionError
from healthmesh.hl7v2.message import Components, part

__all__ = [
    "address", "codeable", "coding_system", "contact_point", "date", "date_time",
    "hd_text", "human_name", "identifier", "resolve_timezone",
]

_TS = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$"
)
# HL7 table 0396 coding system names -> FHIR code system URIs
SYSTEMS = {
    "LN": "http://loinc.org", "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct", "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct", "SNOMEDCT": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10", "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm", "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm", "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://hl7.org/fhir/sid/mvx", "NDC": "http://hl7.org/fhir/sid/ndc",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "UCUM": "http://unitsofmeasure.org", "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt", "NCIT": "http://ncimeta.nci.nih.gov",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    "CDCPHINVS": "urn:oid:2.16.840.1.114222.4.5.274",
}
_V2_TABLE = re.compile(r"^HL7(\d{4})$")
NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous",
            "S": "anonymous", "B": "official", "C": "official", "T": "usual", "U": "usual"}
ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "M": "home",
               "BA": "billing", "BI": "billing", "BR": "home", "P": "home"}
TELECOM_USE = {"PRN": "home", "ORN": "home", "VHN": "home", "WPN": "work", "ASN": "temp",
               "EMR": "temp", "PRS": "mobile", "NET": "home", "BPN": "temp"}
TELECOM_SYSTEM = {"PH": "phone", "CP": "phone", "FX": "fax", "BP": "pager",
                  "INTERNET": "email", "X.400": "email", "TDD": "other", "TTY": "other",
                  "MD": "other"}


@lru_cache(maxsize=64)
def resolve_timezone(name: str) -> tzinfo:
    """The zone for times that carry no offset (setting ``hl7v2_timezone``)."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"setting 'hl7v2_timezone': unknown time zone {name!r} "
                          "(use an IANA name such as Europe/Paris, or UTC)") from None


def _bad(where: str, value: str, what: str) -> ConversionError:
    return ConversionError(f"{where} '{value}' is not a valid HL7 {what}",
                           code=DATA_TYPE_ERROR, location=where.split(" ")[0])


def date_time(value: str, where: str, tz: tzinfo) -> str | None:
    """An HL7 TS/DTM as a FHIR dateTime at its own precision ('' -> None).

    Times without an offset are in ``tz`` (FHIR needs an offset once there is a time).
    """
    value = value.strip()
    if not value:
        return None
    match = _TS.match(value)
    if match is None:
        raise _bad(where, value, "date/time")
    year, month, day, hour, minute, second, frac, offset = match.groups()
    try:
        moment = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                          int(minute or 0), int(second or 0))
    except ValueError:
        raise _bad(where, value, "date/time") from None
    zone: tzinfo = tz
    if offset is not None:
        sign = 1 if offset[0] == "+" else -1
        minutes = int(offset[1:3]) * 60 + int(offset[3:5])
        if int(offset[3:5]) >= 60 or minutes > 14 * 60:
            raise _bad(where, value, "date/time (time zone offset)")
        zone = timezone(sign * timedelta(minutes=minutes))
    if hour is None:  # a date: FHIR keeps it without an offset
        return "-".join(p for p in (year, month, day) if p)
    text = moment.replace(tzinfo=zone).isoformat()
    if frac:
        text = text[:19] + "." + frac + text[19:]
    return text


def date(value: str, where: str) -> str | None:
    """An HL7 DT (or the date part of a TS) as a FHIR date ('' -> None)."""
    value = value.strip()
    if not value:
        return None
    match = _TS.match(value)
    if match is None:
        raise _bad(where, value, "date")
    year, month, day = match.group(1), match.group(2), match.group(3)
    try:
        datetime(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise _bad(where, value, "date") from None
    return "-".join(p for p in (year, month, day) if p)


def coding_system(name: str) -> str | None:
    """The FHIR system URI of an HL7 coding system name (None when unknown)."""
    name = name.strip()
    if not name:
        return None
    upper = name.upper()
    if upper in SYSTEMS:
        return SYSTEMS[upper]
    table = _V2_TABLE.match(upper)
    if table:
        return f"http://terminology.hl7.org/CodeSystem/v2-{table.group(1)}"
    if re.fullmatch(r"[0-2](\.\d+)+", name):
        return f"urn:oid:{name}"
    return None


def _coding(code: str, display: str, system: str) -> dict[str, Any] | None:
    if not code:
        return None
    coding: dict[str, Any] = {}
    uri = coding_system(system)
    if uri:
        coding["system"] = uri
    coding["code"] = code
    if display:
        coding["display"] = display
    return coding


def codeable(comps: Components, default_system: str = "") -> dict[str, Any] | None:
    """CE/CWE/CNE -> CodeableConcept: the identifier triplet, the alternate, CWE-9 text."""
    if not comps:
        return None
    codings = [c for c in (
        _coding(part(comps, 1), part(comps, 2), part(comps, 3) or default_system),
        _coding(part(comps, 4), part(comps, 5), part(comps, 6)),
    ) if c is not None]
    text = part(comps, 9) or part(comps, 2) or part(comps, 5)
    if not codings and not text:
        return None
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    return out


def hd_text(comps: Components, component: int = 1) -> str:
    """An HD (or the HD inside a CX/XCN component) as one namespace text."""
    return (part(comps, component, 1) or part(comps, component, 2)
            or part(comps, component + 1) or "")


def identifier(comps: Components, *, type_code: str | None = None) -> dict[str, Any] | None:
    """CX/EI -> Identifier (system from an ISO OID or URI universal id, assigner display)."""
    value = part(comps, 1)
    if not value:
        return None
    out: dict[str, Any] = {}
    uid, uid_type = part(comps, 4, 2), part(comps, 4, 3).upper()
    code = type_code or part(comps, 5)
    if code == "SS":
        out["system"] = "http://hl7.org/fhir/sid/us-ssn"
    elif uid and uid_type == "ISO" and re.fullmatch(r"[0-2](\.\d+)+", uid):
        out["system"] = f"urn:oid:{uid}"
    elif uid and uid_type in ("URI", "URL") and re.fullmatch(r"\S+:\S+", uid):
        out["system"] = uid
    out["value"] = value
    if code:
        out["type"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]}
    namespace = part(comps, 4, 1)
    if namespace:
        out["assigner"] = {"display": namespace}
    return out


def human_name(comps: Components, *, offset: int = 0) -> dict[str, Any] | None:
    """XPN (``offset`` 0) or the name part of an XCN (``offset`` 1) -> HumanName."""
    family = part(comps, 1 + offset)
    given = [g for g in (part(comps, 2 + offset), part(comps, 3 + offset)) if g]
    if not family and not given:
        return None
    out: dict[str, Any] = {}
    use = NAME_USE.get(part(comps, 7 + offset).upper())
    if use:
        out["use"] = use
    if family:
        out["family"] = family
    if given:
        out["given"] = given
    prefix = part(comps, 5 + offset)
    if prefix:
        out["prefix"] = [prefix]
    suffix = [s for s in (part(comps, 4 + offset), part(comps, 6 + offset)) if s]
    if suffix:
        out["suffix"] = suffix
    return out


def address(comps: Components) -> dict[str, Any] | None:
    """XAD -> Address."""
    lines = [x for x in (part(comps, 1), part(comps, 2)) if x]
    fields = {"city": part(comps, 3), "state": part(comps, 4),
              "postalCode": part(comps, 5), "country": part(comps, 6)}
    if not lines and not any(fields.values()):
        return None
    out: dict[str, Any] = {}
    use = ADDRESS_USE.get(part(comps, 7).upper())
    if use:
        out["use"] = use
    if lines:
        out["line"] = lines
    out.update({k: v for k, v in fields.items() if v})
    return out


def contact_point(comps: Components) -> dict[str, Any] | None:
    """XTN -> ContactPoint (email from XTN-4, else the number as sent or as its parts)."""
    equipment = part(comps, 3).upper()
    system = TELECOM_SYSTEM.get(equipment, "phone")
    email = part(comps, 4)
    if email or system == "email":
        value, system = email or part(comps, 1), "email"
    else:
        value = part(comps, 1)
        if not value and part(comps, 7):
            area = part(comps, 6)
            value = (f"({area}) " if area else "") + part(comps, 7)
            if part(comps, 8):
                value += f" ext. {part(comps, 8)}"
    if not value:
        return None
    out: dict[str, Any] = {"system": system, "value": value}
    use = "mobile" if equipment == "CP" else TELECOM_USE.get(part(comps, 2).upper())
    if use:
        out["use"] = use
    return out
