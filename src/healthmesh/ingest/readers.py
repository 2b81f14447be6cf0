"""Reading ingest input: NDJSON files, FHIR JSON files (Bundles or single resources), folders.

Readers never hold a whole NDJSON file in memory and never let one bad line
stop the file: each problem becomes a :class:`Rejected` record naming the
file and line. Lines longer than ``max_line_bytes`` are skipped without
being read into memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from healthmesh.errors import InputError

__all__ = [
    "Line",
    "Rejected",
    "input_files",
    "parse_line",
    "read_json_file",
    "read_ndjson",
    "read_ndjson_raw",
]

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl")
JSON_SUFFIXES = (".json", ".json.gz")
HL7_SUFFIXES = (".hl7",)  # HL7 v2 messages and batches (see healthmesh.hl7v2.files)
RAW_KEEP = 16 * 1024  # bytes of a rejected raw line kept in the rejects file


@dataclass(slots=True)
class Rejected:
    """One rejected input item and why."""

    source: str
    line: int | None
    reason: str
    resource: Any = None
    raw: bytes | None = None
    issues: list[dict[str, Any]] | None = None

    def to_json(self) -> bytes:
        out: dict[str, Any] = {"source": self.source, "line": self.line, "reason": self.reason}
        if self.issues:
            out["issues"] = self.issues
        if self.resource is not None:
            out["resource"] = self.resource
        elif self.raw is not None:
            out["raw"] = self.raw[:RAW_KEEP].decode("utf-8", "replace")
            if len(self.raw) > RAW_KEEP:
                out["raw_truncated"] = True
        return orjson.dumps(out)

    def one_line(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.reason}"


@dataclass(slots=True)
class Line:
    """One parsed NDJSON line (``value``) or a rejection."""

    number: int
    value: Any = None
    rejected: Rejected | None = None
    size: int = 0


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(NDJSON_SUFFIXES):
        return "ndjson"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(HL7_SUFFIXES):
        return "hl7"
    return None


def input_files(paths: list[Path]) -> list[tuple[Path, str]]:
    """Expand files and folders into (file, kind) pairs, sorted within folders.

    Raises InputError for a missing path or a named file of an unknown kind.
    Within folders, Synthea's hospital and practitioner files come first
    because patient bundles refer to them by conditional references.
    """
    out: list[tuple[Path, str]] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_dir():
            found = [(p, _kind(p)) for p in sorted(path.rglob("*")) if p.is_file()]
            files = [(p, k) for p, k in found if k is not None]
            files.sort(key=lambda pk: (_load_order(pk[0]), str(pk[0])))
            out.extend(files)  # type: ignore[arg-type]
            continue
        kind = _kind(path)
        if kind is None:
            raise InputError(
                f"{path}: unknown file type (expected .ndjson, .ndjson.gz, .jsonl, .json "
                "or .hl7)"
            )
        out.append((path, kind))
    return out


def _load_order(path: Path) -> int:
    name = path.name
    if "hospitalInformation" in name:
        return 0
    if "practitionerInformation" in name:
        return 1
    return 2


def _open(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_ndjson(path: Path, max_line_bytes: int) -> Iterator[Line]:
    """Parse an NDJSON file line by line; blank lines are skipped."""
    for number, raw, size in read_ndjson_raw(path, max_line_bytes):
        if isinstance(raw, Rejected):
            yield Line(number, rejected=raw, size=size)
            continue
        value, rejected = parse_line(str(path), number, raw)
        if rejected is not None or value is not None:
            yield Line(number, value=value, rejected=rejected, size=size)


def read_ndjson_raw(path: Path, max_line_bytes: int) -> Iterator[tuple[int, Any, int]]:
    """(line number, raw bytes or a Rejected for an over-long line, bytes consumed)."""
    number = 0
    try:
        with _open(path) as handle:
            while True:
                raw = handle.readline(max_line_bytes + 1)
                if not raw:
                    return
                number += 1
                if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                    size = len(raw) + _skip_rest_of_line(handle)
                    reason = f"line is {size} bytes, longer than the limit of {max_line_bytes}"
                    yield number, Rejected(str(path), number, reason, raw=raw[:256]), size
                    continue
                yield number, raw, len(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}:{number + 1}: cannot read: {exc}") from None


def _skip_rest_of_line(handle: IO[bytes]) -> int:
    skipped = 0
    while True:
        chunk = handle.readline(1 << 20)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def parse_line(source: str, number: int, raw: bytes) -> tuple[Any, Rejected | None]:
    """(parsed value or None for a blank line, or a rejection)."""
    text = raw.strip()
    if number == 1 and text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    if not text:
        return None, None
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as exc:
        return None, Rejected(source, number, f"not valid JSON: {_json_reason(exc)}", raw=text)


def _json_reason(exc: orjson.JSONDecodeError) -> str:
    message = str(exc)
    if "utf-8" in message.lower() or "surrogate" in message.lower():
        return "the text is not valid UTF-8"
    return message


def read_json_file(path: Path, max_bytes: int) -> Any:
    """Parse a whole JSON file (a Bundle or one resource); raises InputError."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{path}: file is {size} bytes, larger than the limit of {max_bytes}")
        with _open(path) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if len(data) > max_bytes:
        raise InputError(f"{path}: file is larger than the limit of {max_bytes} bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        line = data[: exc.pos].count(b"\n") + 1 if exc.pos is not None else None
        where = f"{path}:{line}" if line else str(path)
        raise InputError(f"{where}: not valid JSON: {_json_reason(exc)}") from None
