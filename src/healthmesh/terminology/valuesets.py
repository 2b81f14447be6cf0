"""Value sets shipped with healthmesh (``data/valuesets.json``): the single source of them.

A value set is a named list of ``"system|code"`` strings with a title and a source note
saying where the codes come from. They are small hand-curated subsets (they cover the
synthetic population and common equivalents), not official expansions. The cohort language
(:mod:`healthmesh.cohorts`) and the indicators use them by name; the FHIR API answers
``ValueSet/$validate-code`` for them by canonical URL (:data:`VALUESET_BASE` + name).
"""

from __future__ import annotations

from functools import cache
from types import MappingProxyType
from typing import Any

from healthmesh.terminology.codesystems import code_systems, load_data

__all__ = ["VALUESET_BASE", "ValueSet", "value_set", "value_set_by_url", "value_sets"]

VALUESET_BASE = "https://healthmesh.dev/fhir/ValueSet/"
"""Canonical URL prefix of the shipped value sets (``VALUESET_BASE + name``)."""


class ValueSet:
    """A named set of codes; ``codes`` are ``"system|code"`` strings."""

    __slots__ = ("_members", "codes", "name", "source", "title")

    def __init__(self, name: str, title: str, source: str, codes: tuple[str, ...]) -> None:
        self.name, self.title, self.source, self.codes = name, title, source, codes
        self._members = frozenset(codes)

    @property
    def url(self) -> str:
        """The canonical URL of this value set."""
        return VALUESET_BASE + self.name

    def contains(self, system: str, code: str) -> bool:
        """True when ``system|code`` is a member."""
        return f"{system}|{code}" in self._members

    def to_fhir(self) -> dict[str, Any]:
        """This value set as a FHIR R4 ValueSet with its (flat) expansion."""
        systems = code_systems()
        contains = []
        for item in self.codes:
            system, _, code = item.partition("|")
            entry = {"system": system, "code": code}
            display = systems[system].display(code) if system in systems else None
            if display:
                entry["display"] = display
            contains.append(entry)
        return {"resourceType": "ValueSet", "url": self.url, "name": self.name,
                "title": self.title, "status": "active", "description": self.source,
                "expansion": {"timestamp": "2026-11-23T00:00:00Z", "total": len(contains),
                              "contains": contains}}

    def __repr__(self) -> str:
        return f"ValueSet({self.name!r}, {len(self.codes)} codes)"


@cache
def value_sets() -> MappingProxyType[str, ValueSet]:
    """Every shipped value set by name (read once)."""
    raw = load_data("valuesets.json")
    sets = {name: ValueSet(name, v["title"], v["source"], tuple(v["codes"]))
            for name, v in raw.items() if not name.startswith("_")}
    return MappingProxyType(sets)


def value_set(name: str) -> ValueSet | None:
    """The shipped value set ``name``, or None."""
    return value_sets().get(name)


def value_set_by_url(url: str) -> ValueSet | None:
    """The shipped value set with canonical ``url`` (a ``|version`` suffix is ignored)."""
    url = url.split("|", 1)[0]
    if not url.startswith(VALUESET_BASE):
        return None
    return value_sets().get(url.removeprefix(VALUESET_BASE))
