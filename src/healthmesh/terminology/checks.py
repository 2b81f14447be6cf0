"""Code validation on every write: unknown or malformed codes become warnings on the resource.

A Coding whose ``system`` is one healthmesh ships a code list for (LOINC, SNOMED CT,
ICD-10-CM, ICD-10, RxNorm, CVX) and whose ``code`` is not in that list is accepted but
marked, never silently: :func:`annotate` adds to ``meta``

- one ``meta.tag`` per kind of problem, system :data:`WARNING_SYSTEM`, code
  ``unknown-code`` (well formed, not in the node's code list) or ``invalid-code`` (fails
  the system's syntax or check digit), so ``GET /fhir/Observation?_tag=<system>|unknown-code``
  finds them;
- one ``meta.extension`` per problem, url :data:`WARNING_EXTENSION`, whose ``valueString``
  names the code, where it is and what is wrong.

Annotations are recomputed on each write (earlier ones are removed first), so a resource
whose code was added to the lists loses its warning when it is written again, and the same
input always gives the same stored content. ``meta`` itself (tags, security labels) and
conformance/terminology resources (CodeSystem, ValueSet, ...) are not checked.

The check runs in :func:`healthmesh.store.prepare.prepare`, on every write path (REST,
Bundles, bulk ingest, flat-file mappings). It is one pass over the resource's dicts that
only answers "all known?"; the slower pass that records locations runs only when it says no.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

from healthmesh.terminology.codesystems import code_systems, syntax_problem

__all__ = ["WARNING_EXTENSION", "WARNING_SYSTEM", "CodeWarning", "annotate", "code_warnings",
           "warnings_in"]

WARNING_SYSTEM = "https://healthmesh.dev/fhir/CodeSystem/ingest-warning"
WARNING_EXTENSION = "https://healthmesh.dev/fhir/StructureDefinition/ingest-warning"
MAX_DETAILS = 20
"""Most warnings spelled out in ``meta.extension`` per resource (the tag counts them all)."""

_DISPLAY = {"unknown-code": "Code not in the node's code list for its system",
            "invalid-code": "Code malformed for its system (syntax or check digit)"}
_SKIP_TYPES = frozenset({
    "CodeSystem", "ValueSet", "ConceptMap", "NamingSystem", "StructureDefinition",
    "SearchParameter", "OperationDefinition", "CapabilityStatement", "ImplementationGuide",
    "StructureMap", "TerminologyCapabilities",
})
_EXT_BYTES = WARNING_EXTENSION.encode()


class CodeWarning:
    """One problem: ``kind`` is ``unknown-code`` or ``invalid-code``."""

    __slots__ = ("code", "kind", "message", "path", "system")

    def __init__(self, kind: str, system: str, code: str, path: str, message: str) -> None:
        self.kind, self.system, self.code, self.path = kind, system, code, path
        self.message = message

    def text(self) -> str:
        return f"{self.kind}: {self.system}|{self.code} at {self.path} {self.message}"


@cache
def _known() -> dict[str, frozenset[str]]:
    return {url: frozenset(cs.concepts) for url, cs in code_systems().items()}


def _all_known(root: dict[str, Any], known: dict[str, frozenset[str]]) -> bool:
    # written for speed (it runs on every write): explicit loops, exact type checks
    stack: list[Any] = [v for k, v in root.items() if k != "meta"]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        if type(item) is dict:
            system = item.get("system")
            if system is not None and system in known:
                code = item.get("code")
                if type(code) is str and code not in known[system]:
                    return False
            for value in item.values():
                kind = type(value)
                if kind is dict or kind is list:
                    push(value)
        elif type(item) is list:
            for value in item:
                kind = type(value)
                if kind is dict or kind is list:
                    push(value)
    return True


def code_warnings(resource: dict[str, Any]) -> list[CodeWarning]:
    """Every coded value in ``resource`` that is unknown or malformed for its system."""
    if resource.get("resourceType") in _SKIP_TYPES or _all_known(resource, _known()):
        return []
    out: list[CodeWarning] = []
    path = [str(resource.get("resourceType"))]
    for key, value in resource.items():
        if key != "meta" and (type(value) is dict or type(value) is list):
            path.append("." + key)
            _walk(value, path, out)
            path.pop()
    return out


def _walk(item: Any, path: list[str], out: list[CodeWarning]) -> None:
    # the location is kept as a list of segments and joined only for a warning
    if type(item) is list:
        for i, value in enumerate(item):
            if type(value) is dict or type(value) is list:
                path.append(f"[{i}]")
                _walk(value, path, out)
                path.pop()
        return
    system, code = item.get("system"), item.get("code")
    if type(system) is str and type(code) is str and system in _known() \
            and code not in _known()[system]:
        kind, message = _problem(system, code)
        out.append(CodeWarning(kind, system, code, "".join(path), message))
    for key, value in item.items():
        if type(value) is dict or type(value) is list:
            path.append("." + key)
            _walk(value, path, out)
            path.pop()


@lru_cache(maxsize=4096)
def _problem(system: str, code: str) -> tuple[str, str]:
    """The kind of warning and its text for a code not in its system's list (memoised:
    feeds repeat the same unknown codes)."""
    cs = code_systems()[system]
    problem = syntax_problem(cs, code)
    if problem is not None:
        return "invalid-code", problem
    return "unknown-code", f"is not in the node's {cs.name} code list"


def _annotated(meta: dict[str, Any]) -> bool:
    tags, exts = meta.get("tag"), meta.get("extension")
    return (isinstance(tags, list) and any(isinstance(t, dict) and t.get("system")
                                           == WARNING_SYSTEM for t in tags)) or \
        (isinstance(exts, list) and any(isinstance(e, dict) and e.get("url")
                                        == WARNING_EXTENSION for e in exts))


def _strip(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` without earlier warning annotations (empty lists removed)."""
    out = dict(meta)
    tags = [t for t in meta.get("tag", []) if not (isinstance(t, dict)
                                                    and t.get("system") == WARNING_SYSTEM)]
    exts = [e for e in meta.get("extension", []) if not (isinstance(e, dict)
                                                         and e.get("url") == WARNING_EXTENSION)]
    for key, kept in (("tag", tags), ("extension", exts)):
        if kept:
            out[key] = kept
        else:
            out.pop(key, None)
    return out


def annotate(resource: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``resource`` with its code warnings recorded in ``meta``, and how many there are.

    Returns the same object when there is nothing to add or remove; never mutates it.
    """
    found = code_warnings(resource)
    meta = resource.get("meta")
    if not found and not (isinstance(meta, dict) and _annotated(meta)):
        return resource, 0
    new_meta = _strip(meta) if isinstance(meta, dict) else {}
    if found:
        kinds = sorted({w.kind for w in found})
        new_meta["tag"] = [*new_meta.get("tag", []),
                           *({"system": WARNING_SYSTEM, "code": k, "display": _DISPLAY[k]}
                             for k in kinds)]
        details = [w.text() for w in found[:MAX_DETAILS]]
        if len(found) > MAX_DETAILS:
            details.append(f"... and {len(found) - MAX_DETAILS} more code warning(s)")
        new_meta["extension"] = [*new_meta.get("extension", []),
                                 *({"url": WARNING_EXTENSION, "valueString": d}
                                   for d in details)]
    out = dict(resource)
    if new_meta:
        out["meta"] = new_meta
    else:
        out.pop("meta", None)
    return out, len(found)


def warnings_in(content: bytes) -> int:
    """How many warnings a stored resource's JSON carries (counts the detail extensions)."""
    return content.count(_EXT_BYTES)
