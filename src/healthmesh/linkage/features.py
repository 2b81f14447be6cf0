"""Quasi-identifiers of a FHIR R4 Patient, normalised for linkage.

:func:`patient_features` turns a Patient into the named values a linkage schema encodes
(the default, ``data/schema-v3.json``, uses ``name``, ``given_root``, ``name_soundex`` and
the birth, sex, postal code and national id values): first given name and family name
(case-folded, accents removed, letters only), both together as ``name`` (their bigrams do
not depend on which is which, so a given/family swap still matches), the given name's
nickname root ("Bob" and "Robert" share a root, from the curated ``nicknames`` list),
Soundex codes of both names (``name_soundex``: the two codes sorted), birth year,
month and day plus the unordered day/month pair (a day/month swap keeps it), sex, postal
code (letters and digits) and the national id where the Patient carries one.

A value the Patient does not have is the empty string: it sets no bits, as in clkhash.
Nothing here leaves the node; only the CLKs built from these values do.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jellyfish
from nicknames import NickNamer

__all__ = ["FEATURES", "NATIONAL_ID_SYSTEMS", "name_root", "normalise_name",
           "patient_features", "patient_record"]

FEATURES = ("name", "given", "given_root", "family", "name_soundex", "given_soundex",
            "family_soundex", "birth_year", "birth_month", "birth_day", "birth_day_month", "sex",
            "postal_code", "national_id")
"""The values :func:`patient_features` produces (the default schema's feature identifiers)."""

# Identifier systems of national person numbers (US SSN, UK NHS number, ...); a node can
# pass its own. The synthetic population writes the region's system from its region file.
NATIONAL_ID_SYSTEMS = frozenset({
    "http://hl7.org/fhir/sid/us-ssn",
    "https://fhir.nhs.uk/Id/nhs-number",
    "urn:oid:2.16.840.1.113883.4.1",
})
_NATIONAL_ID_TYPES = frozenset({"SS", "NI", "NH", "NNxxx", "PPN"})
_NOT_LETTERS = re.compile(r"[^a-z]+")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_SEXES = {"male": "male", "female": "female", "other": "other"}
_MAX_NAME = 64


def normalise_name(text: str) -> str:
    """Case-folded, accent-free letters of ``text`` ("O'Brien-Núñez" → "obriennunez")."""
    folded = unicodedata.normalize("NFKD", text[:_MAX_NAME * 2].casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return _NOT_LETTERS.sub("", plain)[:_MAX_NAME]


@lru_cache(maxsize=1)
def _namer() -> NickNamer:
    return NickNamer()


@lru_cache(maxsize=65536)
def name_root(given: str) -> str:
    """The nickname root of a normalised given name ("bob" → "robert").

    Among the name and the formal names it is a nickname of, the one with the most
    nicknames wins (ties: alphabetical), so common diminutives meet their usual formal name.
    """
    if not given:
        return ""
    namer = _namer()
    candidates = {given} | namer.canonicals_of(given)
    return min(candidates, key=lambda c: (-len(namer.nicknames_of(c)), c))


def patient_features(patient: dict[str, Any],
                     national_systems: frozenset[str] = NATIONAL_ID_SYSTEMS) -> dict[str, str]:
    """The normalised quasi-identifiers of a Patient resource, keyed by :data:`FEATURES`.

    Raises ``ValueError`` if ``patient`` is not a Patient resource.
    """
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise ValueError("not a Patient resource")
    given, family = _names(patient.get("name"))
    year, month, day = _birth(patient.get("birthDate"))
    given_code = jellyfish.soundex(given) if given else ""
    family_code = jellyfish.soundex(family) if family else ""
    return {
        "name": f"{given} {family}".strip(), "given": given, "given_root": name_root(given),
        "family": family, "name_soundex": "".join(sorted((given_code, family_code))),
        "given_soundex": given_code, "family_soundex": family_code,
        "birth_year": year, "birth_month": month, "birth_day": day,
        "birth_day_month": "".join(sorted((month, day))) if month and day else "",
        "sex": _SEXES.get(str(patient.get("gender", "")), ""),
        "postal_code": _postal(patient.get("address")),
        "national_id": _national_id(patient.get("identifier"), national_systems),
    }


def patient_record(patient: dict[str, Any], identifiers: Sequence[str],
                   national_systems: frozenset[str] = NATIONAL_ID_SYSTEMS) -> list[str]:
    """The Patient's values in the order of a schema's feature ``identifiers``.

    A schema feature that is not one of :data:`FEATURES` gets the empty string.
    """
    values = patient_features(patient, national_systems)
    return [values.get(name, "") for name in identifiers]


def _names(names: Any) -> tuple[str, str]:
    if not isinstance(names, list):
        return "", ""
    chosen = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"),
                  next((n for n in names if isinstance(n, dict)), {}))
    given_list = chosen.get("given")
    given = given_list[0] if isinstance(given_list, list) and given_list else ""
    family = chosen.get("family", "")
    return (normalise_name(given) if isinstance(given, str) else "",
            normalise_name(family) if isinstance(family, str) else "")


def _birth(value: Any) -> tuple[str, str, str]:
    match = _DATE.match(value) if isinstance(value, str) else None
    if match is None:
        return "", "", ""
    year, month, day = match.groups()
    return year, month or "", day or ""


def _postal(addresses: Any) -> str:
    if not isinstance(addresses, list):
        return ""
    home = [a for a in addresses if isinstance(a, dict) and a.get("use") in ("home", None)]
    for address in home or [a for a in addresses if isinstance(a, dict)]:
        code = address.get("postalCode")
        if isinstance(code, str):
            return _NOT_ALNUM.sub("", code.casefold())[:16]
    return ""


def _national_id(identifiers: Any, systems: frozenset[str]) -> str:
    if not isinstance(identifiers, list):
        return ""
    for ident in identifiers:
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding", [])
                 if isinstance(c, dict)} if isinstance(ident.get("type"), dict) else set()
        if ident.get("system") in systems or codes & _NATIONAL_ID_TYPES:
            return _NOT_ALNUM.sub("", ident["value"].casefold())[:32]
    return ""
