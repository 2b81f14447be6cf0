"""Search speed through the HTTP API on a large store.

Builds (or reuses, with --node) a node of at least --resources Synthea-shaped resources,
serves it with `healthmesh serve` on loopback, and measures in the same run:

* p50/p95 latency of ten typical searches (random patients each time), next to a read by
  id (the floor: HTTP + one lookup);
* `_summary=count` for a common code, in matching resources counted per second, next to a
  bare SQLite count over the same index rows;
* streaming a large result page by page (`_count=1000`), in resources per second, next to
  reading the same rows' JSON straight from SQLite.

    python bench/search.py [--resources 1000000] [--node DIR] [--repeat 40]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import build_dataset  # noqa: E402

LOINC = "http://loinc.org"


def ensure_node(node: Path, resources: int, work: Path) -> None:
    if (node / "store.sqlite").exists():
        return
    data = work / "dataset.ndjson"
    print(f"building a dataset of {resources:,} resources ...", flush=True)
    build_dataset(data, resources)
    hm = [sys.executable, "-m", "healthmesh"]
    subprocess.run([*hm, "node", "init", str(node)], check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run([*hm, "ingest", str(node), str(data), "-q"], check=True)
    print(f"ingested in {time.perf_counter() - start:.0f} s", flush=True)
    data.unlink()


def common_code(db: sqlite3.Connection, with_value: bool = False) -> tuple[str, int]:
    """The most frequent Observation code (optionally among those with a numeric value)."""
    extra = ("AND t.rid IN (SELECT q.rid FROM sp_quantity q JOIN params qp USING (pid) "
             "WHERE qp.type='Observation' AND qp.code='value-quantity')") if with_value else ""
    row = db.execute(
        "SELECT t.system || '|' || t.code, count(*) FROM sp_token t JOIN params p USING (pid) "
        f"WHERE p.type='Observation' AND p.code='code' {extra} GROUP BY t.system, t.code "
        "ORDER BY 2 DESC LIMIT 1"
    ).fetchone()
    return row[0], row[1]


def sample_patients(db: sqlite3.Connection, n: int) -> list[str]:
    rows = db.execute(
        "SELECT id FROM resources WHERE type='Patient' AND content IS NOT NULL"
    ).fetchall()
    random.seed(7)
    return [r[0] for r in random.sample(rows, min(n, len(rows)))]


def searches(code: str, value_code: str) -> dict[str, str]:
    return {
        "patient's obs by code+date": "Observation?patient={p}&code=" + code
        + "&date=ge2000-01-01&date=lt2030-01-01",
        "conditions by code": "Condition?code=http://snomed.info/sct|44054006&_count=50",
        "patients by name+birthdate": "Patient?family=smi&birthdate=ge1960&_count=50",
        "obs with _include": "Observation?patient={p}&_include=Observation:encounter&_count=50",
        "$everything": "Patient/{p}/$everything",
        "encounters of a patient": "Encounter?patient={p}&date=ge2010",
        "immunizations of a patient": "Immunization?patient={p}",
        "obs by code+value": "Observation?code=" + value_code + "&value-quantity=gt50&_count=20",
        "patients by gender+birthdate": "Patient?gender=female&birthdate=ge1980&_count=20",
        "claims of a patient": "Claim?patient={p}&_sort=-created&_count=20",
    }


def latency(client: httpx.Client, template: str, patients: list[str], repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        url = template.format(p=patients[i % len(patients)])
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.text[:300])
    return times


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--node", type=Path)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--port", type=int, default=8767)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = args.node or Path(tmp) / "node"
        ensure_node(node, args.resources, Path(tmp))
        run(node, args)


def run(node: Path, args: argparse.Namespace) -> None:
    db = sqlite3.connect(node / "store.sqlite")
    total = db.execute("SELECT count(*) FROM resources WHERE content IS NOT NULL").fetchone()[0]
    code, matching = common_code(db)
    value_code, _n = common_code(db, with_value=True)
    patients = sample_patients(db, 200)
    server = subprocess.Popen(
        [sys.executable, "-m", "healthmesh", "serve", str(node), "--port", str(args.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{args.port}/fhir/"
    try:
        headers = {"X-Requester": "Organization/bench-clinic", "X-Purpose-Of-Use": "TREAT"}
        with httpx.Client(base_url=base, timeout=120, headers=headers) as client:
            _wait(client)
            print(f"store: {total:,} resources; common code {code} on {matching:,} Observations")
            report_latency(client, code, value_code, patients, args.repeat)
            report_count(client, db, code, matching)
            report_stream(client, db, code)
    finally:
        server.terminate()
        server.wait()


def _wait(client: httpx.Client) -> None:
    for _ in range(100):
        try:
            client.get("metadata")
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


def report_latency(
    client: httpx.Client, code: str, value_code: str, patients: list[str], repeat: int
) -> None:
    floor = latency(client, "Patient/{p}", patients, repeat)
    print(f"{'read by id (floor)':32s} p50 {p(floor, 50):7.1f} ms  p95 {p(floor, 95):7.1f} ms")
    for name, template in searches(code, value_code).items():
        latency(client, template, patients, 3)  # warm
        times = latency(client, template, patients, repeat)
        flag = "ok" if p(times, 95) < 50 else "over 50 ms"
        print(f"{name:32s} p50 {p(times, 50):7.1f} ms  p95 {p(times, 95):7.1f} ms  {flag}")


def report_count(client: httpx.Client, db: sqlite3.Connection, code: str, n: int) -> None:
    start = time.perf_counter()
    body = client.get("Observation", params={"code": code, "_summary": "count"}).json()
    api_s = time.perf_counter() - start
    assert body["total"] == n, (body["total"], n)
    system, value = code.split("|")
    start = time.perf_counter()
    db.execute(
        "SELECT count(*) FROM sp_token t JOIN params p USING (pid) WHERE p.type='Observation' "
        "AND p.code='code' AND t.code=? AND t.system=?", (value, system),
    ).fetchone()
    raw_s = time.perf_counter() - start
    print(f"_summary=count {n:,} matches: API {n / api_s:,.0f}/s ({api_s * 1000:.0f} ms); "
          f"bare SQLite count {n / raw_s:,.0f}/s; target >= 2,000,000/s")


def report_stream(client: httpx.Client, db: sqlite3.Connection, code: str) -> None:
    url: str | None = f"Observation?code={code}&_count=1000"
    count = 0
    start = time.perf_counter()
    while url and count < 200_000:
        bundle = orjson.loads(client.get(url).content)
        count += len(bundle.get("entry", []))
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    api_s = time.perf_counter() - start
    start = time.perf_counter()
    rows = db.execute(
        "SELECT content FROM resources WHERE type='Observation' LIMIT ?", (count,)
    ).fetchall()
    raw_s = time.perf_counter() - start
    print(f"streaming {count:,} resources (_count=1000 pages): {count / api_s:,.0f}/s; "
          f"bare SQLite read of as many rows {len(rows) / raw_s:,.0f}/s; target >= 50,000/s")


if __name__ == "__main__":
    main()
