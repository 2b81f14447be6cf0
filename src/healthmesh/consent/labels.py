"""Sensitive-category labelling: which v3-ActCode security labels a FHIR resource deserves.

:func:`labels_for` returns the labels already on the resource (``meta.security``) plus
those implied by the clinical codes found anywhere in it (Condition.code,
Observation.code / value / component, MedicationRequest.medicationCodeableConcept,
Procedure.code, DiagnosticReport.code and category, Claim diagnoses, ...): every Coding
with a ``system`` and ``code`` is looked up in the code lists of
``data/sensitive-codes.json`` (versioned, with sources; see docs/consent.md). A
QuestionnaireResponse is also labelled by the questionnaire it answers.

Labels: PSY mental health, ETH substance use, HIV, GDIS genetics, STD sexually
transmitted infections, SEX sexual and reproductive health, SDV sexual assault, abuse or
domestic violence.

:data:`IMPLIED` maps finer labels to the category they belong to (PSYTHPN psychotherapy
notes are mental-health data): a *restriction* of a category covers its finer labels,
a *permission* does not (see :mod:`healthmesh.consent.decide`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "IMPLIED", "CodeLists", "code_lists", "codings_in", "expand_labels", "labels_for",
    "labels_from",
]

ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10",
                 "urn:oid:2.16.840.1.113883.6.90", "urn:oid:2.16.840.1.113883.6.3")

IMPLIED: Mapping[str, str] = {
    "PSYTHPN": "PSY", "MH": "PSY", "BH": "PSY",
    "SUD": "ETH", "ETHUD": "ETH", "OPIOIDUD": "ETH",
}
"""Finer sensitivity label -> the category it belongs to."""


@dataclass(frozen=True)
class CodeLists:
    """The compiled code lists: exact codes, ICD-10 prefixes, whole systems, questionnaires."""

    version: str
    exact: Mapping[str, Mapping[str, frozenset[str]]]
    prefixes: Mapping[str, tuple[tuple[str, tuple[str, ...]], ...]]
    systems: Mapping[str, frozenset[str]]
    questionnaires: Mapping[str, frozenset[str]]
    sources: tuple[str, ...]


@cache
def code_lists() -> CodeLists:
    """Load and compile ``data/sensitive-codes.json`` (once)."""
    text = resources.files(__package__).joinpath("data", "sensitive-codes.json").read_text()
    doc = json.loads(text)
    exact: dict[str, dict[str, set[str]]] = {}
    prefixes: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    systems: dict[str, set[str]] = {}
    questionnaires: dict[str, set[str]] = {}
    for label, entry in doc["labels"].items():
        for system, codes in entry.get("codes", {}).items():
            for code in codes:
                exact.setdefault(system, {}).setdefault(code, set()).add(label)
        icd = tuple(p for item in entry.get("icd10", ()) for p in _icd_prefixes(item))
        for system in ICD10_SYSTEMS if icd else ():
            prefixes.setdefault(system, []).append((label, icd))
        for system in entry.get("systems", ()):
            systems.setdefault(system, set()).add(label)
        for url in entry.get("questionnaires", ()):
            questionnaires.setdefault(url, set()).add(label)
    return CodeLists(
        version=str(doc["version"]),
        exact={s: {c: frozenset(v) for c, v in m.items()} for s, m in exact.items()},
        prefixes={s: tuple(v) for s, v in prefixes.items()},
        systems={s: frozenset(v) for s, v in systems.items()},
        questionnaires={u: frozenset(v) for u, v in questionnaires.items()},
        sources=tuple(doc.get("sources", ())),
    )


def _icd_prefixes(item: str) -> list[str]:
    """``"F20-F48"`` -> F20 … F48; ``"O98.7"`` -> ``O987``; ``"B20"`` -> ``B20``."""
    if "-" not in item:
        return [item.replace(".", "")]
    lo, hi = item.split("-")
    letter = lo[0]
    if hi[0] != letter:
        raise ValueError(f"ICD-10 range {item!r} must stay within one letter")
    return [f"{letter}{n:02d}" for n in range(int(lo[1:]), int(hi[1:]) + 1)]


def labels_for(resource: Mapping[str, Any]) -> frozenset[str]:
    """The sensitivity labels of ``resource``: its ``meta.security`` codes plus the
    categories of the sensitive codes it contains (never raises on odd content)."""
    return labels_from(resource, codings_in(resource))


def labels_from(resource: Mapping[str, Any],
                codings: Iterable[tuple[str, str]]) -> frozenset[str]:
    """:func:`labels_for` when the resource's (system, code) pairs are already known."""
    lists = code_lists()
    found: set[str] = set(_meta_labels(resource))
    questionnaire = resource.get("questionnaire")
    if isinstance(questionnaire, str):
        found |= lists.questionnaires.get(questionnaire.split("|", 1)[0], frozenset())
    for system, code in codings:
        found |= _code_labels(lists, system, code)
    return frozenset(found)


def expand_labels(labels: Iterable[str]) -> frozenset[str]:
    """``labels`` plus the categories they belong to (PSYTHPN -> also PSY)."""
    out = set(labels)
    out.update(IMPLIED[label] for label in list(out) if label in IMPLIED)
    return frozenset(out)


def _meta_labels(resource: Mapping[str, Any]) -> list[str]:
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, Mapping) else None
    if not isinstance(security, list):
        return []
    return [c["code"] for c in security
            if isinstance(c, Mapping) and isinstance(c.get("code"), str)]


def _code_labels(lists: CodeLists, system: str, code: str) -> frozenset[str]:
    out = lists.systems.get(system, frozenset())
    by_code = lists.exact.get(system)
    if by_code is not None and code in by_code:
        out = out | by_code[code]
    prefixes = lists.prefixes.get(system)
    if prefixes:
        bare = code.replace(".", "").upper()
        out = out | {label for label, starts in prefixes if bare.startswith(starts)}
    return out


def codings_in(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (system, code) pair in the resource outside ``meta``."""
    return walk(resource)[0]


def normal_reference(ref: str) -> str:
    """``http://x/fhir/Observation/1/_history/2`` -> ``Observation/1``."""
    parts = ref.split("/_history/", 1)[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else ref


def walk(resource: Mapping[str, Any]) -> tuple[list[tuple[str, str]], set[str]]:
    """(system, code) pairs and references anywhere in the resource outside ``meta``."""
    codings: list[tuple[str, str]] = []
    references: set[str] = set()
    stack: list[Any] = [v for k, v in resource.items() if k != "meta"]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            system, code = item.get("system"), item.get("code")
            if type(system) is str and type(code) is str:
                codings.append((system, code))
            ref = item.get("reference")
            if type(ref) is str:
                references.add(normal_reference(ref))
            stack.extend(v for k, v in item.items() if k != "meta" and not isinstance(v, str))
        elif isinstance(item, list):
            stack.extend(item)
    return codings, references
