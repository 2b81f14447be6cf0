"""ICD-10-CM <-> SNOMED CT translation for the conditions healthmesh knows.

``data/conceptmaps.json`` lists ``[SNOMED CT, ICD-10-CM, equivalence]`` rows, the
equivalence being that of the ICD-10-CM code to the SNOMED CT concept (FHIR R4
ConceptMapEquivalence). The reverse direction swaps ``wider`` and ``narrower``::

    translate(SNOMED, "38341003", ICD10CM)
    # [Translation(ICD10CM, "I10", "narrower", "Essential (primary) hypertension")]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from typing import Any

from healthmesh.terminology.codesystems import ICD10CM, SNOMED, code_systems, load_data

__all__ = ["Translation", "concept_map", "translate"]

_REVERSE = {"wider": "narrower", "narrower": "wider", "subsumes": "specializes",
            "specializes": "subsumes"}
CONCEPTMAP_URL = "https://healthmesh.dev/fhir/ConceptMap/snomed-icd10cm"


@dataclass(frozen=True, slots=True)
class Translation:
    """One target of a translation, with its equivalence to the source."""

    system: str
    code: str
    equivalence: str
    display: str | None


@cache
def _index() -> dict[tuple[str, str], list[tuple[str, str, str]]]:
    index: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for sct, icd, equivalence in load_data("conceptmaps.json")["pairs"]:
        index[(SNOMED, sct)].append((ICD10CM, icd, equivalence))
        index[(ICD10CM, icd)].append((SNOMED, sct, _REVERSE.get(equivalence, equivalence)))
    return dict(index)


def translate(system: str, code: str, target: str | None = None) -> list[Translation]:
    """The codes ``system|code`` maps to (only in ``target`` when given), equivalents first."""
    systems = code_systems()
    out = [
        Translation(s, c, e, systems[s].display(c) if s in systems else None)
        for s, c, e in _index().get((system, code), [])
        if target is None or s == target
    ]
    return sorted(out, key=lambda t: (t.equivalence != "equivalent", t.code))


def concept_map() -> dict[str, Any]:
    """The shipped map as a FHIR R4 ConceptMap (SNOMED CT -> ICD-10-CM)."""
    raw = load_data("conceptmaps.json")
    elements: dict[str, list[dict[str, str]]] = defaultdict(list)
    for sct, icd, equivalence in raw["pairs"]:
        elements[sct].append({"code": icd, "equivalence": equivalence})
    return {
        "resourceType": "ConceptMap", "url": CONCEPTMAP_URL, "status": "active",
        "name": "SnomedToIcd10cm", "description": raw["source"],
        "sourceUri": "http://snomed.info/sct?fhir_vs", "targetUri": f"{ICD10CM}?fhir_vs",
        "group": [{"source": SNOMED, "target": ICD10CM,
                   "element": [{"code": c, "target": t} for c, t in elements.items()]}],
    }
