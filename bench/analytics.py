"""Analytic tables: full and incremental refresh speed next to a floor measured in the same run.

The floor is what any materialisation of the store into DuckDB costs: the same resources
read from the store in chunks of 5,000, parsed with ``orjson`` and appended as raw JSON
strings (``resource_id VARCHAR, content VARCHAR``) in one transaction. A refresh adds the
SQL on FHIR views (FHIRPath evaluation), staging every value as text and the TRY_CAST
conversions to DATE / TIMESTAMP / DOUBLE / BOOLEAN.

Reported, in rows and resources per second:

* a full refresh of every shipped table, then each table alone (its resource types only)
  next to the floor for the same resources ("x floor": how many times the floor's time);
* an incremental refresh after ``--changes`` Observations were updated and as many
  Encounters deleted, and a refresh with nothing new.

The node is never changed: its store is copied (SQLite backup) into a temporary folder,
which also holds the DuckDB files. Without ``--node`` a synthetic population of
``--patients`` people at every kind of site is generated and loaded first.

    python bench/analytics.py [--node DIR | --patients 500] [--changes 1000]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from healthmesh.store.sqlite import SQLiteStore  # noqa: E402
from healthmesh.synth import SITE_KINDS, generate  # noqa: E402
from healthmesh.views.tables import CHUNK, AnalyticTable, AnalyticTables  # noqa: E402


class OneTable(AnalyticTables):
    """The analytic tables restricted to one shipped table."""

    def __init__(self, folder: Path, store: Any, name: str) -> None:
        super().__init__(folder, store)
        self.name = name

    def definitions(self) -> tuple[dict[str, AnalyticTable], list[str]]:
        tables, warnings = super().definitions()
        return {self.name: tables[self.name]}, warnings


def copy_store(node: Path, dest: Path) -> SQLiteStore:
    src = sqlite3.connect(node / "store.sqlite")
    dst = sqlite3.connect(dest)
    src.backup(dst)
    src.close()
    dst.close()
    return SQLiteStore(dest)


def synthetic_store(tmp: Path, patients: int) -> SQLiteStore:
    out = tmp / "synth"
    generate(out, patients=patients, sites=SITE_KINDS, seed=1)
    store = SQLiteStore(tmp / "store.sqlite")
    for path in sorted(out.glob("*/*.ndjson")):
        lines = path.read_bytes().splitlines()
        for i in range(0, len(lines), CHUNK):
            store.put_many([orjson.loads(line) for line in lines[i : i + CHUNK]])
    return store


def floor(store: SQLiteStore, types: list[str], path: Path) -> tuple[int, float]:
    """Read, parse and append raw JSON strings of ``types``: (resources, seconds)."""
    start = time.perf_counter()
    conn = duckdb.connect(str(path))
    conn.execute("CREATE OR REPLACE TABLE raw (resource_id VARCHAR, content VARCHAR)")
    conn.begin()
    count = 0
    for rtype in types:
        cursor = store.reader().execute(
            "SELECT id, content FROM resources WHERE type=? AND content IS NOT NULL", (rtype,)
        )
        while batch := cursor.fetchmany(CHUNK):
            keys, texts = [], []
            for rid, content in batch:
                orjson.loads(content)
                keys.append(f"{rtype}/{rid}")
                texts.append(content.decode())
            frame = {"k": np.array(keys, dtype=object), "c": np.array(texts, dtype=object)}
            conn.register("stage", frame)
            conn.execute("INSERT INTO raw SELECT k, c FROM stage")
            conn.unregister("stage")
            count += len(batch)
    conn.commit()
    conn.close()
    return count, time.perf_counter() - start


def per_table(store: SQLiteStore, tmp: Path) -> None:
    tables, _w = AnalyticTables(tmp, store).definitions()
    print(f"\n{'table':22s} {'resources':>10s} {'rows':>9s} {'rows/s':>9s} {'res/s':>9s} "
          f"{'floor res/s':>12s} {'x floor':>8s}")
    for name, table in sorted(tables.items()):
        folder = tmp / f"one-{name}"
        folder.mkdir()
        stats = OneTable(folder, store, name).refresh(full=True)
        types = sorted({v.resource for v in table.views})
        n, floor_s = floor(store, types, folder / "floor.duckdb")
        rows, secs = stats.tables[name], stats.seconds
        if not stats.resources_seen:
            print(f"{name:22s} {'(no resources)':>10s}")
            continue
        print(f"{name:22s} {stats.resources_seen:>10,} {rows:>9,} {rows / secs:>9,.0f} "
              f"{stats.resources_seen / secs:>9,.0f} {n / floor_s:>12,.0f} "
              f"{secs / floor_s:>8.1f}")


def incremental(store: SQLiteStore, tables: AnalyticTables, changes: int) -> None:
    reader = store.reader()
    observations = reader.execute(
        "SELECT content FROM resources WHERE type='Observation' AND content IS NOT NULL "
        "LIMIT ?", (changes,)).fetchall()
    store.put_many([{**orjson.loads(c), "status": "amended"} for (c,) in observations])
    encounters = reader.execute(
        "SELECT id FROM resources WHERE type='Encounter' AND content IS NOT NULL LIMIT ?",
        (changes,)).fetchall()
    with store.transaction():
        for (rid,) in encounters:
            store.delete("Encounter", rid)
    stats = tables.refresh()
    print(f"\nincremental after {len(observations):,} updates and {len(encounters):,} deletes: "
          f"{stats.resources_seen:,} resources, {sum(stats.rows_written.values()):,} rows "
          f"written, {stats.seconds:.3f} s")
    stats = tables.refresh()
    print(f"refresh with nothing new: {stats.resources_seen} resources, {stats.seconds:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", type=Path, help="a node folder (its store is copied)")
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.node:
            store = copy_store(args.node, tmp / "store.sqlite")
        else:
            store = synthetic_store(tmp, args.patients)
        counts = dict(store.reader().execute(
            "SELECT type, count(*) FROM resources WHERE content IS NOT NULL GROUP BY type"))
        print(f"{sum(counts.values()):,} resources in the store")
        tables = AnalyticTables(tmp, store)
        stats = tables.refresh(full=True)
        types = sorted({v.resource for t in tables.definitions()[0].values() for v in t.views})
        n, floor_s = floor(store, types, tmp / "floor.duckdb")
        rows = sum(stats.tables.values())
        print(f"full refresh: {stats.resources_seen:,} resources, {rows:,} rows in "
              f"{stats.seconds:.2f} s = {stats.resources_seen / stats.seconds:,.0f} resources/s, "
              f"{rows / stats.seconds:,.0f} rows/s; floor {n / floor_s:,.0f} resources/s "
              f"({floor_s:.2f} s)")
        per_table(store, tmp)
        incremental(store, tables, args.changes)
        store.close()


if __name__ == "__main__":
    main()
