"""What the OpenAPI schema says about responses the routes build themselves.

Routes return ready-made responses (FHIR JSON bytes, NDJSON files), so FastAPI cannot
infer their media types or error statuses; these declarations make ``/openapi.json``
describe what clients really receive (schemathesis checks it, tests/test_api_schema.py).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["ERRORS", "FhirJSON", "responses"]

_OUTCOME = {"application/fhir+json": {"schema": {"type": "object"}}}
_MEANINGS = {
    400: "Bad request (OperationOutcome)",
    401: "No valid access token (OperationOutcome; WWW-Authenticate: Bearer)",
    403: "Not allowed: scope, purpose or consent (OperationOutcome)",
    404: "Not found, or not visible to this requester (OperationOutcome)",
    405: "Method not allowed (OperationOutcome)",
    409: "Version conflict (OperationOutcome)",
    410: "Deleted (OperationOutcome)",
    412: "Precondition failed (OperationOutcome)",
    413: "Request too large (OperationOutcome)",
    415: "Unsupported media type (OperationOutcome)",
    422: "Business rule violation (OperationOutcome)",
    429: "Too many requests (OperationOutcome; Retry-After)",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": _OUTCOME} for code, text in _MEANINGS.items()}


def responses(*extra: tuple[int, str, str | None]) -> dict[int | str, dict[str, Any]]:
    """:data:`ERRORS` plus ``(status, description, media type or None)`` entries."""
    out = dict(ERRORS)
    for status, text, media in extra:
        out[status] = {"description": text}
        if media:
            out[status]["content"] = {media: {"schema": {}}}
    return out


class FhirJSON(JSONResponse):
    """Documents FHIR JSON as the success media type of FHIR routes (a JSON subclass, so
    the schema says "a JSON document", not "a string")."""

    media_type = "application/fhir+json"
