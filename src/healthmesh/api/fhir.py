"""FHIR R4 REST routes (``/fhir``): translate HTTP to :class:`FhirService` calls.

Responses are ``application/fhir+json``. Search bundles are assembled from the
stored JSON bytes without re-parsing them, which keeps large pages fast.
Every error is an OperationOutcome whose HTTP status comes from the error
(see :mod:`healthmesh.errors`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request, Response

from healthmesh.api.bodies import read_json_body
from healthmesh.api.capability import capability_statement
from healthmesh.api.openapi import FhirJSON, responses
from healthmesh.api.shaping import shape_resource
from healthmesh.audit.records import AuditRecord
from healthmesh.auth.tokens import Unauthorized
from healthmesh.errors import FhirError, Issue, MethodNotAllowed, operation_outcome
from healthmesh.fhir.bundles import process_bundle
from healthmesh.fhir.search_query import SearchQuery
from healthmesh.gate.egress import GuardedRepository
from healthmesh.gate.requester import Forbidden, Requester, requester_from_headers
from healthmesh.node import Node
from healthmesh.store.base import SearchPage, StoredResource
from healthmesh.store.sqlite import instant

__all__ = ["FHIR_JSON", "authenticated", "base_url", "fhir_response", "json_response", "public",
           "requester_of", "router"]

FHIR_JSON = "application/fhir+json"
router = APIRouter(prefix="/fhir", tags=["FHIR R4"], default_response_class=FhirJSON,
                   responses=responses((201, "Created", "application/fhir+json"),
                                       (204, "No content", None)))
public = APIRouter(prefix="/fhir", tags=["FHIR R4"], default_response_class=FhirJSON)


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def requester_of(request: Request) -> Requester:
    """Who is calling and why: from the verified access token (or, on a node started
    with ``--insecure-dev`` only, from unauthenticated headers). Kept on the request,
    so the token is verified once however often a route asks."""
    found: Requester | None = getattr(request.state, "requester", None)
    if found is None:
        node = _node(request)
        try:
            found = requester_from_headers(request.headers, node.auth.tokens,
                                           insecure_dev=request.app.state.insecure_dev)
        except (Unauthorized, Forbidden) as exc:
            _audit_refusal(node, request, exc)
            raise
        if found.agent is not None:
            request.app.state.limits.client(found.agent)
        request.state.requester = found
    return found


def _audit_refusal(node: Node, request: Request, exc: FhirError) -> None:
    """A refused credential is audited like a refused consent: the address that called,
    the route and why (the token itself is never logged). Per-address rate limits bound
    how fast anyone can fill the log this way."""
    client = request.client.host if request.client else "unknown"
    node.audit.append(AuditRecord(
        actor=f"ip:{client}", action="authenticate", decision="deny", rule="token",
        reason=str(exc)[:500], outcome=exc.status,
        detail={"method": request.method, "path": request.url.path[:300]}))


def authenticated(request: Request) -> None:
    """Router dependency: the caller is authenticated before the route reads its body or
    checks its parameters, so an anonymous caller learns nothing but 401 (or 429)."""
    requester_of(request)


def _repo(request: Request) -> GuardedRepository:
    """The consent-guarded, audited repository for this request's caller."""
    return _node(request).gate.for_request(requester_of(request))


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def fhir_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, media_type=FHIR_JSON, headers=headers)


def json_response(data: Any, status: int = 200) -> Response:
    """Plain JSON (non-FHIR payloads: manifests, receipts, policy pages)."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _resource_headers(stored: StoredResource) -> dict[str, str]:
    return {
        "ETag": f'W/"{stored.version}"',
        "Last-Modified": _http_date(stored.updated),
    }


def _http_date(us: int) -> str:
    from email.utils import formatdate

    return formatdate(us / 1_000_000, usegmt=True)


def _prefer(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            out[key.strip().lower()] = value.strip().strip('"')
    return out


def _write_response(request: Request, stored: StoredResource, status: int) -> Response:
    headers = _resource_headers(stored)
    headers["Location"] = f"{base_url(request)}/{stored.type}/{stored.id}/_history/{stored.version}"
    prefer = _prefer(request).get("return", "representation")
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        outcome = operation_outcome([Issue("information", "informational", "Stored")])
        return fhir_response(outcome, status, headers)
    assert stored.content is not None
    return fhir_response(stored.content, status, headers)


# -- whole system --------------------------------------------------------------------


@public.get("/metadata", summary="CapabilityStatement")
def metadata(request: Request) -> Response:
    return fhir_response(capability_statement(_node(request), base_url(request)))


@router.post("", summary="Bundle transaction or batch")
@router.post("/", include_in_schema=False)
async def system_bundle(request: Request) -> Response:
    body = await read_json_body(request, _node(request).settings)
    repo = _repo(request)
    result = process_bundle(repo.fhir, body, base_url(request), read=repo.read,
                            audit=repo.audit_bundle, authorize=repo.authorize_write)
    return fhir_response(result)


@router.get("/_history", summary="History of all resources")
def system_history(request: Request) -> Response:
    return _history(request, None, None)


# -- type level ----------------------------------------------------------------------


@router.get("/{rtype}", summary="Search")
def search_type(request: Request, rtype: str) -> Response:
    return _search(request, rtype, list(request.query_params.multi_items()))


@router.post("/{rtype}/_search", summary="Search (form post)")
async def search_post(request: Request, rtype: str) -> Response:
    form = await request.form()
    params = list(request.query_params.multi_items())
    params += [(k, str(v)) for k, v in form.multi_items()]
    return _search(request, rtype, params)


@router.post("/{rtype}", summary="Create")
async def create(request: Request, rtype: str) -> Response:
    body = await read_json_body(request, _node(request).settings)
    result = _repo(request).create(rtype, body, request.headers.get("if-none-exist"))
    status = 201 if result.outcome == "created" else 200
    return _write_response(request, result.stored, status)


@router.get("/{rtype}/_history", summary="Type history")
def type_history(request: Request, rtype: str) -> Response:
    return _history(request, rtype, None)


# -- instance level --------------------------------------------------------------------


@router.get("/{rtype}/{rid}", summary="Read")
def read(request: Request, rtype: str, rid: str) -> Response:
    stored = _repo(request).read(rtype, rid)
    body = _shape_single(request, stored)
    return fhir_response(body, 200, _resource_headers(stored))


@router.put("/{rtype}/{rid}", summary="Update (or create with this id)")
async def update(request: Request, rtype: str, rid: str) -> Response:
    body = await read_json_body(request, _node(request).settings)
    result = _repo(request).update(rtype, rid, body, request.headers.get("if-match"))
    status = 201 if result.outcome == "created" else 200
    return _write_response(request, result.stored, status)


@router.delete("/{rtype}/{rid}", summary="Delete")
def delete(request: Request, rtype: str, rid: str) -> Response:
    _repo(request).delete(rtype, rid)
    return Response(status_code=204)


@router.get("/{rtype}/{rid}/_history", summary="Instance history")
def instance_history(request: Request, rtype: str, rid: str) -> Response:
    return _history(request, rtype, rid)


@router.get("/{rtype}/{rid}/_history/{vid}", summary="Version read")
def vread(request: Request, rtype: str, rid: str, vid: str) -> Response:
    stored = _repo(request).vread(rtype, rid, vid)
    return fhir_response(_shape_single(request, stored), 200, _resource_headers(stored))


@router.get("/Patient/{rid}/$everything", summary="Patient $everything", include_in_schema=True)
def everything(request: Request, rid: str) -> Response:
    entries = _entries(request, _repo(request).everything(rid), "match")
    bundle = _bundle_bytes("searchset", entries, len(entries), [("self", str(request.url))])
    return fhir_response(bundle)


@router.api_route(
    "/{path:path}", methods=["PATCH", "HEAD", "OPTIONS"], include_in_schema=False
)
def not_allowed(request: Request, path: str) -> Response:
    raise MethodNotAllowed(f"{request.method} /fhir/{path} is not supported")


# -- helpers ---------------------------------------------------------------------------


def _shape_single(request: Request, stored: StoredResource) -> bytes:
    params = request.query_params
    if "_elements" in params or "_summary" in params:
        query = SearchQuery(stored.type)
        query.summary = params.get("_summary")
        query.elements = [e for e in params.get("_elements", "").split(",") if e] or None
        return orjson.dumps(shape_resource(stored.resource(), query))
    assert stored.content is not None
    return stored.content


def _search(request: Request, rtype: str, params: list[tuple[str, str]]) -> Response:
    node = _node(request)
    strict = node.settings.strict_search or _prefer(request).get("handling") == "strict"
    cursor = next((v for k, v in params if k == "_cursor"), None)
    params = [(k, v) for k, v in params if k != "_cursor"]
    if not any(k == "_count" for k, _ in params):
        params.append(("_count", str(node.settings.default_page_size)))
    repo = _repo(request)
    query = repo.parse(rtype, params, strict=strict)
    page = repo.search(query, cursor)
    return fhir_response(_searchset(request, rtype, params, query, page))


def _searchset(
    request: Request,
    rtype: str,
    params: list[tuple[str, str]],
    query: SearchQuery,
    page: SearchPage,
) -> bytes:
    base = f"{base_url(request)}/{rtype}"
    links = [("self", f"{base}?{urlencode(params)}")]
    if page.next_cursor:
        links.append(("next", f"{base}?{urlencode([*params, ('_cursor', page.next_cursor)])}"))
    if page.prev_cursor:
        links.append(
            ("previous", f"{base}?{urlencode([*params, ('_cursor', page.prev_cursor)])}")
        )
    entries = _entries(request, page.matches, "match", query)
    entries += _entries(request, page.included, "include", query)
    if query.warnings:
        outcome = operation_outcome(query.warnings)
        entries.append(
            b'{"resource":' + orjson.dumps(outcome) + b',"search":{"mode":"outcome"}}'
        )
    total = page.total
    if total is None and page.next_cursor is None and page.prev_cursor is None:
        total = len(page.matches)
    return _bundle_bytes("searchset", entries, total, links)


def _entries(
    request: Request, items: list[StoredResource], mode: str, query: SearchQuery | None = None
) -> list[bytes]:
    """Bundle entries assembled from the stored JSON bytes (no re-parsing)."""
    base = orjson.dumps(base_url(request) + "/")[:-1]  # '"http://host/fhir/' (JSON-escaped)
    tail = b'},"search":{"mode":"' + mode.encode() + b'"}}'
    shaped = query is not None and (query.elements or query.summary in ("true", "text", "data"))
    out = []
    for stored in items:
        if shaped:
            assert query is not None
            content = orjson.dumps(shape_resource(stored.resource(), query))
        else:
            assert stored.content is not None
            content = stored.content
        ref = orjson.dumps(f"{stored.type}/{stored.id}")[1:]  # 'Type/id"'
        out.append(b'{"fullUrl":' + base + ref + b',"resource":' + content + tail[1:])
    return out


def _bundle_bytes(
    btype: str, entries: list[bytes], total: int | None, links: list[tuple[str, str]]
) -> bytes:
    head: dict[str, Any] = {"resourceType": "Bundle", "type": btype}
    if total is not None:
        head["total"] = total
    head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    prefix = orjson.dumps(head)[:-1]
    if not entries:
        return prefix + b"}"
    return prefix + b',"entry":[' + b",".join(entries) + b"]}"


def _history(request: Request, rtype: str | None, rid: str | None) -> Response:
    params = request.query_params
    count = _int_param(params.get("_count"), 100, "_count")
    offset = _int_param(params.get("_offset"), 0, "_offset")
    since = None
    if params.get("_since"):
        from healthmesh.fhir.search_params import date_range

        try:
            since = date_range(params["_since"])[0]
        except ValueError:
            from healthmesh.errors import InvalidRequest

            raise InvalidRequest(f"Invalid _since '{params['_since']}'") from None
    entries_list = _repo(request).history(
        rtype, rid, count=min(count, 1000) + 1, offset=offset, since=since
    )
    more = len(entries_list) > count
    entries_list = entries_list[:count]
    entries = [_history_entry(request, e.stored, e.method) for e in entries_list]
    base = base_url(request) + "".join(f"/{p}" for p in (rtype, rid) if p) + "/_history"
    links = [("self", str(request.url))]
    keep = [(k, v) for k, v in params.multi_items() if k != "_offset"]
    if more:
        links.append(("next", f"{base}?{urlencode([*keep, ('_offset', str(offset + count))])}"))
    if offset > 0:
        prev = max(offset - count, 0)
        links.append(("previous", f"{base}?{urlencode([*keep, ('_offset', str(prev))])}"))
    return fhir_response(_bundle_bytes("history", entries, None, links))


def _int_param(value: str | None, default: int, name: str) -> int:
    if value is None:
        return default
    if not value.isdigit():
        from healthmesh.errors import InvalidRequest

        raise InvalidRequest(f"{name} must be a non-negative integer, not '{value}'")
    return int(value)


def _history_entry(request: Request, stored: StoredResource, method: str) -> bytes:
    full_url = f"{base_url(request)}/{stored.type}/{stored.id}"
    url = f"{stored.type}/{stored.id}" if method != "POST" else stored.type
    status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[method]
    response = {"status": status, "etag": f'W/"{stored.version}"',
                "lastModified": instant(stored.updated)}
    parts = [b'{"fullUrl":' + orjson.dumps(full_url)]
    if stored.content is not None:
        parts.append(b'"resource":' + stored.content)
    parts.append(b'"request":' + orjson.dumps({"method": method, "url": url}))
    parts.append(b'"response":' + orjson.dumps(response) + b"}")
    return b",".join(parts)

