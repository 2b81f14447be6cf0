"""The node's CapabilityStatement, built from what the code actually supports."""

from __future__ import annotations

from typing import Any

from healthmesh import __version__
from healthmesh.fhir.search_params import search_params
from healthmesh.fhir.validation import resource_types
from healthmesh.node import Node

__all__ = ["capability_statement"]

_INTERACTIONS = [
    "read", "vread", "update", "delete", "history-instance", "history-type", "create",
    "search-type",
]
_SEARCH_TYPES = {"token", "string", "date", "reference", "quantity", "number", "uri"}
_TERMINOLOGY_OPERATIONS = {"CodeSystem": ("lookup", "validate-code"),
                           "ValueSet": ("validate-code",), "ConceptMap": ("translate",)}


def _resource_entry(rtype: str) -> dict[str, Any]:
    params = [
        {"name": code, "type": p.type, "documentation": p.expression}
        for code, p in sorted(search_params(rtype).items())
        if p.supported and p.type in _SEARCH_TYPES and code != "_id"
    ]
    params.insert(0, {"name": "_id", "type": "token"})
    entry: dict[str, Any] = {
        "type": rtype,
        "interaction": [{"code": c} for c in _INTERACTIONS],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": params,
    }
    if rtype in _TERMINOLOGY_OPERATIONS:  # answered by api/terminology.py
        entry["operation"] = [
            {"name": name, "definition": f"http://hl7.org/fhir/OperationDefinition/{rtype}-{name}"}
            for name in _TERMINOLOGY_OPERATIONS[rtype]
        ]
    if rtype == "Patient":
        entry["operation"] = [
            {"name": "everything",
             "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
        ]
    include = sorted(
        f"{rtype}:{code}" for code, p in search_params(rtype).items()
        if p.type == "reference" and p.supported
    )
    if include:
        entry["searchInclude"] = include
    return entry


def capability_statement(node: Node, base: str) -> dict[str, Any]:
    """A CapabilityStatement that tells the truth about this node."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "healthmesh", "version": __version__},
        "implementation": {"description": node.settings.name, "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "resource": [_resource_entry(t) for t in sorted(resource_types())],
                "interaction": [
                    {"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}
                ],
                "security": {
                    "description": "Every read is filtered by the patients' consents for the "
                    "caller's purpose of use (X-Purpose-Of-Use) and audited. The default "
                    f"policy per purpose: {base.removesuffix('/fhir')}/consent-policy",
                },
                "operation": [{"name": "export",
                               "definition": "http://hl7.org/fhir/uv/bulkdata/"
                               "OperationDefinition/export"}],
                "searchParam": [
                    {"name": "_count", "type": "number"},
                    {"name": "_sort", "type": "string"},
                    {"name": "_total", "type": "token"},
                    {"name": "_summary", "type": "token"},
                    {"name": "_elements", "type": "string"},
                ],
            }
        ],
    }
