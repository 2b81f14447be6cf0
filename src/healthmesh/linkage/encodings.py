"""A node's side: Patients → encodings file, and the file format the linkage unit reads.

An encodings file is one JSON object::

    {"format": "healthmesh-clk/1", "site": "hospital", "schema": "<sha256 of the schema>",
     "l": 1024, "blocking": "keyed-v1", "count": 2,
     "records": [{"id": "<local id>", "clk": "<base64, clkhash bit order>",
                  "blocks": [<keyed blocking keys>]}, ...]}

It carries no name, date or identifier in clear: local record ids (which mean nothing
outside the node), CLKs and keyed blocking keys. A record that cannot be encoded, or read
back, is not dropped silently: it is returned as a :class:`Reject` with the reason.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from healthmesh.linkage.blocking import blocking_key, record_block_keys
from healthmesh.linkage.clk import ClkEncoder
from healthmesh.linkage.errors import EncodingFileError
from healthmesh.linkage.features import patient_features
from healthmesh.linkage.link import SiteEncodings
from healthmesh.linkage.schema import LinkageSchema

__all__ = ["FORMAT", "Reject", "encode_patients", "read_encodings", "read_patient_ndjson",
           "write_encodings"]

FORMAT = "healthmesh-clk/1"
MAX_FILE_BYTES = 2 << 30
MAX_LINE_BYTES = 1 << 20
MAX_ID_LENGTH = 64
MAX_BLOCKS = 32
_PACK = 8192  # records packed at once (bounds the unpacked bit matrix to 8 MiB)
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9.\-]{1,64}$")  # the FHIR id grammar


@dataclass(frozen=True, slots=True)
class Reject:
    """An input record that was not used, where it was, and why."""

    where: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


def check_site(site: str) -> str:
    """``site`` if it is a usable site name (letters, digits, ``.-_``; ≤ 64 characters)."""
    if not isinstance(site, str) or not _SITE.match(site):
        raise EncodingFileError(f"invalid site name {site!r}: use letters, digits, '.', '-', '_'")
    return site


def read_patient_ndjson(path: Path, rejects: list[Reject]) -> Iterator[dict[str, Any]]:
    """The Patient resources of an NDJSON file; unreadable lines go to ``rejects``."""
    try:
        handle = open(path, "rb")  # noqa: SIM115  (closed below; a generator owns it)
    except OSError as exc:
        raise EncodingFileError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for number, line in enumerate(handle, 1):
            where = f"{path}:{number}"
            if len(line) > MAX_LINE_BYTES:
                rejects.append(Reject(where, f"line longer than {MAX_LINE_BYTES} bytes"))
                continue
            if not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                rejects.append(Reject(where, f"not JSON: {exc}"))
                continue
            if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
                yield resource
            else:
                rejects.append(Reject(where, "not a Patient resource"))


def encode_patients(patients: Iterable[dict[str, Any]], schema: LinkageSchema, secret: bytes,
                    rejects: list[Reject], blocking_keys: bool = True) -> SiteEncodings:
    """CLKs and keyed blocking keys of Patients (site name filled in by the caller).

    With ``blocking_keys=False`` no blocking keys are made: the linkage unit then has to
    block on the CLKs themselves (``lsh``) or compare every pair.
    """
    encoder = ClkEncoder(schema, secret)
    block_key = blocking_key(secret)
    ids: list[str] = []
    rows: list[list[int]] = []
    blocks: list[list[int]] = []
    seen: set[str] = set()
    for patient in patients:
        pid = patient.get("id") if isinstance(patient, dict) else None
        where = f"Patient/{pid}"
        if not isinstance(pid, str) or not _ID.match(pid):
            rejects.append(Reject(where, "Patient without a valid id"))
            continue
        if pid in seen:
            rejects.append(Reject(where, "duplicate Patient id"))
            continue
        try:
            features = patient_features(patient)
            rows.append(encoder.row([features.get(n, "") for n in schema.identifiers]))
        except ValueError as exc:
            rejects.append(Reject(where, str(exc)))
            continue
        seen.add(pid)
        ids.append(pid)
        blocks.append(record_block_keys(features, block_key) if blocking_keys else [])
    clks = np.concatenate([encoder.pack(rows[i:i + _PACK]) for i in range(0, len(rows), _PACK)]) \
        if rows else np.empty((0, schema.l // 8), np.uint8)
    return SiteEncodings("", ids, clks, blocks)


def write_encodings(path: Path, encodings: SiteEncodings, schema: LinkageSchema) -> None:
    """Write ``encodings`` as an encodings file (created with mode 0600)."""
    document = {
        "format": FORMAT, "site": check_site(encodings.site), "schema": schema.fingerprint,
        "l": schema.l, "blocking": "keyed-v1", "count": len(encodings.ids),
        "records": [{"id": rid, "clk": base64.b64encode(clk.tobytes()).decode("ascii"),
                     "blocks": keys}
                    for rid, clk, keys in zip(encodings.ids, encodings.clks, encodings.blocks,
                                              strict=True)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(orjson.dumps(document))
    temp.chmod(0o600)
    temp.replace(path)


def read_encodings(path: Path, rejects: list[Reject], schema: str | None = None,
                   max_bytes: int = MAX_FILE_BYTES) -> tuple[SiteEncodings, str]:
    """Read an encodings file; returns the site's encodings and the schema fingerprint.

    Raises :class:`EncodingFileError` when the file as a whole is unusable (missing,
    oversized, not JSON, wrong format, or a ``schema`` fingerprint other than the one
    expected); bad records go to ``rejects``.
    """
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise EncodingFileError(f"{path}: {size} bytes is over the limit of {max_bytes}")
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise EncodingFileError(f"cannot read {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise EncodingFileError(f"{path} is not JSON: {exc}") from exc
    head = _header(path, document, schema)
    nbytes = head["l"] // 8
    ids, rows, blocks = [], [], []
    seen: set[str] = set()
    for index, record in enumerate(document["records"]):
        try:
            rid, clk, keys = _record(record, nbytes)
        except ValueError as exc:
            rejects.append(Reject(f"{path}: records[{index}]", str(exc)))
            continue
        if rid in seen:
            rejects.append(Reject(f"{path}: records[{index}]", f"duplicate id {rid!r}"))
            continue
        seen.add(rid)
        ids.append(rid)
        rows.append(clk)
        blocks.append(keys)
    clks = (np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), nbytes)
            if rows else np.empty((0, nbytes), np.uint8))
    return SiteEncodings(head["site"], ids, clks, blocks), head["schema"]


def _header(path: Path, document: Any, schema: str | None) -> dict[str, Any]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise EncodingFileError(f"{path} is not a {FORMAT} encodings file")
    site = check_site(document.get("site"))
    length = document.get("l")
    if isinstance(length, bool) or not isinstance(length, int) or not 64 <= length <= 1 << 16 \
            or length % 64:
        raise EncodingFileError(f"{path}: 'l' must be a multiple of 64 between 64 and 65536")
    found = document.get("schema")
    if not isinstance(found, str) or (schema is not None and found != schema):
        raise EncodingFileError(f"{path} was encoded with schema {str(found)[:12]}…, "
                                f"not {str(schema)[:12]}…: re-encode with the agreed schema")
    if not isinstance(document.get("records"), list):
        raise EncodingFileError(f"{path}: 'records' must be a list")
    return {"site": site, "l": length, "schema": found}


def _record(record: Any, nbytes: int) -> tuple[str, bytes, list[int]]:
    if not isinstance(record, dict):
        raise ValueError("record is not an object")
    rid = record.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        raise ValueError("id must be 1-64 characters of A-Z a-z 0-9 . -")
    try:
        clk = base64.b64decode(record.get("clk", ""), validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise ValueError(f"clk is not base64: {exc}") from exc
    if len(clk) != nbytes:
        raise ValueError(f"clk has {len(clk)} bytes, expected {nbytes}")
    keys = record.get("blocks", [])
    if not isinstance(keys, list) or len(keys) > MAX_BLOCKS or not all(
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 1 << 63 for k in keys):
        raise ValueError(f"blocks must be at most {MAX_BLOCKS} integers in [0, 2**63)")
    return rid, clk, keys
