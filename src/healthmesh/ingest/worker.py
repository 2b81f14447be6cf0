"""The CPU-heavy half of ingest, run in worker processes: parse, validate, prepare.

Workers get chunks of raw NDJSON lines and return, per line, either a
:class:`~healthmesh.store.prepare.PreparedResource` ready for the store, a
:class:`~healthmesh.ingest.readers.Rejected` with the reason, or the parsed
resource when it holds conditional references, which only the main process
(which owns the store) can resolve. Importing this module loads the FHIR
model and search parameters, so a forkserver preloading it starts workers warm.
"""

from __future__ import annotations

import re
from typing import Any

from healthmesh.errors import FhirError
from healthmesh.fhir.validation import resource_types, validate
from healthmesh.ingest.readers import Rejected, parse_line
from healthmesh.store.prepare import prepare

__all__ = ["Outcome", "content_id", "process_chunk", "process_resource", "warm_up"]

# ("ok", PreparedResource fields as a tuple) | ("reject", Rejected) | ("resolve", dict)
# | ("skip", None)
Outcome = tuple[str, Any]
_CONDITIONAL = re.compile(rb'"reference"\s*:\s*"[A-Za-z]+\?')


def warm_up() -> None:
    """Build the lazily compiled FHIR model and checks for every resource type now.

    Run once in the forkserver, so every worker forked from it starts warm.
    """
    for rtype in sorted(resource_types()):
        validate({"resourceType": rtype, "id": "warm-up"})
    prepare({"resourceType": "Patient", "id": "warm-up"})


def process_resource(value: Any, source: str, line: int | None) -> Outcome:
    """Validate and prepare one parsed resource."""
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return "reject", Rejected(source, line, "not a FHIR resource (no resourceType)", value)
    if "id" not in value:
        value = {**value, "id": content_id(value)}
    issues = [i for i in validate(value) if i.severity in ("error", "fatal")]
    if issues:
        first = issues[0]
        reason = (f"{value['resourceType']} is not valid FHIR R4: {len(issues)} problem(s); "
                  f"first: {first.expression or ''} {first.message}")
        return "reject", Rejected(source, line, reason, value, issues=[i.to_fhir() for i in issues])
    try:
        return "ok", prepare(value)
    except FhirError as exc:
        return "reject", Rejected(source, line, exc.message, value)


def process_chunk(source: str, lines: list[tuple[int, bytes]]) -> list[tuple[int, Outcome]]:
    """Process raw NDJSON lines (number, bytes) of one file."""
    out: list[tuple[int, Outcome]] = []
    for number, raw in lines:
        value, rejected = parse_line(source, number, raw)
        if rejected is not None:
            out.append((number, ("reject", rejected)))
        elif value is None:
            out.append((number, ("skip", None)))
        elif _CONDITIONAL.search(raw):
            out.append((number, ("resolve", value)))
        else:
            kind, result = process_resource(value, source, number)
            if kind == "ok":  # plain tuples pickle about twice as fast as dataclasses
                result = (result.type, result.id, result.digest, result.patient, result.rows,
                          result.content)
            out.append((number, (kind, result)))
    return out


def content_id(resource: dict[str, Any]) -> str:
    """A deterministic id for a resource that has none (same content, same id)."""
    import hashlib

    import orjson

    digest = hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:32]

