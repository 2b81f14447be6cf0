"""De-identify files: NDJSON and Bundle inputs to one NDJSON file per resource type.

Inputs are read with :mod:`healthmesh.ingest.readers` (NDJSON, ``.ndjson.gz``, Bundle or
single-resource JSON files, folders). Bundle entries become separate resources; their
``urn:uuid:`` references are first resolved to ``Type/id`` through the entries' fullUrls,
so they get the same pseudonyms as everywhere else. Every output resource is validated;
one that fails (or an input line that is not a resource) goes to the rejects file with
its source, line and reason — never its content, which would carry identifiers into a
folder meant to be shared.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from healthmesh.errors import InputError
from healthmesh.fhir.validation import validate
from healthmesh.ingest.readers import input_files, read_json_file, read_ndjson
from healthmesh.privacy.deid.deidentifier import Deidentifier
from healthmesh.privacy.deid.errors import DeidError

__all__ = ["REJECTS_FILE", "DeidReport", "birth_dates", "deidentify_files", "iter_resources"]

REJECTS_FILE = "deid-rejects.ndjson"
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_FILE_BYTES = 512 * 1024 * 1024
_UUID_REF = re.compile(r"urn:uuid:[0-9a-fA-F\-]{36}")


@dataclass
class DeidReport:
    """What a run did: resources written per type, rejects, and the rejects file."""

    written: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    rejects_file: Path | None = None
    files: int = 0


@dataclass(slots=True)
class _Item:
    source: str
    line: int | None
    resource: Any = None
    reason: str | None = None


def iter_resources(paths: list[Path]) -> Iterator[_Item]:
    """Every resource of the inputs (Bundles unpacked), or a reason it cannot be read."""
    for path, kind in input_files(paths):
        if kind == "ndjson":
            for line in read_ndjson(path, MAX_LINE_BYTES):
                if line.rejected is not None:
                    yield _Item(str(path), line.number, reason=line.rejected.reason)
                else:
                    yield from _unpack(str(path), line.number, line.value)
            continue
        try:
            data = read_json_file(path, MAX_FILE_BYTES)
        except InputError as exc:
            yield _Item(str(path), None, reason=str(exc).removeprefix(f"{path}: "))
            continue
        yield from _unpack(str(path), None, data)


def _unpack(source: str, line: int | None, value: Any) -> Iterator[_Item]:
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        yield _Item(source, line, reason="not a FHIR resource (no resourceType)")
        return
    if value["resourceType"] != "Bundle":
        yield _Item(source, line, value)
        return
    entry = value.get("entry")
    entries: list[Any] = entry if isinstance(entry, list) else []
    urls = _full_urls(entries)
    for number, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        where = f"entry[{number}]"
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            yield _Item(f"{source}#{where}", line, reason="Bundle entry without a resource")
            continue
        yield _Item(f"{source}#{where}", line, _resolve(resource, urls) if urls else resource)


def _full_urls(entries: list[Any]) -> dict[str, str]:
    """urn:uuid fullUrl -> Type/id of the entry's resource (its id, else the UUID)."""
    urls = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        full, res = entry.get("fullUrl"), entry["resource"]
        if isinstance(full, str) and _UUID_REF.fullmatch(full):
            rid = res.get("id") if isinstance(res.get("id"), str) else full[9:]
            urls[full] = f"{res.get('resourceType')}/{rid}"
            res.setdefault("id", rid)
    return urls


def _resolve(value: Any, urls: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (urls.get(v, v) if k == "reference" and isinstance(v, str)
                    else _resolve(v, urls)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, urls) for v in value]
    return value


def birth_dates(paths: list[Path]) -> dict[str, str]:
    """Patient id -> birth date of every Patient in the inputs (for age at event)."""
    found = {}
    for item in iter_resources(paths):
        res = item.resource
        if res and res.get("resourceType") == "Patient" and isinstance(res.get("id"), str) \
                and isinstance(res.get("birthDate"), str):
            found[res["id"]] = res["birthDate"]
    return found


def deidentify_files(paths: list[Path], out_dir: Path, deid: Deidentifier) -> DeidReport:
    """De-identify every resource of ``paths`` into ``out_dir/<Type>.ndjson``.

    ``out_dir`` must not exist or be empty (nothing is overwritten); raises InputError
    for a missing input and DeidError for an unusable output folder.
    """
    files = input_files(paths)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DeidError(f"{out_dir} is not an empty folder; refusing to overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = DeidReport(files=len(files), rejects_file=out_dir.parent / f"{out_dir.name}-"
                        f"{REJECTS_FILE}")
    handles: dict[str, IO[bytes]] = {}
    rejects: IO[bytes] | None = None
    try:
        for item in iter_resources(paths):
            reason = item.reason
            out = None
            if reason is None:
                out, reason = _one(deid, item.resource)
            if out is not None:
                rtype = out["resourceType"]
                handle = handles.get(rtype) or handles.setdefault(
                    rtype, (out_dir / f"{rtype}.ndjson").open("wb"))
                handle.write(orjson.dumps(out) + b"\n")
                report.written[rtype] = report.written.get(rtype, 0) + 1
                continue
            if rejects is None:
                rejects = report.rejects_file.open("wb")  # type: ignore[union-attr]
            rejects.write(orjson.dumps({"source": item.source, "line": item.line,
                                        "reason": reason}) + b"\n")
            report.rejected += 1
    finally:
        for handle in handles.values():
            handle.close()
        if rejects is not None:
            rejects.close()
    if not report.rejected:
        report.rejects_file = None
    return report


def _one(deid: Deidentifier, resource: dict[str, Any]) -> tuple[Any, str | None]:
    try:
        out = deid.apply(resource)
    except DeidError as exc:
        return None, str(exc)
    except RecursionError:
        return None, "resource nested too deeply"
    if out is None:
        return None, f"unknown resource type {str(resource.get('resourceType'))[:64]!r}"
    issues = [i for i in validate(out) if i.severity == "error"]
    if issues:
        where = "; ".join(f"{i.code} at {i.expression}" for i in issues[:5])
        return None, f"de-identified resource is not valid FHIR ({where})"
    return out, None
