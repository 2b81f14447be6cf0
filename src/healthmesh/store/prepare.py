"""Turn a validated resource into what the store writes: JSON bytes, digest, patient, index rows.

This is the CPU-heavy part of a write and touches no database, so ``healthmesh
ingest`` runs it in worker processes while the main process writes. The JSON
carries a placeholder ``meta`` (``versionId`` 1 and a marker ``lastUpdated``)
which the store replaces with the real version and time when it writes; the
marker can only occur as the value of a real ``lastUpdated`` key that this
module wrote, because quotes inside JSON string values are always escaped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from healthmesh.fhir.search_params import (
    IndexRows,
    extract_index,
    patient_compartment,
    search_params,
)
from healthmesh.fhir.validation import resource_types
from healthmesh.terminology.checks import annotate

__all__ = ["STAMP_MARKER", "PreparedResource", "StoreRows", "param_ids", "prepare", "stamp_content",
           "store_rows"]

_PLACEHOLDER = "@@healthmesh-stamp@@"
STAMP_MARKER = b'"versionId":"1","lastUpdated":"' + _PLACEHOLDER.encode() + b'"'
_SERVER_META = ("versionId", "lastUpdated")


StoreRows = tuple[list[tuple[Any, ...]], ...]


@dataclass(slots=True)
class PreparedResource:
    type: str
    id: str
    digest: bytes  # content digest, independent of key order and server meta
    patient: str | None
    rows: StoreRows  # index rows per table, in INDEX_TABLES order (see store_rows)
    content: bytes  # JSON with the placeholder meta


@cache
def param_ids() -> dict[tuple[str, str], int]:
    """A fixed integer id per (resource type, search parameter code).

    Derived from the packaged R4 search parameters (sorted), so worker
    processes compute index rows with their final parameter ids without asking
    the store; reference parameters also get ``code:identifier``. The store
    records this table when it is created and checks it when it is opened.
    """
    keys: list[tuple[str, str]] = []
    for rtype in sorted(resource_types()):
        for code, param in sorted(search_params(rtype).items()):
            keys.append((rtype, code))
            if param.type == "reference":
                keys.append((rtype, code + ":identifier"))
    return {key: n for n, key in enumerate(keys, start=1)}


def _blank(v: Any) -> Any:
    return "" if v is None else v


def store_rows(rtype: str, rows: IndexRows) -> StoreRows:
    """Index rows as the store keeps them: one list per table, None as ''.

    A reference written as plain ``Type/id`` keeps '' as its raw text (type and
    id say it all), which makes the widest index table much smaller.
    """
    ids = param_ids()

    def pid(code: str) -> int:
        return ids[(rtype, code)]

    refs = [
        (p, t, i, "" if (t is not None and raw == f"{t}/{i}") else raw)
        for p, t, i, raw in rows.references
    ]
    return (
        [(pid(p), _blank(s), c) for p, s, c in rows.tokens],
        [(pid(p), t) for p, t in rows.token_texts],
        [(pid(p), n, e) for p, n, e in rows.strings],
        [(pid(p), lo, hi) for p, lo, hi in rows.dates],
        [(pid(p), _blank(t), _blank(i), r) for p, t, i, r in refs],
        [(pid(p), v, _blank(s), _blank(c), _blank(u)) for p, v, s, c, u in rows.quantities],
        [(pid(p), v) for p, v in rows.numbers],
        [(pid(p), v) for p, v in rows.uris],
    )


def _without_server_meta(resource: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    meta = resource.get("meta")
    rest = {k: v for k, v in meta.items() if k not in _SERVER_META} if isinstance(meta, dict) \
        else {}
    body = {k: v for k, v in resource.items() if k != "meta"}
    if rest:
        body["meta"] = rest
    return body, rest


def prepare(resource: dict[str, Any]) -> PreparedResource:
    """Prepare one validated resource (which carries ``resourceType`` and ``id``).

    Codes unknown to the node's code lists are recorded as warnings in ``meta`` first
    (:func:`healthmesh.terminology.checks.annotate`), so every write path records them.
    """
    resource, _ = annotate(resource)
    body, meta = _without_server_meta(resource)
    digest = hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
                             digest_size=16).digest()
    stamped = dict(resource)
    stamped["meta"] = {**meta, "versionId": "1", "lastUpdated": _PLACEHOLDER}
    rows = extract_index(resource)
    return PreparedResource(
        resource["resourceType"], resource["id"], digest, patient_compartment(resource, rows),
        store_rows(resource["resourceType"], rows), orjson.dumps(stamped),
    )


def stamp_content(content: bytes, version: int, last_updated: str) -> bytes:
    """Put the real version and time into prepared JSON."""
    real = f'"versionId":"{version}","lastUpdated":"{last_updated}"'.encode()
    return content.replace(STAMP_MARKER, real, 1)
