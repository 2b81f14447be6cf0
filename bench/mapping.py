"""Flat-file mapping and code-check speed, each next to a baseline measured in the same run.

Times are CPU time of this process (time.process_time), which other programs on the
machine disturb much less than wall-clock time; everything measured runs in one process.

1. Code checks on every write: ``prepare()`` (what every write path runs) on the Synthea
   sample resources, with the terminology hook and without it (the hook swapped for a
   no-op), plus how many of those resources carry warnings (Synthea uses many codes
   outside healthmesh's curated lists, so this is the slow path's worst case).
2. ``ingest()`` of the Synthea-shaped NDJSON set (bench/ingest.py) in one process, with and
   without the code checks, alternating, in the same run.
3. ``healthmesh ingest --mapping wearables`` on a generated wearable export of --rows rows
   vs a baseline that only reads the CSV with csv.DictReader and serialises each row.

    python bench/mapping.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f}/s ({seconds:.2f} s)"


def bench_hook() -> None:
    from ingest import synthea_resources  # the Synthea sample, references resolved

    import healthmesh.store.prepare as prep
    from healthmesh.terminology import annotate, code_warnings

    shared, patients = synthea_resources()
    resources = shared + [r for p in patients for r in p]
    warned = sum(1 for r in resources if code_warnings(r))
    real = prep.annotate

    def timed() -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for r in resources:
                prep.prepare(r)
            best = min(best, time.process_time() - start)
        return best

    timed()  # warm the validator/index caches
    with_hook = timed()
    prep.annotate = lambda r: (r, 0)  # type: ignore[assignment]
    try:
        without = timed()
    finally:
        prep.annotate = real
    start = time.process_time()
    for r in resources:
        annotate(r)
    alone = time.process_time() - start
    n = len(resources)
    print(f"resources: {n:,} Synthea sample resources, {warned:,} with code warnings "
          f"({warned / n:.0%})")
    print(f"prepare() without code checks   : {_rate(n, without)}")
    print(f"prepare() with code checks      : {_rate(n, with_hook)}")
    print(f"code checks alone               : {alone / n * 1e6:.1f} us per resource")
    print(f"ratio with / without            : {without / with_hook:.2f} of the speed "
          f"(+{(with_hook / without - 1):.0%} time)")


def bench_ingest_ab(resources: int) -> None:
    from ingest import build_dataset

    from healthmesh.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synthea.ndjson"
        n = build_dataset(data, resources)
        _ingest_ab(f"{n:,} Synthea-shaped resources (many codes outside the lists)", [data],
                   Path(tmp))
        generate(Path(tmp) / "synth", patients=max(resources // 40, 20), seed=3)
        files = sorted((Path(tmp) / "synth").rglob("*.ndjson"))
        _ingest_ab("healthmesh synth output (every code listed: no warnings)", files,
                   Path(tmp))


def _ingest_ab(label: str, files: list[Path], tmp: Path) -> None:
    import healthmesh.store.prepare as prep
    from healthmesh.ingest.loader import ingest
    from healthmesh.node import init_node, open_node

    real = prep.annotate
    times: dict[str, list[float]] = {"with": [], "without": []}
    count = 0
    for round_ in range(3):
        for mode in ("without", "with"):
            prep.annotate = real if mode == "with" else (lambda r: (r, 0))  # type: ignore
            folder = tmp / f"node-{mode}-{round_}-{len(label)}"
            node = open_node(init_node(folder))
            try:
                start = time.process_time()
                stats = ingest(node, files, rejects_path=tmp / "r.ndjson", workers=0)
                times[mode].append(time.process_time() - start)
                count = stats.read
            finally:
                node.close()
    prep.annotate = real
    best = {k: min(v) for k, v in times.items()}
    print(f"ingest (one process, best of 3) of {label}: {count:,} resources")
    print(f"  without code checks           : {_rate(count, best['without'])}")
    print(f"  with code checks              : {_rate(count, best['with'])}")
    print(f"  ratio with / without          : {best['without'] / best['with']:.2f} of the "
          f"speed")


def wearable_csv(path: Path, rows: int) -> None:
    rng = random.Random(7)
    metrics = [("steps", "steps"), ("hr", "bpm"), ("sleep", "min"), ("bp", "mmHg"),
               ("calories", "kcal")]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "device_id", "device_name", "metric", "value",
                         "diastolic", "unit", "start", "end"])
        for i in range(rows):
            metric, unit = metrics[i % len(metrics)]
            patient = f"p{rng.randrange(rows // 50 + 1)}"
            start = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
            value = {"steps": rng.randrange(12000), "hr": rng.randrange(50, 120),
                     "sleep": rng.randrange(200, 600), "bp": rng.randrange(100, 160),
                     "calories": rng.randrange(3000)}[metric]
            writer.writerow([patient, f"d{patient}", "band", metric, value,
                             rng.randrange(60, 100) if metric == "bp" else "", unit, start,
                             ""])


def bench_mapping(rows: int) -> None:
    from healthmesh.mapping import load, run_mapping
    from healthmesh.node import init_node, open_node

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "wearables.csv"
        wearable_csv(data, rows)
        start = time.process_time()
        with data.open(newline="") as handle:
            for row in csv.DictReader(handle):
                orjson.dumps(row)
        baseline = time.process_time() - start
        node = open_node(init_node(Path(tmp) / "node"))
        try:
            start = time.process_time()
            stats = run_mapping(node, load("wearables"), [data],
                                rejects_path=Path(tmp) / "rejects.ndjson")
            mapped = time.process_time() - start
        finally:
            node.close()
    print(f"rows: {rows:,} wearable export rows ({stats.skipped:,} skipped by the filter, "
          f"{stats.rejected} rejected), {stats.resources:,} resources written")
    print(f"baseline csv.DictReader + orjson : {_rate(rows, baseline)}")
    print(f"ingest --mapping wearables       : {_rate(rows, mapped)}  "
          f"= {stats.resources / mapped:,.0f} resources/s")
    print(f"ratio mapping / baseline         : {baseline / mapped:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--resources", type=int, default=20_000)
    args = parser.parse_args(argv)
    bench_hook()
    print()
    bench_ingest_ab(args.resources)
    print()
    bench_mapping(args.rows)


if __name__ == "__main__":
    main()
