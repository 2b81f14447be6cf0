"""Run a ViewDefinition over NDJSON files or over a node (through its egress gate) and
write the rows as CSV, JSON lines or Parquet (through DuckDB).

Reading a node's store is an egress like any other: the rows come from the requester's
:class:`~healthmesh.gate.egress.GuardedRepository` (consent-filtered, audited), so a view
run for research sees only the patients who opted in.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from healthmesh.errors import InputError
from healthmesh.ingest.readers import input_files, read_ndjson
from healthmesh.views.engine import CompiledView

__all__ = ["FORMATS", "file_resources", "write_parquet", "write_rows"]

FORMATS = ("csv", "json", "parquet")
PARQUET_BATCH = 50_000


def file_resources(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """Resources from NDJSON files and folders (streamed; a bad line is an InputError)."""
    for path, kind in input_files(paths):
        if kind != "ndjson":
            raise InputError(f"{path}: views read NDJSON files (one resource per line)")
        for line in read_ndjson(path, 64 * 1024 * 1024):
            if line.rejected is not None:
                raise InputError(line.rejected.one_line())
            yield line.value


def write_rows(view: CompiledView, resources: Iterable[dict[str, Any]], out: IO[str],
               fmt: str) -> int:
    """Write the view's rows to ``out``; returns the number of rows."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(view.columns)
        for row in view.rows(resources):
            writer.writerow([_cell(row[c]) for c in view.columns])
            count += 1
        return count
    for row in view.rows(resources):
        out.write(orjson.dumps(row).decode() + "\n")
        count += 1
    return count


def write_parquet(view: CompiledView, resources: Iterable[dict[str, Any]], path: Path) -> int:
    """Write the view's rows to a Parquet file (nested values as JSON text); returns the
    number of rows. Rows are staged in an in-memory DuckDB table in batches."""
    import duckdb
    import pandas as pd

    con = duckdb.connect()
    count, batch = 0, []
    try:
        for row in view.rows(resources):
            batch.append([_nested(row[c]) for c in view.columns])
            if len(batch) >= PARQUET_BATCH:
                count += _stage(con, pd, view.columns, batch, count == 0)
                batch = []
        count += _stage(con, pd, view.columns, batch, count == 0)
        target = str(path).replace("'", "''")
        con.execute(f"COPY view_rows TO '{target}' (FORMAT parquet)")
    finally:
        con.close()
    return count


def _stage(con: Any, pd: Any, columns: tuple[str, ...], batch: list[list[Any]],
           first: bool) -> int:
    frame = pd.DataFrame(batch, columns=list(columns), dtype=object)
    con.register("view_batch", frame)
    if first:
        con.execute("CREATE TABLE view_rows AS SELECT * FROM view_batch")
    else:
        con.execute("INSERT INTO view_rows SELECT * FROM view_batch")
    con.unregister("view_batch")
    return len(batch)


def _nested(value: Any) -> Any:
    return orjson.dumps(value).decode() if isinstance(value, (list, dict)) else value


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return orjson.dumps(value).decode()
    if value is None:
        return ""
    return value

