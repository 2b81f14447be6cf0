"""FHIR terminology operations on the node's shipped code systems (``/fhir``).

``CodeSystem/$lookup``, ``CodeSystem/$validate-code``, ``ValueSet/$validate-code`` and
``ConceptMap/$translate``, by GET (query parameters) or POST (a Parameters resource). They
answer from the curated code lists of :mod:`healthmesh.terminology` and return Parameters;
an unknown system or value set is a 404 OperationOutcome, a missing parameter a 400.

The code lists hold no patient data, so nothing is audited or filtered by consent, but the
caller must still be authenticated like on every other data route. The router is included
before the generic ``/fhir/{type}/{id}`` routes, which would otherwise take
``CodeSystem/$lookup`` for a read of the CodeSystem with id ``$lookup``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from healthmesh.api.bodies import read_json_body
from healthmesh.api.fhir import fhir_response, requester_of
from healthmesh.api.openapi import ERRORS
from healthmesh.errors import InvalidRequest
from healthmesh.node import Node
from healthmesh.terminology import operations

__all__ = ["router"]

router = APIRouter(prefix="/fhir", tags=["Terminology"])

_NAMES = ("system", "code", "display", "url", "target", "targetsystem")


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def _params(request: Request) -> dict[str, str | None]:
    """The operation's inputs from the query string (GET) or a Parameters body (POST)."""
    requester_of(request)  # authenticate the caller (raises 401 without a valid token)
    found: dict[str, str | None] = {}
    if request.method == "POST":
        body = await read_json_body(request, _node(request).settings)
        found.update(_from_parameters(body))
    for name in _NAMES:
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise InvalidRequest(f"parameter {name!r} is given more than once")
        if values and name not in found:
            found[name] = values[0]
    if "targetsystem" in found and "target" not in found:
        found["target"] = found["targetsystem"]
    return found


def _from_parameters(body: Any) -> dict[str, str | None]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("the request body must be a Parameters resource")
    params = body.get("parameter") or []
    if not isinstance(params, list):
        raise InvalidRequest("Parameters.parameter must be an array")
    out: dict[str, str | None] = {}
    for item in params:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest("each Parameters.parameter needs a name")
        name = item["name"]
        if name == "coding":
            coding = item.get("valueCoding")
            if not isinstance(coding, dict):
                raise InvalidRequest("parameter 'coding' needs a valueCoding")
            for key in ("system", "code", "display"):
                if isinstance(coding.get(key), str):
                    out[key] = coding[key]
            continue
        if name.lower() not in _NAMES:
            continue  # parameters this node does not use (version, date, ...)
        values = [v for k, v in item.items() if k.startswith("value") and isinstance(v, str)]
        if len(values) != 1:
            raise InvalidRequest(f"parameter {name!r} needs one string/uri/code value")
        out[name.lower()] = values[0]
    return out


def _operation(path: str, summary: str, run: Callable[[dict[str, str | None]], Any]) -> None:
    async def endpoint(request: Request) -> Response:
        return fhir_response(run(await _params(request)))

    name = "op" + path.replace("/", "_").replace("$", "").replace("-", "_")
    endpoint.__name__ = name
    for method in ("GET", "POST"):  # one operation each, so OpenAPI operation ids are unique
        router.add_api_route(path, endpoint, methods=[method], summary=summary,
                             operation_id=f"{name}_{method.lower()}",
                             responses=ERRORS)


_operation("/CodeSystem/$lookup", "CodeSystem $lookup (shipped code systems)",
           lambda p: operations.lookup(p.get("system"), p.get("code")))
_operation("/CodeSystem/$validate-code", "CodeSystem $validate-code",
           lambda p: operations.validate_code(p.get("system") or p.get("url"), p.get("code"),
                                              p.get("display")))
_operation("/ValueSet/$validate-code", "ValueSet $validate-code (shipped value sets)",
           lambda p: operations.validate_in_value_set(p.get("url"), p.get("system"),
                                                      p.get("code"), p.get("display")))
_operation("/ConceptMap/$translate", "ConceptMap $translate (SNOMED CT <-> ICD-10-CM)",
           lambda p: operations.translate_code(p.get("system"), p.get("code"),
                                               p.get("target")))
