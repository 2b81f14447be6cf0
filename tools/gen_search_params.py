"""Generate ``src/healthmesh/fhir/data/r4-search-params.json`` from the FHIR R4 definitions.

The FHIRPath expression of every R4 SearchParameter is compiled, per resource type, into a
small path form that :mod:`healthmesh.fhir.search_params` evaluates without a FHIRPath engine:

    {"path": [step, ...], "type": leaf FHIR type, "resolve": "Patient"?}

A step is a JSON key, or ``{"key": k, "where": [field, value]}`` for an equality filter such as
``telecom.where(system='phone')`` or ``extension('url')``. Choice elements (``value[x]``) are
expanded, with the StructureDefinitions, into one path per concrete JSON key
(``valueQuantity``, ``valueCodeableConcept``, ...); ``as(T)``/``ofType(T)`` keep only one.
``where(resolve() is T)`` becomes ``"resolve": T``. The one ``exists()`` form of R4
(``Patient.deceased``) becomes ``{"exists": [keys...], "type": "boolean"}``.

Parameters that cannot be compiled (no expression, composite, special, unknown paths or
unsupported FHIRPath) are written with ``"supported": false`` and a ``"reason"``. Branches
of a supported parameter that were skipped (for example ``Range`` or ``SampledData`` under a
quantity parameter) are listed under ``"skipped"``.

The file also carries the R4 Patient CompartmentDefinition (4.0.1), written from the spec.

Usage: python tools/gen_search_params.py [--definitions DIR] [--search-params FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEFINITIONS = ROOT.parent / "shared" / "fhir-r4" / "definitions"
DEFAULT_OUT = ROOT / "src" / "healthmesh" / "fhir" / "data" / "r4-search-params.json"

#: Parameters the store indexes itself (not extracted from the resource body).
STORE_HANDLED = ("_id",)

#: R4 (4.0.1) Patient CompartmentDefinition: resource type -> linking search params, in the
#: spec's order (http://hl7.org/fhir/R4/compartmentdefinition-patient.html).
PATIENT_COMPARTMENT: dict[str, list[str]] = {
    "Account": ["subject"],
    "AdverseEvent": ["subject"],
    "AllergyIntolerance": ["patient", "recorder", "asserter"],
    "Appointment": ["actor"],
    "AppointmentResponse": ["actor"],
    "AuditEvent": ["patient"],
    "Basic": ["patient", "author"],
    "BodyStructure": ["patient"],
    "CarePlan": ["patient", "performer"],
    "CareTeam": ["patient", "participant"],
    "ChargeItem": ["subject"],
    "Claim": ["patient", "payee"],
    "ClaimResponse": ["patient"],
    "ClinicalImpression": ["subject"],
    "Communication": ["subject", "sender", "recipient"],
    "CommunicationRequest": ["subject", "sender", "recipient", "requester"],
    "Composition": ["subject", "author", "attester"],
    "Condition": ["patient", "asserter"],
    "Consent": ["patient"],
    "Coverage": ["policy-holder", "subscriber", "beneficiary", "payor"],
    "CoverageEligibilityRequest": ["patient"],
    "CoverageEligibilityResponse": ["patient"],
    "DetectedIssue": ["patient"],
    "DeviceRequest": ["subject", "performer"],
    "DeviceUseStatement": ["subject"],
    "DiagnosticReport": ["subject"],
    "DocumentManifest": ["subject", "author", "recipient"],
    "DocumentReference": ["subject", "author"],
    "Encounter": ["patient"],
    "EnrollmentRequest": ["subject"],
    "EpisodeOfCare": ["patient"],
    "ExplanationOfBenefit": ["patient", "payee"],
    "FamilyMemberHistory": ["patient"],
    "Flag": ["patient"],
    "Goal": ["patient"],
    "Group": ["member"],
    "ImagingStudy": ["patient"],
    "Immunization": ["patient"],
    "ImmunizationEvaluation": ["patient"],
    "ImmunizationRecommendation": ["patient"],
    "Invoice": ["subject", "patient", "recipient"],
    "List": ["subject", "source"],
    "MeasureReport": ["patient"],
    "Media": ["subject"],
    "MedicationAdministration": ["patient", "performer", "subject"],
    "MedicationDispense": ["subject", "patient", "receiver"],
    "MedicationRequest": ["subject"],
    "MedicationStatement": ["subject"],
    "MolecularSequence": ["patient"],
    "NutritionOrder": ["patient"],
    "Observation": ["subject", "performer"],
    "Patient": ["link"],
    "Person": ["patient"],
    "Procedure": ["patient", "performer"],
    "Provenance": ["patient"],
    "QuestionnaireResponse": ["subject", "author"],
    "RelatedPerson": ["patient"],
    "RequestGroup": ["subject", "participant"],
    "ResearchSubject": ["individual"],
    "RiskAssessment": ["subject"],
    "Schedule": ["actor"],
    "ServiceRequest": ["subject", "performer"],
    "Specimen": ["subject"],
    "SupplyDelivery": ["patient"],
    "SupplyRequest": ["subject"],
    "VisionPrescription": ["patient"],
}

#: Compartment params tried first when looking for "the" patient of a resource.
COMPARTMENT_PREFERRED = ("patient", "subject", "beneficiary", "individual")


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Leaf FHIR types each search parameter type can index.
COMPATIBLE: dict[str, frozenset[str]] = {
    "token": _names(
        "code boolean id string uri url canonical oid uuid"
        " Identifier Coding CodeableConcept ContactPoint"
    ),
    "string": _names("string markdown code id uri url canonical HumanName Address"),
    "date": _names("date dateTime instant Period Timing"),
    "reference": _names("Reference canonical uri url"),
    "quantity": _names("Quantity Age Duration Distance Count Money"),
    "number": _names("decimal integer positiveInt unsignedInt"),
    "uri": _names("uri url canonical oid uuid"),
}

INLINE_TYPES = frozenset({"BackboneElement", "Element"})
FHIRPATH_STRING = "http://hl7.org/fhirpath/System.String"


class Unsupported(Exception):
    """An expression (or branch) that the path compiler does not handle."""


@dataclass
class Element:
    """What the compiler needs from one ElementDefinition."""

    types: list[str]
    content_ref: str | None = None


@dataclass
class Model:
    """Element definitions of all resources and data types, keyed by type then path."""

    elements: dict[str, dict[str, Element]] = field(default_factory=dict)
    resource_types: list[str] = field(default_factory=list)

    def lookup(self, sd_type: str, path: str) -> tuple[str, Element] | None:
        """Find an element by its path inside ``sd_type``; try ``[x]`` for choices."""
        table = self.elements.get(sd_type, {})
        for candidate in (path, path + "[x]"):
            if candidate in table:
                return candidate, table[candidate]
        return None


def load_model(definitions: Path) -> Model:
    """Read profiles-resources.json and profiles-types.json into a :class:`Model`."""
    model = Model()
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((definitions / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if (
                sd.get("resourceType") != "StructureDefinition"
                or sd.get("derivation") == "constraint"
            ):
                continue
            table: dict[str, Element] = {}
            for el in sd["snapshot"]["element"]:
                types = [_type_code(t["code"]) for t in el.get("type", [])]
                ref = el.get("contentReference")
                table[el["path"]] = Element(types, ref[1:] if ref else None)
            model.elements[sd["type"]] = table
            if sd["kind"] == "resource" and not sd.get("abstract") and sd["id"] == sd["type"]:
                model.resource_types.append(sd["type"])
    model.resource_types.sort()
    return model


def _type_code(code: str) -> str:
    return "string" if code == FHIRPATH_STRING else code


# --------------------------------------------------------------------------- parsing


def split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` outside parentheses, brackets and quotes."""
    parts, depth, quote, start, i = [], 0, False, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quote = not quote
        elif not quote and ch in "([":
            depth += 1
        elif not quote and ch in ")]":
            depth -= 1
        elif not quote and depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


_AS_PAREN = re.compile(r"^\((.+) as (\w+)\)(.*)$")
_EXISTS = re.compile(r"^(\w+)\.(\w+)\.exists\(\) and \1\.\2 != false$")
_WHERE_RESOLVE = re.compile(r"^where\(resolve\(\) is (\w+)\)$")
_WHERE_EQ = re.compile(r"^where\((\w+) ?= ?'([^']*)'\)$")
_AS_CALL = re.compile(r"^(?:as|ofType)\((\w+)\)$")
_EXTENSION = re.compile(r"^extension\('([^']*)'\)$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")


def normalise_branch(branch: str) -> str:
    """Rewrite ``(X as T).rest`` into ``X.as(T).rest`` and drop wrapping parentheses."""
    branch = branch.strip()
    m = _AS_PAREN.match(branch)
    if m and _balanced(m.group(1)):
        return f"{normalise_branch(m.group(1))}.as({m.group(2)}){m.group(3)}"
    if branch.startswith("(") and branch.endswith(")") and _balanced(branch[1:-1]):
        return normalise_branch(branch[1:-1])
    return branch


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def branch_root(branch: str) -> str:
    """The type name a branch starts with (``Observation`` in ``(Observation.value as X)``)."""
    return re.split(r"[.\s]", normalise_branch(branch), maxsplit=1)[0]


# --------------------------------------------------------------------------- compiling


@dataclass
class Cursor:
    """One position while walking a path: where we are in the model and the JSON keys so far."""

    sd_type: str
    el_path: str
    steps: list[Any]
    fhir_type: str
    choice: list[tuple[str, str]] | None = None  # pending (json key, type) choice expansion
    resolve: str | None = None


def compile_branch(model: Model, resource_type: str, branch: str) -> list[dict[str, Any]]:
    """Compile one union branch for ``resource_type`` into concrete paths."""
    text = normalise_branch(branch)
    m = _EXISTS.match(text)
    if m:
        return [_compile_exists(model, resource_type, m.group(2))]
    segments = split_top(text, ".")
    if segments[0] not in (resource_type, "Resource", "DomainResource"):
        raise Unsupported(f"branch for another type: {branch}")
    cursors = [Cursor(resource_type, resource_type, [], resource_type)]
    for seg in segments[1:]:
        cursors = [c for cur in cursors for c in _apply(model, cur, seg)]
    return [_finish(c) for cur in cursors for c in _settle(cur)]


def _compile_exists(model: Model, resource_type: str, name: str) -> dict[str, Any]:
    found = model.lookup(resource_type, f"{resource_type}.{name}")
    if found is None:
        raise Unsupported(f"unknown element {resource_type}.{name}")
    el_path, el = found
    keys = [_choice_key(name, t) for t in el.types] if el_path.endswith("[x]") else [name]
    return {"exists": keys, "type": "boolean"}


def _choice_key(name: str, type_code: str) -> str:
    return name + type_code[0].upper() + type_code[1:]


def _apply(model: Model, cur: Cursor, seg: str) -> list[Cursor]:
    if m := _AS_CALL.match(seg):
        return _restrict(cur, m.group(1))
    if m := _WHERE_RESOLVE.match(seg):
        return [_with(c, resolve=m.group(1)) for c in _settle(cur)]
    if m := _WHERE_EQ.match(seg):
        return [_filtered(c, m.group(1), m.group(2)) for c in _settle(cur)]
    if m := _EXTENSION.match(seg):
        steps = [c for settled in _settle(cur) for c in _step(model, settled, "extension")]
        return [_filtered(c, "url", m.group(1)) for c in steps]
    if _NAME.match(seg):
        return [c for settled in _settle(cur) for c in _step(model, settled, seg)]
    raise Unsupported(f"unsupported FHIRPath: {seg}")


def _with(cur: Cursor, **changes: Any) -> Cursor:
    data = dict(cur.__dict__)
    data.update(changes)
    return Cursor(**data)


def _restrict(cur: Cursor, type_code: str) -> list[Cursor]:
    if cur.choice is not None:
        keep = [(k, t) for k, t in cur.choice if t == type_code]
        return [_with(cur, choice=keep)] if keep else []
    return [cur] if cur.fhir_type == type_code else []


def _filtered(cur: Cursor, fld: str, value: str) -> Cursor:
    if cur.resolve is not None or not cur.steps:
        raise Unsupported("filter in an unsupported position")
    last = cur.steps[-1]
    if isinstance(last, dict):
        raise Unsupported("two filters on one step")
    return _with(cur, steps=[*cur.steps[:-1], {"key": last, "where": [fld, value]}])


def _settle(cur: Cursor) -> list[Cursor]:
    """Expand a pending choice into one cursor per concrete JSON key."""
    if cur.choice is None:
        return [cur]
    out = []
    for key, type_code in cur.choice:
        sd_type, el_path = _context_for(type_code, cur.sd_type, cur.el_path)
        out.append(Cursor(sd_type, el_path, [*cur.steps, key], type_code, None, cur.resolve))
    return out


def _context_for(type_code: str, sd_type: str, el_path: str) -> tuple[str, str]:
    if type_code in INLINE_TYPES:
        return sd_type, el_path
    return type_code, type_code


def _step(model: Model, cur: Cursor, name: str) -> list[Cursor]:
    if cur.resolve is not None:
        raise Unsupported("path continues after resolve()")
    found = model.lookup(cur.sd_type, f"{cur.el_path}.{name}")
    if found is None:
        raise Unsupported(f"unknown element {cur.el_path}.{name} (in {cur.sd_type})")
    el_path, el = found
    if el.content_ref:
        ref_type = el.content_ref.split(".", 1)[0]
        return [Cursor(ref_type, el.content_ref, [*cur.steps, name], "BackboneElement")]
    if el_path.endswith("[x]"):
        choice = [(_choice_key(name, t), t) for t in el.types]
        return [Cursor(cur.sd_type, el_path, list(cur.steps), "choice", choice)]
    if len(el.types) != 1:
        raise Unsupported(f"element without a single type: {el_path}")
    type_code = el.types[0]
    sd_type, ctx = _context_for(type_code, cur.sd_type, el_path)
    return [Cursor(sd_type, ctx, [*cur.steps, name], type_code)]


def _finish(cur: Cursor) -> dict[str, Any]:
    if not cur.steps:
        raise Unsupported("empty path")
    out: dict[str, Any] = {"path": cur.steps, "type": cur.fhir_type}
    if cur.resolve:
        out["resolve"] = cur.resolve
    return out


# --------------------------------------------------------------------------- params


def compile_param(model: Model, sp: dict[str, Any], resource_type: str) -> dict[str, Any]:
    """The generated entry for one SearchParameter on one resource type."""
    ptype = sp["type"]
    expression = sp.get("expression")
    branches = _branches_for(expression, resource_type) if expression else []
    entry: dict[str, Any] = {
        "type": ptype,
        "expression": " | ".join(branches),
        "url": sp["url"],
        "targets": sorted(sp.get("target", [])),
        "paths": [],
        "supported": False,
    }
    if sp["code"] in STORE_HANDLED:
        entry.update(supported=True, store=True)
        return entry
    reason = _unsupported_reason(ptype, expression, branches)
    if reason:
        entry["reason"] = reason
        return entry
    paths, skipped = _compile_branches(model, resource_type, ptype, branches)
    entry["paths"] = paths
    entry["supported"] = bool(paths)
    if skipped:
        entry["skipped" if paths else "reason"] = skipped if paths else "; ".join(skipped)
    return entry


def _unsupported_reason(ptype: str, expression: str | None, branches: list[str]) -> str:
    if ptype in ("composite", "special"):
        return f"{ptype} search parameters are not supported"
    if not expression:
        return "no FHIRPath expression"
    if not branches:
        return "expression has no branch for this resource type"
    return ""


def _compile_branches(
    model: Model, resource_type: str, ptype: str, branches: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    paths: list[dict[str, Any]] = []
    skipped: list[str] = []
    for branch in branches:
        try:
            compiled = compile_branch(model, resource_type, branch)
        except Unsupported as exc:
            skipped.append(f"{branch}: {exc}")
            continue
        usable = [p for p in compiled if "exists" in p or p["type"] in COMPATIBLE[ptype]]
        if not usable:
            types = sorted({p["type"] for p in compiled})
            skipped.append(f"{branch}: no {ptype}-indexable type ({', '.join(types) or 'none'})")
        paths.extend(p for p in usable if p not in paths)
    return paths, skipped


def _branches_for(expression: str, resource_type: str) -> list[str]:
    """The union branches that apply to ``resource_type``.

    A branch that does not start with a type name (R4 ``InsurancePlan-name`` is written
    ``name | alias``) is read as relative to the resource.
    """
    out = []
    for branch in split_top(expression, "|"):
        root = branch_root(branch)
        if root in (resource_type, "Resource", "DomainResource"):
            out.append(branch)
        elif root[:1].islower():
            out.append(f"{resource_type}.{branch}")
    return out


def build(definitions: Path, search_params: Path | None = None) -> dict[str, Any]:
    """Build the whole generated document."""
    model = load_model(definitions)
    source = search_params or definitions / "search-parameters.json"
    bundle = json.loads(source.read_text(encoding="utf-8"))
    params = [e["resource"] for e in bundle["entry"]]
    by_type: dict[str, dict[str, Any]] = {t: {} for t in model.resource_types}
    for sp in params:
        bases = set(sp["base"])
        for rtype in model.resource_types:
            if bases & {rtype, "Resource", "DomainResource"}:
                by_type[rtype][sp["code"]] = compile_param(model, sp, rtype)
    return {
        "fhirVersion": "4.0.1",
        "generator": "tools/gen_search_params.py",
        "store_handled": list(STORE_HANDLED),
        "compartments": {"Patient": _compartment(by_type)},
        "resources": {t: dict(sorted(p.items())) for t, p in sorted(by_type.items())},
    }


def _compartment(by_type: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Patient compartment params per type, preferred params first; checks they exist."""
    out: dict[str, list[str]] = {}
    for rtype, codes in sorted(PATIENT_COMPARTMENT.items()):
        missing = [c for c in codes if c not in by_type.get(rtype, {})]
        if missing:
            raise SystemExit(f"compartment params not defined for {rtype}: {missing}")
        first = [c for c in COMPARTMENT_PREFERRED if c in codes]
        out[rtype] = first + [c for c in codes if c not in first]
    return out


def summary(doc: dict[str, Any]) -> str:
    """Human-readable counts of supported and unsupported params per search type."""
    total: Counter[str] = Counter()
    unsupported: Counter[str] = Counter()
    partial = 0
    for params in doc["resources"].values():
        for entry in params.values():
            total[entry["type"]] += 1
            unsupported[entry["type"]] += not entry["supported"]
            partial += "skipped" in entry
    lines = [f"{'type':<10} {'params':>7} {'unsupported':>12}"]
    for ptype in sorted(total):
        lines.append(f"{ptype:<10} {total[ptype]:>7} {unsupported[ptype]:>12}")
    lines.append(f"{'all':<10} {sum(total.values()):>7} {sum(unsupported.values()):>12}")
    lines.append(f"supported with some branches skipped: {partial}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definitions", type=Path, default=DEFAULT_DEFINITIONS)
    parser.add_argument(
        "--search-params",
        type=Path,
        default=None,
        help="search-parameters.json (default: in --definitions)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    doc = build(args.definitions, args.search_params)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    args.out.write_text(text, encoding="utf-8")
    if not args.quiet:
        print(f"wrote {args.out} ({len(text) // 1024} KiB)", file=sys.stderr)
        print(summary(doc), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
