"""Read and write the tables ``healthmesh anonymize`` works on: CSV and Parquet.

CSV is read with the standard library's reader, not pandas, so that a line with the wrong
number of fields becomes a reject with its line number and reason instead of stopping the
run or being dropped silently; every value stays text (hierarchies compare text). Parquet
goes through DuckDB, which the node already uses for views, so no Arrow dependency is
needed. Output is written to a temporary file and renamed, so a failed or refused run never
leaves a partial file where the release is expected.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd

from healthmesh.errors import InputError

__all__ = ["MAX_ROWS", "check_output", "read_table", "write_rejects", "write_table"]

MAX_ROWS = 5_000_000  # the search holds the table in memory; larger tables are refused
MAX_FIELD = 1024 * 1024


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    raise InputError(f"{path}: unknown table kind {suffix!r} (use .csv, .tsv or .parquet)")


def check_output(path: Path) -> None:
    """Fail early (before any work) on an output path whose kind cannot be written."""
    _kind(Path(path))


def _sniff(sample: str, path: Path) -> str:
    try:
        return csv.Sniffer().sniff(sample.split("\n", 1)[0] + "\n", delimiters=",;\t|").delimiter
    except csv.Error:
        if "\n" not in sample and len(sample) < 2:
            raise InputError(f"{path}: empty file") from None
        return ","


def read_table(path: Path, delimiter: str | None = None, max_rows: int = MAX_ROWS
               ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The table at ``path`` (all values as text) and the lines rejected while reading.

    A CSV table's index is the line number of each row, so later rejects can name it.
    """
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if kind == "parquet":
        return _read_parquet(path, max_rows), []
    return _read_csv(path, delimiter, max_rows)


def _read_parquet(path: Path, max_rows: int) -> pd.DataFrame:
    try:
        with duckdb.connect() as con:
            source = [str(path)]
            count = con.execute("SELECT count(*) FROM read_parquet(?)", source).fetchone()
            if count is not None and count[0] > max_rows:
                raise InputError(f"{path}: {count[0]} rows, over the {max_rows} row limit")
            columns = [d[0] for d in con.execute("SELECT * FROM read_parquet(?) LIMIT 0",
                                                 source).description]
            quoted = ['"' + c.replace('"', '""') + '"' for c in columns]
            cast = ", ".join(f"CAST({q} AS VARCHAR) AS {q}" for q in quoted)
            frame = con.execute(f"SELECT {cast} FROM read_parquet(?)", source).df()
    except duckdb.Error as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}"[:500]) from exc
    return frame.astype("string")


def _lines(path: Path, delimiter: str | None) -> Iterator[tuple[int, list[str]]]:
    csv.field_size_limit(MAX_FIELD)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        sep = delimiter or _sniff(handle.read(65536), path)
        handle.seek(0)
        reader = csv.reader(handle, delimiter=sep)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            yield reader.line_num, row


def _read_csv(path: Path, delimiter: str | None, max_rows: int
              ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    rows: list[list[str]] = []
    numbers: list[int] = []
    rejects: list[dict[str, Any]] = []
    header: list[str] | None = None
    try:
        for line, row in _lines(path, delimiter):
            if header is None:
                header = [h.strip() for h in row]
                if len(set(header)) != len(header) or "" in header:
                    raise InputError(f"{path}: the header must name each column once: "
                                     f"{header}"[:500])
                continue
            if not row:
                continue
            if len(row) != len(header):
                # no content: a rejected row of a table to anonymise holds identifiers
                rejects.append({"source": str(path), "line": line, "reason":
                                f"{len(row)} fields, the header has {len(header)}"})
                continue
            rows.append(row)
            numbers.append(line)
            if len(rows) > max_rows:
                raise InputError(f"{path}: over the {max_rows} row limit")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV: {exc}") from exc
    if header is None:
        raise InputError(f"{path}: empty file (no header line)")
    frame = pd.DataFrame(rows, columns=header, dtype="string",
                         index=pd.Index(numbers, name="line", dtype="int64"))
    return frame, rejects


def _atomic(path: Path) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    return fd, Path(tmp)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV or Parquet (by suffix), atomically."""
    path = Path(path)
    kind = _kind(path)
    fd, tmp = _atomic(path)
    try:
        if kind == "csv":
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
                frame.to_csv(handle, index=False, sep="\t" if path.suffix == ".tsv" else ",")
        else:
            os.close(fd)
            text = frame.astype(object).where(frame.notna(), None)
            with duckdb.connect() as con:
                con.register("release", text)
                target = str(tmp).replace("'", "''")
                con.execute(f"COPY release TO '{target}' (FORMAT parquet)")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_rejects(records: list[dict[str, Any]], path: Path) -> None:
    """Write rejects as NDJSON, one object per line, atomically."""
    fd, tmp = _atomic(Path(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            for record in records:
                handle.write(orjson.dumps(record, default=str) + b"\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
