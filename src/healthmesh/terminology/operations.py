"""The FHIR terminology operations on the shipped code systems, as Parameters resources.

``$lookup`` (CodeSystem), ``$validate-code`` (CodeSystem and ValueSet) and ``$translate``
(ConceptMap, SNOMED CT <-> ICD-10-CM). These functions know nothing of HTTP: the API
(:mod:`healthmesh.api.terminology`) parses the request into keyword arguments and returns
what they give; errors are :class:`~healthmesh.errors.FhirError` subclasses (unknown system
or value set: 404; missing or malformed parameters: 400).
"""

from __future__ import annotations

from typing import Any

from healthmesh.errors import InvalidRequest, NotFound
from healthmesh.terminology.codesystems import CodeSystem, code_system, code_systems, syntax_problem
from healthmesh.terminology.conceptmaps import translate
from healthmesh.terminology.valuesets import value_set_by_url

__all__ = ["lookup", "parameters", "translate_code", "validate_code", "validate_in_value_set"]


def parameters(*pairs: tuple[str, str, Any]) -> dict[str, Any]:
    """A FHIR Parameters resource from ``(name, value type, value)`` triples (None skipped)."""
    return {"resourceType": "Parameters", "parameter": [
        {"name": name, f"value{kind}": value} for name, kind, value in pairs if value is not None
    ]}


def _system(system: str | None) -> CodeSystem:
    if not system:
        raise InvalidRequest("parameter 'system' is required")
    found = code_system(system)
    if found is None:
        known = ", ".join(sorted(code_systems()))
        raise NotFound(f"code system {system!r} is not known to this node (known: {known})")
    return found


def _code(code: str | None) -> str:
    if not code or not code.strip():
        raise InvalidRequest("parameter 'code' is required")
    if len(code) > 256:
        raise InvalidRequest("parameter 'code' is longer than 256 characters")
    return code.strip()


def lookup(system: str | None, code: str | None) -> dict[str, Any]:
    """``CodeSystem/$lookup``: the name of the system and the display of the code."""
    cs, code = _system(system), _code(code)
    display = cs.display(code)
    if display is None:
        problem = syntax_problem(cs, code) or f"is not in this node's {cs.name} code list"
        raise NotFound(f"{cs.name} code {code!r} {problem}")
    out = parameters(("name", "String", cs.name), ("display", "String", display))
    for t in translate(cs.url, code):
        out["parameter"].append({"name": "property", "part": [
            {"name": "code", "valueCode": "mapped-to"},
            {"name": "value", "valueCoding": {"system": t.system, "code": t.code,
                                               **({"display": t.display} if t.display else {})}},
            {"name": "description", "valueString": f"equivalence: {t.equivalence}"},
        ]})
    return out


def _display_message(expected: str, given: str | None) -> str | None:
    if given is None or given.strip().casefold() == expected.casefold():
        return None
    return f"display {given!r} is not the display of this code ({expected!r})"


def validate_code(system: str | None, code: str | None,
                  display: str | None = None) -> dict[str, Any]:
    """``CodeSystem/$validate-code``: is ``code`` a code of ``system`` (with this display)?"""
    cs, code = _system(system), _code(code)
    known = cs.display(code)
    if known is None:
        problem = syntax_problem(cs, code) or (
            f"is not in this node's {cs.name} code list (a curated subset)")
        return parameters(("result", "Boolean", False),
                          ("message", "String", f"{cs.name} code {code!r} {problem}"))
    message = _display_message(known, display)
    return parameters(("result", "Boolean", message is None), ("message", "String", message),
                      ("display", "String", known))


def validate_in_value_set(url: str | None, system: str | None, code: str | None,
                          display: str | None = None) -> dict[str, Any]:
    """``ValueSet/$validate-code``: is ``system|code`` in the value set ``url``?"""
    if not url:
        raise InvalidRequest("parameter 'url' is required")
    vs = value_set_by_url(url)
    if vs is None:
        raise NotFound(f"value set {url!r} is not known to this node")
    cs, code = _system(system), _code(code)
    if not vs.contains(cs.url, code):
        return parameters(("result", "Boolean", False),
                          ("message", "String", f"{cs.url}|{code} is not in {vs.url}"))
    known = cs.display(code)
    message = _display_message(known, display) if known else None
    return parameters(("result", "Boolean", message is None), ("message", "String", message),
                      ("display", "String", known))


def translate_code(system: str | None, code: str | None,
                   target: str | None = None) -> dict[str, Any]:
    """``ConceptMap/$translate`` between SNOMED CT and ICD-10-CM."""
    cs, code = _system(system), _code(code)
    target_cs = code_system(target) if target else None
    target_url = target_cs.url if target_cs is not None else target
    found = translate(cs.url, code, target_url)
    out = parameters(("result", "Boolean", bool(found)),
                     ("message", "String", None if found else
                      f"no translation of {cs.url}|{code} is known to this node"))
    for t in found:
        concept = {"system": t.system, "code": t.code, **({"display": t.display}
                                                          if t.display else {})}
        out["parameter"].append({"name": "match", "part": [
            {"name": "equivalence", "valueCode": t.equivalence},
            {"name": "concept", "valueCoding": concept},
        ]})
    return out
