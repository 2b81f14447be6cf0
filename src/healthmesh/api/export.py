"""FHIR Bulk Data routes: ``$export`` kick-off, status polling, file download, cancel.

Follows the Bulk Data Access IG (async request pattern): the kick-off answers
202 with ``Content-Location``; polling answers 202 with ``X-Progress`` while the
job runs and 200 with the manifest when it is done; files are NDJSON.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from healthmesh.api.fhir import base_url, fhir_response, json_response, requester_of
from healthmesh.api.openapi import responses
from healthmesh.errors import InvalidRequest, Issue, operation_outcome
from healthmesh.node import Node

__all__ = ["router"]

router = APIRouter(prefix="/fhir", tags=["Bulk Data"], responses=responses(
    (202, "Accepted: the export runs (Content-Location names its status URL)", None),
    (500, "The export failed (OperationOutcome)", "application/fhir+json")))


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _kick_off(request: Request, level: str, group: str | None = None) -> Response:
    params = request.query_params
    fmt = params.get("_outputFormat", "application/fhir+ndjson")
    if fmt not in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        raise InvalidRequest(f"_outputFormat '{fmt}' is not supported; use application/fhir+ndjson")
    if "respond-async" not in request.headers.get("prefer", ""):
        raise InvalidRequest("Bulk export requires the header 'Prefer: respond-async'")
    types = [t for t in params.get("_type", "").split(",") if t] or None
    job = _node(request).exports.start(
        requester_of(request), level=level, types=types, since=params.get("_since"),
        group=group, request_url=str(request.url), deidentify=params.get("_deidentify"),
    )
    location = f"{base_url(request)}/$export-status/{job.id}"
    return Response(status_code=202, headers={"Content-Location": location})


@router.get("/$export", summary="System-level bulk export (async)")
def export_system(request: Request) -> Response:
    return _kick_off(request, "system")


@router.get("/Patient/$export", summary="Patient-level bulk export (async)")
def export_patients(request: Request) -> Response:
    return _kick_off(request, "patient")


@router.get("/Group/{group_id}/$export", summary="Group-level bulk export (async)")
def export_group(request: Request, group_id: str) -> Response:
    return _kick_off(request, "group", group_id)


@router.get("/$export-status/{job_id}", summary="Bulk export status")
def export_status(request: Request, job_id: str) -> Response:
    exports = _node(request).exports
    job = exports.status(job_id, requester_of(request))
    if job.status == "running":
        return Response(status_code=202, headers={"X-Progress": job.progress or "started",
                                                  "Retry-After": "1"})
    if job.status == "done":
        return json_response(exports.manifest(job, base_url(request)))
    message = job.error or f"export {job.status}"
    return fhir_response(operation_outcome([Issue("error", "exception", message)]), 500)


@router.delete("/$export-status/{job_id}", summary="Cancel or delete a bulk export")
def export_cancel(request: Request, job_id: str) -> Response:
    _node(request).exports.cancel(job_id, requester_of(request))
    return Response(status_code=202)


@router.get("/$export-file/{job_id}/{name}", summary="Download one NDJSON file of an export")
def export_file(request: Request, job_id: str, name: str) -> Response:
    path = _node(request).exports.file(job_id, name, requester_of(request))
    return FileResponse(path, media_type="application/fhir+ndjson")
