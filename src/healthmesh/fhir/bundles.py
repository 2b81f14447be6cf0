"""Bundle ``transaction`` and ``batch`` processing.

A transaction is prepared in full before anything is written: ids are
assigned to POST entries, ``urn:uuid:`` full URLs are mapped to the new
``Type/id`` references, conditional references (``Patient?identifier=...``)
and conditional creates (``ifNoneExist``) are resolved against the store,
every resource is validated, and only then is everything written in one
store transaction — so a transaction either applies completely or not at all.
A batch applies each entry on its own and reports each entry's outcome.

With ``preserve_ids`` (used by ``healthmesh ingest``) a POST keeps the id the
resource carries (or the UUID of its ``urn:uuid:`` full URL), which makes
re-loading the same files idempotent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from healthmesh.errors import FhirError, InvalidRequest, InvalidResource, Issue, PreconditionFailed
from healthmesh.fhir.service import FhirService, check_type, new_id, parse_etag
from healthmesh.store.base import StoredResource, WriteResult

__all__ = ["PreparedEntry", "prepare_bundle", "process_bundle", "rewrite_references"]

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_METHODS = ("DELETE", "POST", "PUT", "GET")
MAX_ENTRIES = 10_000


@dataclass(slots=True)
class PreparedEntry:
    index: int
    method: str
    rtype: str
    rid: str | None = None
    resource: dict[str, Any] | None = None
    if_match: str | None = None
    existing: StoredResource | None = None  # a conditional create that matched
    error: FhirError | None = None


def _entry_request(index: int, entry: Any) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"Bundle.entry[{index}] is not an object")
    request = entry.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("url"), str):
        raise InvalidRequest(f"Bundle.entry[{index}].request with a url is required")
    method = request.get("method")
    if method not in _METHODS:
        raise InvalidRequest(f"Bundle.entry[{index}].request.method '{method}' is not supported")
    return method, request["url"].lstrip("/"), request


def _prepare_entry(
    service: FhirService, index: int, entry: dict[str, Any], preserve_ids: bool
) -> tuple[PreparedEntry, str | None]:
    """Parse one entry; returns it and the reference its fullUrl maps to."""
    method, url, request = _entry_request(index, entry)
    path, _, qs = url.partition("?")
    parts = path.split("/")
    rtype = parts[0]
    check_type(rtype)
    prepared = PreparedEntry(index, method, rtype)
    resource = entry.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict) or resource.get("resourceType") != rtype:
            raise InvalidResource(f"Bundle.entry[{index}].resource must be a {rtype}")
        prepared.resource = dict(resource)
    if method == "GET":
        prepared.rid = parts[1] if len(parts) > 1 else None
        return prepared, None
    if method == "DELETE":
        prepared.rid = parts[1] if len(parts) > 1 else _conditional_id(service, rtype, qs)
        return prepared, None
    if method == "POST":
        if request.get("ifNoneExist"):
            prepared.existing = service.find_conditional(rtype, request["ifNoneExist"])
        if prepared.existing is not None:
            prepared.rid = prepared.existing.id
        else:
            assert isinstance(resource, dict)
            prepared.rid = _post_id(entry, resource, preserve_ids)
    else:  # PUT
        prepared.if_match = request.get("ifMatch")
        if len(parts) > 1:
            prepared.rid = parts[1]
        else:
            prepared.rid = _conditional_id(service, rtype, qs) or new_id()
    assert prepared.resource is not None or prepared.existing is not None
    if prepared.resource is not None:
        prepared.resource["id"] = prepared.rid
    return prepared, f"{rtype}/{prepared.rid}"


def _conditional_id(service: FhirService, rtype: str, qs: str) -> str | None:
    if not qs:
        return None
    found = service.find_conditional(rtype, qs)
    return found.id if found else None


def _post_id(entry: dict[str, Any], resource: dict[str, Any], preserve_ids: bool) -> str:
    if not preserve_ids:
        return new_id()
    rid = resource.get("id")
    if isinstance(rid, str) and _ID_RE.match(rid):
        return rid
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
        candidate = full_url[9:]
        if _ID_RE.match(candidate):
            return candidate
    return new_id()


def rewrite_references(
    node: Any, mapping: dict[str, str], resolve: Any, depth: int = 0
) -> None:
    """Rewrite ``reference`` strings in place: full URLs via ``mapping``,
    conditional references through ``resolve(ref) -> 'Type/id'``."""
    if depth > 128:
        raise InvalidResource("Resource is nested too deeply")
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            if ref in mapping:
                node["reference"] = mapping[ref]
            elif "?" in ref and not ref.startswith(("http:", "https:", "#")):
                node["reference"] = resolve(ref)
        for value in node.values():
            if isinstance(value, (dict, list)):
                rewrite_references(value, mapping, resolve, depth + 1)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                rewrite_references(item, mapping, resolve, depth + 1)


def _resolver(service: FhirService) -> Any:
    cache: dict[str, str] = {}

    def resolve(ref: str) -> str:
        if ref not in cache:
            rtype, _, criteria = ref.partition("?")
            check_type(rtype)
            found = service.find_conditional(rtype, criteria)
            if found is None:
                raise PreconditionFailed(f"Conditional reference '{ref}' matches no resource")
            cache[ref] = f"{found.type}/{found.id}"
        return cache[ref]

    return resolve


def prepare_bundle(
    service: FhirService, bundle: Any, *, preserve_ids: bool = False
) -> tuple[str, list[PreparedEntry]]:
    """Parse, resolve and validate a transaction/batch bundle; nothing is written.

    For a transaction, any problem raises (naming the entry). For a batch,
    problems are recorded on the entry (``entry.error``).
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidResource("Expected a Bundle")
    btype = bundle.get("type")
    if btype not in ("transaction", "batch"):
        raise InvalidRequest(f"Bundle.type must be transaction or batch, not '{btype}'")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidResource("Bundle.entry must be an array")
    if len(entries) > MAX_ENTRIES:
        raise InvalidRequest(f"A bundle may hold at most {MAX_ENTRIES} entries")
    prepared: list[PreparedEntry] = []
    mapping: dict[str, str] = {}
    for i, entry in enumerate(entries):
        try:
            item, ref = _prepare_entry(service, i, entry, preserve_ids)
        except FhirError as exc:
            if btype == "transaction":
                raise _at_entry(exc, i) from None
            item, ref = PreparedEntry(i, "?", "?", error=exc), None
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if ref and isinstance(full_url, str):
            mapping[full_url] = ref
        prepared.append(item)
    resolve = _resolver(service)
    for item in prepared:
        if item.resource is None or item.error is not None or item.existing is not None:
            continue
        try:
            rewrite_references(item.resource, mapping, resolve)
            service.validate(item.resource)
        except FhirError as exc:
            if btype == "transaction":
                raise _at_entry(exc, item.index) from None
            item.error = exc
    return btype, prepared


def _at_entry(exc: FhirError, index: int) -> FhirError:
    exc.message = f"Bundle.entry[{index}]: {exc.message}"
    exc.issues = [
        Issue(i.severity, i.code, i.message, _entry_path(index, i.expression))
        for i in exc.issues
    ]
    return exc


def _entry_path(index: int, expression: str | None) -> str:
    if not expression:
        return f"Bundle.entry[{index}]"
    return f"Bundle.entry[{index}].resource.{expression.split('.', 1)[-1]}"


def process_bundle(
    service: FhirService, bundle: Any, base_url: str = "", *,
    read: Any = None, audit: Any = None, authorize: Any = None,
) -> dict[str, Any]:
    """Run a transaction or batch; returns the response Bundle.

    ``read(type, id)`` serves GET entries (the egress gate's read, so a bundle cannot
    bypass consent); ``authorize(method, type, id, resource)`` may refuse a write entry
    (the gate's scope check) by raising; ``audit(btype, written)`` records what the
    bundle wrote.
    """
    btype, prepared = prepare_bundle(service, bundle)
    responses: list[dict[str, Any]] = [{} for _ in prepared]
    order = sorted(prepared, key=lambda p: _METHODS.index(p.method) if p.method in _METHODS else 9)
    reader = read or service.read
    if btype == "transaction":
        with service.store.transaction():
            for item in order:
                responses[item.index] = _apply(service, item, base_url, reader, authorize)
    else:
        for item in order:
            responses[item.index] = _apply_batch_entry(service, item, base_url, reader,
                                                       authorize)
    if audit is not None:
        audit(btype, [r["response"].get("location", "") for r in responses if "response" in r])
    return {
        "resourceType": "Bundle",
        "type": f"{btype}-response",
        "entry": responses,
    }


def _apply_batch_entry(
    service: FhirService, item: PreparedEntry, base_url: str, reader: Any, authorize: Any
) -> dict[str, Any]:
    if item.error is not None:
        return _error_entry(item.error)
    try:
        with service.store.transaction():
            return _apply(service, item, base_url, reader, authorize)
    except FhirError as exc:
        return _error_entry(exc)


def _error_entry(exc: FhirError) -> dict[str, Any]:
    return {"response": {"status": f"{exc.status} {_REASON.get(exc.status, '')}".strip(),
                         "outcome": exc.outcome()}}


_REASON = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
           409: "Conflict", 410: "Gone", 412: "Precondition Failed", 422: "Unprocessable Entity"}


def _apply(
    service: FhirService, item: PreparedEntry, base_url: str, reader: Any,
    authorize: Any = None,
) -> dict[str, Any]:
    if item.method == "GET":
        return _apply_get(reader, item)
    if authorize is not None:
        authorize(item.method, item.rtype, item.rid, item.resource)
    if item.method == "DELETE":
        if item.rid is not None:
            service.store.delete(item.rtype, item.rid)
        return {"response": {"status": "204 No Content"}}
    if item.existing is not None:  # naming the match is a read: the caller must see it
        return _response(reader(item.existing.type, item.existing.id), "200 OK", base_url)
    assert item.resource is not None
    result: WriteResult = service.store.put(
        item.resource,
        method=item.method,
        if_match=parse_etag(item.if_match) if item.if_match else None,
    )
    status = "201 Created" if result.outcome == "created" else "200 OK"
    return _response(result.stored, status, base_url)


def _apply_get(reader: Any, item: PreparedEntry) -> dict[str, Any]:
    if item.rid is None:
        raise InvalidRequest("Search inside a bundle is not supported; read by id")
    stored = reader(item.rtype, item.rid)
    return {"resource": stored.resource(), "response": {"status": "200 OK",
            "etag": f'W/"{stored.version}"'}}


def _response(stored: StoredResource, status: str, base_url: str) -> dict[str, Any]:
    from healthmesh.store.sqlite import instant

    location = f"{stored.type}/{stored.id}/_history/{stored.version}"
    entry: dict[str, Any] = {}
    if base_url:
        entry["fullUrl"] = f"{base_url}/{stored.type}/{stored.id}"
    entry["response"] = {
        "status": status,
        "location": location,
        "etag": f'W/"{stored.version}"',
        "lastModified": instant(stored.updated),
    }
    return entry
