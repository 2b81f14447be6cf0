"""What the walk keeps: code systems, extension URLs, and checks of the few strings kept.

Everything here is an allow-list. A code is kept only when its system is a known
terminology and the code has that terminology's shape (or, for HL7 code systems — FHIR,
v3, v2 — is one of the codes the code system defines: ``data/hl7-codes.json.gz``); an
extension keeps its URL only when it is a published HL7/US Core extension; an address
keeps a state or country only when it looks like one. The ZIP-3 rule reads its
restricted prefixes from versioned package data (``data/zip3-restricted.json``) because
the list changes with each census.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import orjson

from healthmesh.privacy.deid.errors import DeidConfigError
from healthmesh.privacy.deid.model import type_model

__all__ = [
    "AGE_AT_EVENT_URL",
    "DATA_ABSENT_URL",
    "UCUM",
    "Zip3Rule",
    "is_known_extension",
    "keep_code",
    "keep_country",
    "keep_state",
    "valid_bcp47",
    "valid_mime",
    "valid_ucum",
    "zip3_rule",
]

UCUM = "http://unitsofmeasure.org"
DATA_ABSENT_URL = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
AGE_AT_EVENT_URL = "https://healthmesh.example/fhir/StructureDefinition/age-at-event"

# External terminologies: system -> the shape of its codes.
_SHAPES = {
    "http://loinc.org": r"(?:\d{1,7}-\d|LA\d{1,7}-\d|LP\d{1,7}-\d|LL\d{1,7}-\d)",
    "http://snomed.info/sct": r"\d{6,18}",
    "http://hl7.org/fhir/sid/icd-10": r"[A-Z]\d{2}(?:\.\d{1,4})?",
    "http://hl7.org/fhir/sid/icd-10-cm": r"[A-Z]\d[0-9A-Z](?:\.[0-9A-Z]{1,4})?",
    "http://hl7.org/fhir/sid/icd-9-cm": r"(?:\d{3}|[EV]\d{2,3})(?:\.\d{1,2})?",
    "http://www.nlm.nih.gov/research/umls/rxnorm": r"\d{1,9}",
    "http://hl7.org/fhir/sid/cvx": r"\d{1,3}",
    "http://hl7.org/fhir/sid/ndc": r"\d{4,5}-\d{3,4}-\d{1,2}|\d{10,11}",
    "http://www.whocc.no/atc": r"[A-Z]\d{2}(?:[A-Z](?:[A-Z](?:\d{2})?)?)?",
    "http://www.ama-assn.org/go/cpt": r"\d{4}[0-9FTU]",
    "urn:oid:2.16.840.1.113883.6.238": r"\d{4}-\d",  # CDC Race & Ethnicity
    "urn:iso:std:iso:3166": r"[A-Z]{2,3}",
    "urn:ietf:bcp:47": r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}",
    "urn:ietf:bcp:13": r"[a-z]+/[A-Za-z0-9.+\-]{1,64}",
    "urn:iso:std:iso:4217": r"[A-Z]{3}",
    UCUM: r"[!-~]{1,32}",
}
_SHAPE_RE = {system: re.compile(shape, re.ASCII).fullmatch for system, shape in _SHAPES.items()}
_HL7_SYSTEM = re.compile(
    r"http://(?:terminology\.)?hl7\.org/(?:fhir|CodeSystem)/[A-Za-z0-9\-.]{1,80}"
    r"|urn:oid:2\.16\.840\.1\.113883(?:\.\d{1,9}){1,10}", re.ASCII).fullmatch
_CODE_TOKEN = re.compile(r"[A-Za-z0-9.\-_]{1,64}", re.ASCII).fullmatch
_UCUM_UNIT = re.compile(r"[A-Za-z0-9%/.\[\]\{\}*^'\-]{1,32}", re.ASCII).fullmatch
_MIME = re.compile(r"[a-z]+/[A-Za-z0-9.+\-]{1,64}(?:;\s?[a-z\-]+=[A-Za-z0-9\-]{1,32})?",
                   re.ASCII).fullmatch
_BCP47 = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}", re.ASCII).fullmatch

_EXTENSION_PREFIXES = (
    "http://hl7.org/fhir/StructureDefinition/",
    "http://hl7.org/fhir/us/core/StructureDefinition/",
)
_EXTENSION_NAME = re.compile(r"[a-z][A-Za-z0-9\-]{2,80}", re.ASCII).fullmatch
_SUBEXTENSION = re.compile(r"[A-Za-z]{1,32}", re.ASCII).fullmatch

_US_STATES = frozenset((
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL",
    "IN", "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE",
    "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD",
    "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "AS", "GU", "MP", "PR", "VI",
    "UM", "AA", "AE", "AP",
))
_STATE_NAMES = frozenset(
    name.casefold() for name in (
        "Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado", "Connecticut",
        "Delaware", "District of Columbia", "Florida", "Georgia", "Hawaii", "Idaho",
        "Illinois", "Indiana", "Iowa", "Kansas", "Kentucky", "Louisiana", "Maine", "Maryland",
        "Massachusetts", "Michigan", "Minnesota", "Mississippi", "Missouri", "Montana",
        "Nebraska", "Nevada", "New Hampshire", "New Jersey", "New Mexico", "New York",
        "North Carolina", "North Dakota", "Ohio", "Oklahoma", "Oregon", "Pennsylvania",
        "Rhode Island", "South Carolina", "South Dakota", "Tennessee", "Texas", "Utah",
        "Vermont", "Virginia", "Washington", "West Virginia", "Wisconsin", "Wyoming",
        "Puerto Rico", "Guam", "American Samoa", "Virgin Islands", "Northern Mariana Islands"))
_ISO_SUBDIVISION = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}", re.ASCII).fullmatch
_COUNTRY = re.compile(r"[A-Z]{2,3}", re.ASCII).fullmatch
_COUNTRY_NAMES = frozenset(("united states", "united states of america", "usa", "us"))
_US_ZIP = re.compile(r"(\d{3})\d{2}(?:-?\d{4})?", re.ASCII).fullmatch


@lru_cache(maxsize=1 << 15)
def keep_code(system: str | None, code: str) -> bool:
    """Whether ``code`` of ``system`` is a terminology code, safe to release."""
    if system is None:
        return False
    shape = _SHAPE_RE.get(system)
    if shape is not None:
        return shape(code) is not None
    if _HL7_SYSTEM(system) is None or _CODE_TOKEN(code) is None:
        return False
    if code in type_model().system_codes.get(system, ()):
        return True
    return code in hl7_codes().get(system, ())


@cache
def hl7_codes() -> dict[str, frozenset[str]]:
    """The codes of every HL7 code system (packaged; see ``gen_codes``)."""
    path = resources.files("healthmesh.privacy.deid") / "data" / "hl7-codes.json.gz"
    raw = orjson.loads(gzip.decompress(path.read_bytes()))
    return {system: frozenset(codes) for system, codes in raw.items()}


def keep_system(system: str) -> bool:
    """Whether a Coding.system is a terminology the walk knows."""
    return system in _SHAPE_RE or _HL7_SYSTEM(system) is not None


def valid_ucum(code: str) -> bool:
    return _UCUM_UNIT(code) is not None


def valid_mime(code: str) -> bool:
    return _MIME(code) is not None


def valid_bcp47(code: str) -> bool:
    return _BCP47(code) is not None


def is_known_extension(url: str, parent_known: bool) -> bool:
    """A published HL7/US Core extension URL, or a sub-extension name inside one."""
    if url == AGE_AT_EVENT_URL:
        return True
    if parent_known and _SUBEXTENSION(url):
        return True
    for prefix in _EXTENSION_PREFIXES:
        if url.startswith(prefix):
            return _EXTENSION_NAME(url[len(prefix):]) is not None
    return False


def keep_state(value: str) -> bool:
    """A US state code or name, or an ISO 3166-2 subdivision code (states are allowed)."""
    return value in _US_STATES or value.casefold() in _STATE_NAMES or bool(_ISO_SUBDIVISION(value))


def keep_country(value: str) -> bool:
    """An ISO 3166 country code or a name of the United States."""
    return bool(_COUNTRY(value)) or value.casefold() in _COUNTRY_NAMES


@dataclass(frozen=True)
class Zip3Rule:
    """Safe Harbor's ZIP rule: keep the first 3 digits unless the area is small."""

    census: int
    version: str
    source: str
    restricted: frozenset[str]
    replacement: str

    def apply(self, postal_code: str) -> str | None:
        """The ZIP-3 of a US ZIP code (``000`` for restricted areas); None if not a ZIP."""
        match = _US_ZIP(postal_code.strip())
        if match is None:
            return None
        prefix = match.group(1)
        return self.replacement if prefix in self.restricted else prefix


@cache
def zip3_rule() -> Zip3Rule:
    """The packaged ZIP-3 configuration."""
    path = resources.files("healthmesh.privacy.deid") / "data" / "zip3-restricted.json"
    return parse_zip3(orjson.loads(path.read_bytes()))


def parse_zip3(raw: Any) -> Zip3Rule:
    """A :class:`Zip3Rule` from its JSON form; raises DeidConfigError when malformed."""
    try:
        restricted = frozenset(raw["restricted"])
        rule = Zip3Rule(int(raw["census"]), str(raw["version"]), str(raw["source"]),
                        restricted, str(raw.get("replacement", "000")))
    except (KeyError, TypeError, ValueError) as exc:
        raise DeidConfigError(f"bad ZIP-3 configuration: {exc!r}") from None
    if not all(isinstance(p, str) and re.fullmatch(r"\d{3}", p) for p in restricted):
        raise DeidConfigError("bad ZIP-3 configuration: prefixes must be 3-digit strings")
    return rule
