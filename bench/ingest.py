"""Ingest speed: `healthmesh ingest` (validation + indexing + history) vs a bare SQLite load.

Builds a Synthea-shaped NDJSON set (the Synthea sample patients in ../shared,
replicated under new ids with every reference rewritten) of at least
--resources resources, then measures in the same run:

* baseline: orjson-parse every line and insert the raw JSON text into a bare
  SQLite table with ``executemany`` (no validation, no indexes, no history);
* healthmesh: ``healthmesh ingest NODE FILE`` as a user runs it (a subprocess).

Also reports the peak memory of ingest for the full set and for a quarter of
it (streaming means it should not grow with the input).

    python bench/ingest.py [--resources 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
_REF = re.compile(rb'"reference":"([^"]+)"')


def synthea_resources() -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """(shared resources: organisations etc., per-patient resource lists), references resolved."""
    folders = [SHARED / "data/synthea", SHARED / "data/synthea/blaze-synthea-2.7.0"]
    shared: list[dict[str, Any]] = []
    patients: list[list[dict[str, Any]]] = []
    by_identifier: dict[str, str] = {}
    for folder in folders:
        paths = sorted(folder.glob("*.json"), key=lambda p: ("Information" not in p.name, p.name))
        for path in paths:
            bundle = json.loads(path.read_text())
            entries = bundle["entry"]
            if "Information" in path.name:
                shared.extend(_index_shared(entries, by_identifier))
                continue
            urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
                    for e in entries}
            patients.append([_rewrite(e["resource"], urls, by_identifier) for e in entries])
    return shared, patients


def _index_shared(entries: list[dict[str, Any]], by_identifier: dict[str, str]) -> list[dict]:
    """Organisations, practitioners...: keep the first resource per identifier, as the
    bundles' ifNoneExist conditional creates do."""
    kept = []
    for e in entries:
        res = e["resource"]
        keys = [f"{res['resourceType']}?identifier={i.get('system')}|{i['value']}"
                for i in res.get("identifier", [])]
        if any(k in by_identifier for k in keys):
            continue
        for key in keys:
            by_identifier[key] = f"{res['resourceType']}/{res['id']}"
        kept.append(res)
    return kept


def _rewrite(res: dict[str, Any], urls: dict[str, str], idents: dict[str, str]) -> dict[str, Any]:
    raw = orjson.dumps(res)

    def fix(m: re.Match[bytes]) -> bytes:
        ref = m.group(1).decode()
        target = urls.get(ref) or idents.get(ref) or ref
        return b'"reference":"' + target.encode() + b'"'

    return orjson.loads(_REF.sub(fix, raw))


def _copy_group(group: list[dict[str, Any]], copy: int) -> list[dict[str, Any]]:
    """One patient's resources under new ids, references inside the group rewritten."""
    renamed = {f"{r['resourceType']}/{r['id']}": f"{r['id'][:50]}-{copy}" for r in group}

    def fix(m: re.Match[bytes]) -> bytes:
        ref = m.group(1).decode()
        if ref in renamed:
            ref = ref.split("/")[0] + "/" + renamed[ref]
        return b'"reference":"' + ref.encode() + b'"'

    out = []
    for res in group:
        copy_res = orjson.loads(_REF.sub(fix, orjson.dumps(res)))
        copy_res["id"] = renamed[f"{res['resourceType']}/{res['id']}"]
        out.append(copy_res)
    return out


def build_dataset(path: Path, minimum: int) -> int:
    shared, patients = synthea_resources()
    written = 0
    with path.open("wb") as out:
        for res in shared:
            out.write(orjson.dumps(res) + b"\n")
            written += 1
        copy = 0
        while written < minimum:
            for group in patients:
                for res in _copy_group(group, copy):
                    out.write(orjson.dumps(res) + b"\n")
                    written += 1
            copy += 1
    return written


def baseline(path: Path, db: Path) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE raw (type TEXT, id TEXT, content TEXT)")
    start = time.perf_counter()
    batch: list[tuple[str, str, str]] = []
    with path.open("rb") as handle:
        for line in handle:
            res = orjson.loads(line)
            batch.append((res["resourceType"], res["id"], line.decode()))
            if len(batch) >= 2000:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO raw VALUES (?, ?, ?)", batch)
                conn.execute("COMMIT")
                batch = []
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO raw VALUES (?, ?, ?)", batch)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def healthmesh_ingest(path: Path, node: Path) -> tuple[float, int, dict[str, Any]]:
    """Wall time, peak RSS (KiB) and stats of `healthmesh ingest` in a child process."""
    hm = [sys.executable, "-m", "healthmesh"]
    subprocess.run([*hm, "node", "init", str(node)], check=True, capture_output=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run([*hm, "ingest", str(node), str(path), "--json"],
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if result.returncode != 0:
        raise SystemExit(f"ingest failed: {result.stderr}{result.stdout}")
    return elapsed, max(peak, before), json.loads(result.stdout)


def head(path: Path, out: Path, n: int) -> None:
    with path.open("rb") as src, out.open("wb") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "synthea-shaped.ndjson"
        n = build_dataset(data, args.resources)
        size_mb = data.stat().st_size / 1e6
        print(f"dataset: {n:,} resources, {size_mb:.0f} MB NDJSON")
        base_s = baseline(data, work / "baseline.sqlite")
        quarter = work / "quarter.ndjson"
        head(data, quarter, n // 4)
        _qs, q_peak, _ = healthmesh_ingest(quarter, work / "node-quarter")
        hm_s, peak, stats = healthmesh_ingest(data, work / "node")
        assert stats["rejected"] == 0, stats
        base_rate, hm_rate = n / base_s, n / hm_s
        print(f"baseline  orjson + executemany raw text : {base_rate:>10,.0f} resources/s "
              f"({base_s:.1f} s)")
        print(f"healthmesh ingest (validate+index+hist): {hm_rate:>10,.0f} resources/s "
              f"({hm_s:.1f} s, process start included)")
        print(f"ratio healthmesh / baseline             : {hm_rate / base_rate:>10.2f}   "
              "(target >= 0.20)")
        print(f"peak RSS: {q_peak / 1024:.0f} MiB for {n // 4:,} resources, "
              f"{peak / 1024:.0f} MiB for {n:,}")
        print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
