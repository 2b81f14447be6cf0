"""``_summary`` and ``_elements``: return a subset of a resource, marked SUBSETTED."""

from __future__ import annotations

from functools import cache
from importlib import resources as importlib_resources
from typing import Any

import orjson

from healthmesh.fhir.search_query import SearchQuery

__all__ = ["shape_resource", "summary_elements"]

_ALWAYS = ("resourceType", "id", "meta")
_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


@cache
def _summary_table() -> dict[str, list[str]]:
    data = importlib_resources.files("healthmesh.fhir").joinpath("data/r4-summary.json")
    table: dict[str, list[str]] = orjson.loads(data.read_bytes())
    return table


def summary_elements(rtype: str) -> frozenset[str]:
    """Top-level elements of ``rtype`` marked isSummary in the R4 definitions."""
    return frozenset(_summary_table().get(rtype, ()))


def shape_resource(resource: dict[str, Any], query: SearchQuery) -> dict[str, Any]:
    """Apply ``_summary`` / ``_elements`` of ``query`` to one resource."""
    if query.summary == "text":
        keep = {"text"}
    elif query.summary == "true":
        keep = set(summary_elements(resource["resourceType"]))
    elif query.summary == "data":
        keep = {k for k in resource if k != "text"}
    elif query.elements:
        keep = set(query.elements)
    else:
        return resource
    out = {k: v for k, v in resource.items() if k in keep or k in _ALWAYS}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    out["meta"] = meta
    return out
