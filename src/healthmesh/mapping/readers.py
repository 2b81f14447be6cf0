"""Read flat files row by row: CSV (streamed with the csv module) and Parquet (via DuckDB).

Each reader yields :class:`SourceRow` items: the 1-based data row number, the line where
the row starts (CSV), the values by column name as text (None for an empty cell), or the
reason the row cannot be read (wrong number of fields, a field over the size limit, bytes
that are not text in the file's encoding). A file that cannot be read at all (missing, no
header, corrupt Parquet) raises :class:`~healthmesh.errors.InputError`.

Parquet is read with DuckDB, already a healthmesh dependency, in batches of rows, so a
large file is never loaded whole; values are turned into text (dates as ISO 8601) so CSV
and Parquet rows go through the same column typing.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from healthmesh.errors import InputError

__all__ = ["SourceRow", "detect_format", "read_csv", "read_parquet", "read_rows"]

PARQUET_BATCH = 2048
MAX_COLUMNS = 4096


@dataclass(slots=True)
class SourceRow:
    """One data row: ``values`` by column name, or ``error`` when it cannot be read."""

    number: int
    line: int | None
    values: dict[str, str | None]
    error: str | None = None


def detect_format(path: Path, declared: str | None) -> str:
    """``csv`` or ``parquet``: as declared by the mapping, else from the file name."""
    if declared:
        return declared
    return "parquet" if path.suffix.lower() in (".parquet", ".parq", ".pq") else "csv"


def read_rows(path: Path, fmt: str, *, delimiter: str = ",", encoding: str = "utf-8",
              max_field_bytes: int = 1 << 20) -> Iterator[SourceRow]:
    """The rows of ``path`` in format ``fmt``."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if fmt == "parquet":
        return read_parquet(path)
    return read_csv(path, delimiter=delimiter, encoding=encoding,
                    max_field_bytes=max_field_bytes)


def _header(path: Path, names: list[str]) -> list[str]:
    header = [n.strip() for n in names]
    if not any(header):
        raise InputError(f"{path}: the first row (the header) has no column names")
    if len(header) > MAX_COLUMNS:
        raise InputError(f"{path}: more than {MAX_COLUMNS} columns")
    seen: set[str] = set()
    for name in header:
        if name in seen and name:
            raise InputError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)
    return header


def read_csv(path: Path, *, delimiter: str = ",", encoding: str = "utf-8",
             max_field_bytes: int = 1 << 20) -> Iterator[SourceRow]:
    """Stream a CSV file (BOM, quoted fields and line breaks inside quotes handled)."""
    # csv's field limit is process-wide: set it for this file, restore it afterwards
    previous = csv.field_size_limit(max_field_bytes)
    try:
        # utf-8-sig drops a byte-order mark; surrogateescape keeps undecodable bytes so
        # the row holding them is rejected instead of stopping the whole file
        enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") \
            else encoding
        with path.open(encoding=enc, errors="surrogateescape", newline="") as handle:
            yield from _csv_rows(path, handle, delimiter)
    finally:
        csv.field_size_limit(previous)


def _csv_rows(path: Path, handle: Any, delimiter: str) -> Iterator[SourceRow]:
    reader = csv.reader(handle, delimiter=delimiter, strict=False)
    try:
        first = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"{path}: line 1: the header cannot be read: {exc}") from None
    if first is None:
        raise InputError(f"{path}: the file is empty (a CSV file starts with a header row)")
    header = _header(path, first)
    number = 0
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number += 1
            yield SourceRow(number, line, {}, f"unreadable CSV row: {exc}")
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        number += 1
        yield _csv_row(number, line, header, fields)


def _csv_row(number: int, line: int, header: list[str], fields: list[str]) -> SourceRow:
    if len(fields) != len(header):
        return SourceRow(number, line, {}, f"{len(fields)} fields, but the header has "
                                           f"{len(header)} columns")
    values: dict[str, str | None] = {}
    for name, raw in zip(header, fields, strict=True):
        text = raw.strip()
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SourceRow(number, line, {}, f"column {name!r} holds bytes that are not "
                                               "text in the file's encoding (set "
                                               "source.encoding in the mapping)")
        values[name] = text or None
    return SourceRow(number, line, values)


def read_parquet(path: Path) -> Iterator[SourceRow]:
    """Stream a Parquet file in batches of rows."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        try:
            cursor = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        except duckdb.Error as exc:
            raise InputError(f"{path}: not a readable Parquet file: "
                             f"{str(exc).splitlines()[0]}") from None
        header = _header(path, [d[0] for d in cursor.description or []])
        number = 0
        while True:
            try:
                batch = cursor.fetchmany(PARQUET_BATCH)
            except duckdb.Error as exc:
                raise InputError(f"{path}: after row {number}: "
                                 f"{str(exc).splitlines()[0]}") from None
            if not batch:
                return
            for record in batch:
                number += 1
                yield SourceRow(number, None, {n: _text(v) for n, v in zip(header, record,
                                                                           strict=True)})
    finally:
        con.close()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | Decimal | int):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    text = str(value).strip()
    return text or None
