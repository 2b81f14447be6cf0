"""Reading request bodies safely: media type, size limit, JSON parsing and depth."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from healthmesh.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from healthmesh.settings import Settings

__all__ = ["json_depth_exceeds", "read_json_body"]

_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


async def read_json_body(request: Request, settings: Settings) -> Any:
    """The parsed JSON body; 415 for other media types, 413 past the size limit."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{media}' is not supported; send application/fhir+json"
        )
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("The request body is empty; a FHIR resource is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if json_depth_exceeds(body, settings.max_json_depth):
        raise InvalidRequest(
            f"The request body is nested deeper than {settings.max_json_depth} levels"
        )
    return body


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False
