"""Generate the compact FHIR R4 validation model from the official definitions.

Reads the FHIR R4 (4.0.1) StructureDefinitions, ValueSets and CodeSystems and writes
``src/healthmesh/fhir/data/r4-model.json.gz``, the only input of
:mod:`healthmesh.fhir.validation`. The model holds just what validation needs:

* ``primitives``: for each primitive type, its JSON type (``boolean``, ``integer``,
  ``decimal`` or ``string``) and the regex from the ``value`` element's regex extension;
* ``types``: for each resource, complex datatype and backbone element (backbone
  elements are named by their path, e.g. ``Observation.referenceRange``), its kind and
  its elements as they appear in JSON: choice elements ``value[x]`` are expanded into
  ``valueQuantity``, ``valueString``, ... sharing a choice group ``value``; each element
  has min/max cardinality, a type name (a primitive, a complex type, a backbone path,
  or ``Resource`` for contained resources), the URL of its required-strength value set
  when that value set could be expanded, and the allowed reference target types;
* ``valueSets``: the expansion of every required value set that can be expanded
  locally (from ``valuesets.json`` and ``v3-codesystems.json``: whole code systems
  including nested concepts, listed concepts, imported value sets, excludes), as
  ``{system: [codes]}``;
* ``unexpandedValueSets``: the required value sets that cannot be expanded locally,
  with the reason (external code systems such as UCUM, BCP-13 mime types, ISO 4217;
  filters).

Details taken from the definitions: a resource's ``id`` has type ``id`` (its definition
says ``System.String``); a core profile on a type wins (``Quantity`` profiled as
``SimpleQuantity`` has no ``comparator``); elements with max ``0`` are left out.

The output is deterministic (sorted keys, gzip without timestamp)::

    python tools/gen_fhir_model.py [DEFINITIONS_DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEFINITIONS = ROOT.parent / "shared" / "fhir-r4" / "definitions"
DEFAULT_OUT = ROOT / "src" / "healthmesh" / "fhir" / "data" / "r4-model.json.gz"

SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
EXT_FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
EXT_REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}
JSON_TYPES = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "decimal",
}
BINDABLE = {"code", "Coding", "CodeableConcept"}
TERMINOLOGY_FILES = ("valuesets.json", "v3-codesystems.json")


def load_bundle(path: Path) -> list[dict[str, Any]]:
    """The resources of a definitions Bundle file."""
    bundle = orjson.loads(path.read_bytes())
    return [entry["resource"] for entry in bundle.get("entry", [])]


def structure_definitions(definitions: Path) -> list[dict[str, Any]]:
    """Every base StructureDefinition (types and resources, no logical models)."""
    sds = []
    for name in ("profiles-types.json", "profiles-resources.json"):
        for res in load_bundle(definitions / name):
            if res["resourceType"] == "StructureDefinition" and res["kind"] != "logical":
                sds.append(res)
    return sds


# --------------------------------------------------------------------------- primitives


def primitive_spec(sd: dict[str, Any]) -> dict[str, Any]:
    """JSON type and regex of one primitive type."""
    regex = None
    for el in sd["snapshot"]["element"]:
        if el["path"] == sd["type"] + ".value":
            for ext in el["type"][0].get("extension", []):
                if ext["url"] == EXT_REGEX:
                    regex = ext["valueString"]
    spec: dict[str, Any] = {"json": JSON_TYPES.get(sd["id"], "string"), "regex": regex}
    for el in sd["snapshot"]["element"]:
        if el["path"] == sd["type"] + ".value" and "maxLength" in el:
            spec["maxLength"] = el["maxLength"]
    return spec


# --------------------------------------------------------------------------- elements


def type_code(t: dict[str, Any]) -> str:
    """The FHIR type name of an ElementDefinition.type entry."""
    code = str(t["code"])
    if code in SYSTEM_TYPES:
        for ext in t.get("extension", []):
            if ext["url"] == EXT_FHIR_TYPE:
                return str(ext.get("valueUrl") or ext.get("valueUri"))
        return SYSTEM_TYPES[code]
    return code


def model_type(t: dict[str, Any], known: set[str]) -> str:
    """The model type of a type entry: a core profile on the type (SimpleQuantity) wins."""
    for profile in t.get("profile", []):
        name = str(profile).removeprefix(SD_PREFIX)
        if profile.startswith(SD_PREFIX) and name in known:
            return name
    return type_code(t)


def targets(t: dict[str, Any]) -> list[str] | None:
    """Allowed reference target types; None when any resource is allowed."""
    names = sorted({p.rsplit("/", 1)[-1] for p in t.get("targetProfile", [])})
    if not names or "Resource" in names:
        return None
    return names


def required_value_set(el: dict[str, Any]) -> str | None:
    """URL (without version) of a required binding, if any."""
    binding = el.get("binding")
    if not binding or binding.get("strength") != "required" or "valueSet" not in binding:
        return None
    return str(binding["valueSet"]).split("|", 1)[0]


def element_entries(
    sd: dict[str, Any], el: dict[str, Any], known: set[str]
) -> Iterator[dict[str, Any]]:
    """The JSON properties of one ElementDefinition (several for a choice element)."""
    path = el["path"]
    name = path.rsplit(".", 1)[-1]
    base: dict[str, Any] = {}
    if el.get("min", 0):
        base["min"] = el["min"]
    if el.get("max", "1") != "1":
        base["max"] = el["max"]
    if "contentReference" in el:
        yield {"name": name, "type": el["contentReference"].split("#", 1)[1], **base}
        return
    types = el.get("type", [])
    vs = required_value_set(el)
    if name.endswith("[x]"):
        group = name[:-3]
        for t in types:
            code = type_code(t)
            entry = {"name": group + code[0].upper() + code[1:], "choice": group, **base}
            yield _typed(entry, t, vs, known)
        return
    if sd["kind"] == "resource" and path == sd["type"] + ".id":
        yield {"name": name, "type": "id", **base}
        return
    if types and types[0]["code"] in ("BackboneElement", "Element"):
        yield {"name": name, "type": path, **base}  # a backbone element, defined by its path
        return
    yield _typed({"name": name, **base}, types[0], vs, known)


def _typed(
    entry: dict[str, Any], t: dict[str, Any], vs: str | None, known: set[str]
) -> dict[str, Any]:
    """Add type, required value set and reference targets to an element entry."""
    entry["type"] = model_type(t, known)
    code = type_code(t)
    if vs and code in BINDABLE:
        entry["valueSet"] = vs
    allowed = targets(t) if code == "Reference" else None
    if allowed:
        entry["targets"] = allowed
    return entry


def type_defs(sd: dict[str, Any], known: set[str]) -> dict[str, dict[str, Any]]:
    """The type definitions of one StructureDefinition: itself and its backbone elements."""
    root = sd["type"] if sd.get("derivation") != "constraint" else sd["id"]
    kind = "resource" if sd["kind"] == "resource" else "complex"
    defs: dict[str, dict[str, Any]] = {}
    backbones = {}
    for el in sd["snapshot"]["element"]:
        path = el["path"]
        if "." not in path:
            defs[root] = {"kind": kind, "abstract": bool(sd.get("abstract")), "elements": []}
            backbones[path] = root
            continue
        parent, _ = path.rsplit(".", 1)
        if el.get("max") == "0" or parent not in backbones:
            continue
        owner = defs[backbones[parent]]
        for entry in element_entries(sd, el, known):
            owner["elements"].append(entry)
        types = el.get("type", [])
        if types and types[0]["code"] in ("BackboneElement", "Element"):
            defs[path] = {"kind": "backbone", "abstract": False, "elements": []}
            backbones[path] = path
    return defs


# --------------------------------------------------------------------------- value sets


class Terminology:
    """ValueSets and CodeSystems from the definitions, and local expansion."""

    def __init__(self, definitions: Path) -> None:
        self.value_sets: dict[str, dict[str, Any]] = {}
        self.code_systems: dict[str, dict[str, Any]] = {}
        for name in TERMINOLOGY_FILES:
            path = definitions / name
            if not path.exists():
                continue
            for res in load_bundle(path):
                if res["resourceType"] == "ValueSet":
                    self.value_sets.setdefault(res["url"], res)
                elif res["resourceType"] == "CodeSystem":
                    self.code_systems.setdefault(res["url"], res)

    def expand(self, url: str, seen: frozenset[str] = frozenset()) -> dict[str, set[str]]:
        """Expand a value set to ``{system: codes}``; raise ValueError if not possible."""
        vs = self.value_sets.get(url)
        if vs is None:
            raise ValueError("value set not in the definitions")
        if url in seen:
            raise ValueError("circular value set import")
        compose = vs.get("compose", {})
        result: dict[str, set[str]] = {}
        for inc in compose.get("include", []):
            for system, codes in self._component(inc, seen | {url}).items():
                result.setdefault(system, set()).update(codes)
        for exc in compose.get("exclude", []):
            for system, codes in self._component(exc, seen | {url}).items():
                result.get(system, set()).difference_update(codes)
        return result

    def _component(self, comp: dict[str, Any], seen: frozenset[str]) -> dict[str, set[str]]:
        if comp.get("filter"):
            raise ValueError("uses a filter (" + _filters(comp["filter"]) + ")")
        system = comp.get("system")
        parts: list[dict[str, set[str]]] = []
        if system is not None:
            if "concept" in comp:
                parts.append({system: {c["code"] for c in comp["concept"]}})
            else:
                parts.append({system: self._all_codes(system)})
        for ref in comp.get("valueSet", []):
            parts.append(self.expand(ref.split("|", 1)[0], seen))
        return _intersect(parts)

    def _all_codes(self, system: str) -> set[str]:
        cs = self.code_systems.get(system)
        if cs is None:
            raise ValueError(f"code system {system} is not available locally")
        if cs.get("content") != "complete":
            raise ValueError(f"code system {system} content is {cs.get('content')}")
        return set(_codes(cs.get("concept", [])))


def _filters(filters: list[dict[str, Any]]) -> str:
    return ", ".join(f"{f.get('property')} {f.get('op')} {f.get('value')}" for f in filters)


def _intersect(parts: list[dict[str, set[str]]]) -> dict[str, set[str]]:
    """Intersection of include parts (system and valueSet in one include intersect)."""
    if not parts:
        return {}
    result = {s: set(c) for s, c in parts[0].items()}
    for part in parts[1:]:
        result = {s: c & part[s] for s, c in result.items() if s in part}
    return result


def _codes(concepts: Iterable[dict[str, Any]]) -> Iterator[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _codes(concept.get("concept", []))


# --------------------------------------------------------------------------- model


def build_model(definitions: Path) -> dict[str, Any]:
    """The validation model as a JSON-ready dict."""
    sds = structure_definitions(definitions)
    known = {sd["id"] for sd in sds}
    primitives = {}
    types: dict[str, dict[str, Any]] = {}
    for sd in sds:
        if sd["kind"] == "primitive-type":
            primitives[sd["id"]] = primitive_spec(sd)
        else:
            types.update(type_defs(sd, known))
    terminology = Terminology(definitions)
    value_sets: dict[str, dict[str, list[str]]] = {}
    unexpanded: dict[str, str] = {}
    for url in sorted(_bound_value_sets(types)):
        try:
            expansion = terminology.expand(url)
        except ValueError as exc:
            unexpanded[url] = str(exc)
            continue
        value_sets[url] = {s: sorted(c) for s, c in sorted(expansion.items())}
    _drop_unexpanded_bindings(types, unexpanded)
    return {
        "fhirVersion": "4.0.1",
        "primitives": primitives,
        "types": types,
        "valueSets": value_sets,
        "unexpandedValueSets": unexpanded,
    }


def _bound_value_sets(types: dict[str, dict[str, Any]]) -> set[str]:
    return {e["valueSet"] for t in types.values() for e in t["elements"] if "valueSet" in e}


def _drop_unexpanded_bindings(types: dict[str, dict[str, Any]], unexpanded: dict[str, str]) -> None:
    for t in types.values():
        for e in t["elements"]:
            if e.get("valueSet") in unexpanded:
                del e["valueSet"]


def write_model(model: dict[str, Any], out: Path) -> int:
    """Write the model as deterministic gzip JSON; return the compressed size."""
    raw = orjson.dumps(model, option=orjson.OPT_SORT_KEYS)
    data = gzip.compress(raw, compresslevel=9, mtime=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return len(data)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("definitions", nargs="?", type=Path, default=DEFAULT_DEFINITIONS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not (args.definitions / "profiles-resources.json").exists():
        print(f"no FHIR definitions in {args.definitions}", file=sys.stderr)
        return 2
    model = build_model(args.definitions)
    size = write_model(model, args.out)
    print(
        f"wrote {args.out} ({size} bytes): {len(model['types'])} types, "
        f"{len(model['primitives'])} primitives, {len(model['valueSets'])} value sets"
    )
    for url, reason in model["unexpandedValueSets"].items():
        print(f"  not expanded: {url}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
