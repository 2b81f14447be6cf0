"""The FHIR R4 element model the de-identification walk follows.

It reuses the compact model generated from the official StructureDefinitions for
validation (``healthmesh/fhir/data/r4-model.json.gz``, see ``tools/gen_fhir_model.py``)
and keeps what the walk needs: for each resource, datatype and backbone element, its JSON
properties with their type, cardinality and required binding, plus the codes of every
value set and code system that the model expands locally.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache

import orjson

from healthmesh.fhir.validation import MODEL_PATH

__all__ = ["Element", "TypeModel", "type_model"]


@dataclass(frozen=True, slots=True)
class Element:
    """One JSON property of a type."""

    key: str
    type: str  # a primitive, a datatype, a backbone path, or "Resource"
    array: bool
    required: bool
    choice: str | None
    value_set: str | None


class TypeModel:
    """Types by name, primitives, and the locally known codes."""

    def __init__(self, raw: dict) -> None:  # type: ignore[type-arg]
        self.primitives = frozenset(raw["primitives"])
        self.types: dict[str, dict[str, Element]] = {}
        self.kinds: dict[str, str] = {}
        self.required: dict[str, tuple[tuple[str, ...], ...]] = {}
        for name, spec in raw["types"].items():
            self.kinds[name] = spec["kind"]
            self.types[name] = props = {}
            groups: dict[str, list[str]] = {}
            for el in spec["elements"]:
                required = el.get("min", 0) > 0
                props[el["name"]] = Element(
                    el["name"], el["type"], el.get("max", "1") != "1", required,
                    el.get("choice"), el.get("valueSet"))
                if required:
                    groups.setdefault(el.get("choice") or el["name"], []).append(el["name"])
            self.required[name] = tuple(tuple(keys) for keys in groups.values())
        self.value_sets = {
            url: frozenset().union(*systems.values()) for url, systems in raw["valueSets"].items()
        }
        self.system_codes: dict[str, frozenset[str]] = {}
        for systems in raw["valueSets"].values():
            for system, codes in systems.items():
                self.system_codes[system] = self.system_codes.get(system, frozenset()) | set(codes)
        self.resources = frozenset(
            n for n, s in raw["types"].items() if s["kind"] == "resource" and not s["abstract"])

    def is_primitive(self, type_name: str) -> bool:
        return type_name in self.primitives


@cache
def type_model() -> TypeModel:
    """The model, loaded once."""
    return TypeModel(orjson.loads(gzip.decompress(MODEL_PATH.read_bytes())))
