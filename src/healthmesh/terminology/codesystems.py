"""The code systems healthmesh ships: curated code lists with display names and syntax checks.

``data/codesystems.json`` holds, per system URL, a name, a title, where the codes come from,
which syntax check applies and ``code -> display``. They are curated subsets (the codes the
indicators, cohorts, SDOH screeners and the synthetic population use), not full releases:
a code that is well formed but not listed is *unknown to this node*, which ingest records as
a warning rather than a rejection.

Syntax checks catch typing and transcription errors before a code is looked up:

- LOINC: ``NNNNN-C`` with the LOINC mod-10 check digit (answers ``LA...-C`` and parts
  ``LP...-C`` are checked for shape only; their check digit is not the mod-10 of the number);
- SNOMED CT: 6 to 18 digits, a concept/description/relationship partition and the Verhoeff
  check digit;
- ICD-10-CM and ICD-10: the category/sub-category shape (``A00``-``Z99`` with a dot);
- CVX, RxNorm: digits.

The check digits are computed here by hand: they are a dozen lines each, and no maintained
library on PyPI covers both LOINC's mod-10 and SNOMED CT's Verhoeff scheme.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

__all__ = [
    "ALIASES",
    "CVX",
    "ICD10",
    "ICD10CM",
    "LOINC",
    "RXNORM",
    "SNOMED",
    "CodeSystem",
    "code_system",
    "code_systems",
    "load_data",
    "resolve_system",
    "syntax_problem",
]

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"

ALIASES = MappingProxyType({
    "loinc": LOINC, "snomed": SNOMED, "sct": SNOMED, "snomedct": SNOMED,
    "icd10cm": ICD10CM, "icd-10-cm": ICD10CM, "icd10": ICD10, "icd-10": ICD10,
    "rxnorm": RXNORM, "cvx": CVX,
})
"""Short names accepted wherever a system URL is (CLI, mapping files)."""


def load_data(filename: str) -> Any:
    """A JSON file from ``healthmesh/terminology/data``."""
    text = resources.files(__package__).joinpath("data").joinpath(filename).read_text("utf-8")
    return json.loads(text)


@dataclass(frozen=True, slots=True)
class CodeSystem:
    """One shipped code system: ``concepts`` maps code -> display."""

    url: str
    name: str
    title: str
    source: str
    syntax: str
    concepts: MappingProxyType[str, str]

    def display(self, code: str) -> str | None:
        """The display of ``code``, or None when the code is not in the list."""
        return self.concepts.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self.concepts

    def to_fhir(self) -> dict[str, Any]:
        """This code system as a FHIR R4 CodeSystem resource (content: fragment)."""
        return {
            "resourceType": "CodeSystem", "url": self.url, "name": self.name.replace("-", ""),
            "title": self.title, "status": "active", "content": "fragment",
            "description": self.source, "count": len(self.concepts),
            "concept": [{"code": c, "display": d} for c, d in self.concepts.items()],
        }


@cache
def code_systems() -> MappingProxyType[str, CodeSystem]:
    """Every shipped code system by URL (read once)."""
    raw = load_data("codesystems.json")["systems"]
    return MappingProxyType({
        url: CodeSystem(url, v["name"], v["title"], v["source"], v["syntax"],
                        MappingProxyType(v["concepts"]))
        for url, v in raw.items()
    })


def resolve_system(name: str) -> str:
    """A system URL from a URL or a short name (``loinc``, ``snomed``, ``icd10cm``...)."""
    return ALIASES.get(name.strip().lower(), name.strip())


def code_system(system: str) -> CodeSystem | None:
    """The shipped code system for a URL or short name, or None."""
    return code_systems().get(resolve_system(system))


# -- syntax checks -------------------------------------------------------------------

_LOINC_RE = re.compile(r"^(\d{1,7})-(\d)$")
_LOINC_PART_RE = re.compile(r"^L[AP]\d{1,8}-\d$")
_SCTID_RE = re.compile(r"^[1-9]\d{5,17}$")
_ICD10CM_RE = re.compile(r"^[A-Z]\d[0-9A-Z](\.[0-9A-Z]{1,4})?$")
_ICD10_RE = re.compile(r"^[A-Z]\d\d(\.\d{1,2})?$")
_DIGITS_RE = re.compile(r"^\d{1,8}$")


def loinc_check_digit(number: str) -> int:
    """The LOINC mod-10 check digit of the digits before the dash (Luhn's algorithm)."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 0:  # rightmost digit and every second one are doubled
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return (10 - total % 10) % 10


# Verhoeff dihedral-group tables (SNOMED CT Technical Implementation Guide, 6.7).
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6], [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2], [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def verhoeff_valid(number: str) -> bool:
    """True when the last digit of ``number`` is its Verhoeff check digit."""
    check = 0
    for position, char in enumerate(reversed(number)):
        check = _D[check][_P[position % 8][int(char)]]
    return check == 0


def _loinc(code: str) -> str | None:
    match = _LOINC_RE.match(code)
    if match is None:
        if _LOINC_PART_RE.match(code):
            return None
        return "is not a LOINC code (expected digits, a dash and a check digit, e.g. 4548-4)"
    if loinc_check_digit(match.group(1)) != int(match.group(2)):
        return "fails the LOINC check digit"
    return None


def _sctid(code: str) -> str | None:
    if not _SCTID_RE.match(code):
        return "is not a SNOMED CT identifier (6 to 18 digits, no leading zero)"
    if code[-3:-1] not in ("00", "10"):  # concept partitions (short and long format)
        return "is not a SNOMED CT concept id (its partition identifier is not 00 or 10)"
    if not verhoeff_valid(code):
        return "fails the SNOMED CT (Verhoeff) check digit"
    return None


def _shape(pattern: re.Pattern[str], what: str) -> Callable[[str], str | None]:
    def check(code: str) -> str | None:
        return None if pattern.match(code) else f"is not a well-formed {what} code"

    return check


_SYNTAX: dict[str, Callable[[str], str | None]] = {
    "loinc": _loinc,
    "sctid": _sctid,
    "icd10cm": _shape(_ICD10CM_RE, "ICD-10-CM"),
    "icd10": _shape(_ICD10_RE, "ICD-10"),
    "cvx": _shape(_DIGITS_RE, "CVX"),
    "rxnorm": _shape(_DIGITS_RE, "RxNorm"),
}


def syntax_problem(system: CodeSystem, code: str) -> str | None:
    """Why ``code`` cannot be a code of ``system`` (None when it is well formed)."""
    check = _SYNTAX.get(system.syntax)
    return None if check is None else check(code)
