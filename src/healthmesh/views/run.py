"""Run a ViewDefinition over NDJSON files or over a node (through its egress gate) and
write the rows as CSV or JSON lines.

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

__all__ = ["FORMATS", "file_resources", "write_rows"]

FORMATS = ("csv", "json")


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


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return orjson.dumps(value).decode()
    if value is None:
        return ""
    return value

