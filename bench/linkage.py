"""Benchmark: healthmesh record linkage next to anonlink, on the same CLKs, in one run.

anonlink (0.15.3, C++ popcount kernels) cannot be installed beside healthmesh (it and
clkhash pin cryptography<41), so it runs in its own virtual environment
(``bench/.venv-clkhash``, made by ``python tools/clkhash_compat.py --make-venv``) on the
very CLKs healthmesh encoded (the formats are byte-identical), read from ``.npy`` files.

Measured on the first ``--records`` Patients of three sites of a synthetic population
(``--data DIR`` from ``healthmesh synth``, or generated here with ``--patients``):

1. **Raw Dice comparisons/s**, ``--dense``×``--dense`` records at threshold 0.7, every
   pair scored: healthmesh's tiled float32 matrix product vs anonlink's
   ``dice_coefficient_accelerated``.
2. **End to end**, all three sites: healthmesh (keyed blocking keys → pair scores →
   greedy clustering) vs anonlink (``find_candidate_pairs`` over all pairs →
   ``greedy_solve``), with the pairs each compared, its comparisons/s, wall time, and
   pairwise precision/recall/F1 against the truth file.

Run from the repository root::

    python bench/linkage.py --data DIR [--sites clinic,insurer,public-health]
                            [--records 100000] [--dense 10000] [--threshold 0.7]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from healthmesh.linkage import (  # noqa: E402
    LinkStats,
    Reject,
    default_schema,
    encode_patients,
    link_sites,
    pairwise_quality,
    read_patient_ndjson,
    read_truth,
)
from healthmesh.linkage.similarity import dense_candidates  # noqa: E402

ANONLINK_SIDE = r"""
import json, sys, time
import numpy as np
from bitarray import bitarray
from anonlink import candidate_generation, similarities, solving
job = json.loads(sys.argv[1])
def load(path):
    rows = np.load(path)
    out = []
    for row in rows:
        b = bitarray(); b.frombytes(row.tobytes()); out.append(b)
    return out
sets = [load(p) for p in job["files"]]
result = {}
n = job["dense"]
a, b = sets[0][:n], sets[1][:n]
t = time.perf_counter()
candidate_generation.find_candidate_pairs([a, b], similarities.dice_coefficient_accelerated,
                                          job["threshold"])
result["dense_seconds"] = time.perf_counter() - t
result["dense_compared"] = len(a) * len(b)
t = time.perf_counter()
cands = candidate_generation.find_candidate_pairs(
    sets, similarities.dice_coefficient_accelerated, job["threshold"])
result["scoring_seconds"] = time.perf_counter() - t
t2 = time.perf_counter()
groups = solving.greedy_solve(cands)
result["solve_seconds"] = time.perf_counter() - t2
result["total_seconds"] = time.perf_counter() - t
result["compared"] = sum(len(x) * len(y) for i, x in enumerate(sets) for y in sets[i + 1:])
result["candidates"] = len(cands[0])
result["groups"] = [[list(map(int, r)) for r in g] for g in groups]
print(json.dumps(result))
"""


def _load(data: Path, sites: list[str], records: int) -> list:
    schema = default_schema()
    secret = bytes(range(7, 39))
    loaded = []
    for site in sites:
        rejects: list[Reject] = []
        patients = (p for i, p in zip(range(records), read_patient_ndjson(
            data / site / "Patient.ndjson", rejects), strict=False))
        started = time.perf_counter()
        enc = encode_patients(patients, schema, secret, rejects)
        enc.site = site
        loaded.append((enc, time.perf_counter() - started))
    return loaded


def _assigned(sites: list, groups: list) -> dict:
    """(site, id) → group number; records in no group (anonlink leaves them out) are
    people of their own, so both tools are measured over the same records."""
    out = {(sites[i].site, sites[i].ids[k]): str(n)
           for n, group in enumerate(groups) for i, k in group}
    for site in sites:
        for rid in site.ids:
            out.setdefault((site.site, rid), f"single:{site.site}:{rid}")
    return out


def _anonlink(python: Path, sites: list, dense: int, threshold: float) -> dict | None:
    if not python.exists():
        return None
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for enc in sites:
            path = Path(folder) / f"{enc.site}.npy"
            np.save(path, enc.clks)
            files.append(str(path))
        job = json.dumps({"files": files, "dense": dense, "threshold": threshold})
        done = subprocess.run([str(python), "-c", ANONLINK_SIDE, job], capture_output=True,
                              text=True, check=False)
    if done.returncode:
        print("anonlink failed:", done.stderr.strip().splitlines()[-1:])
        return None
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description="record linkage benchmark")
    parser.add_argument("--data", type=Path, help="healthmesh synth output folder")
    parser.add_argument("--patients", type=int, default=3000, help="generate this many")
    parser.add_argument("--sites", default="clinic,insurer,public-health")
    parser.add_argument("--records", type=int, default=100_000, help="per site")
    parser.add_argument("--dense", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--venv", type=Path, default=ROOT / "bench" / ".venv-clkhash")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sites = args.sites.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from healthmesh.synth import generate
            data = Path(tmp) / "synth"
            generate(data, patients=args.patients, sites=sites, seed=11)
        loaded = _load(data, sites, args.records)
        truth = read_truth(data / "truth" / "linkage.csv")
    encs = [e for e, _ in loaded]
    report = _measure(encs, truth, args)
    report["encode_records_per_second"] = round(
        sum(len(e.ids) for e in encs) / sum(s for _, s in loaded))
    report["records"] = {e.site: len(e.ids) for e in encs}
    print(json.dumps(report, indent=2) if args.json else _table(report))


def _measure(encs: list, truth: dict, args: argparse.Namespace) -> dict:
    n = min(args.dense, len(encs[0].ids), len(encs[1].ids))
    started = time.perf_counter()
    dense_candidates(encs[0].clks[:n], encs[1].clks[:n], args.threshold)
    dense_seconds = time.perf_counter() - started
    stats = LinkStats()
    groups = link_sites(encs, args.threshold, "keys", stats=stats)
    ours = {"dense_per_second": n * n / dense_seconds, "compared": stats.compared,
            "per_second": stats.comparisons_per_second, "seconds": stats.seconds_total,
            **pairwise_quality(_assigned(encs, groups), truth).as_dict()}
    theirs = _anonlink(args.venv / "bin" / "python", encs, n, args.threshold)
    report = {"threshold": args.threshold, "dense_n": n, "healthmesh": ours, "anonlink": None}
    if theirs is not None:
        report["anonlink"] = {
            "dense_per_second": theirs["dense_compared"] / theirs["dense_seconds"],
            "compared": theirs["compared"],
            "per_second": theirs["compared"] / theirs["scoring_seconds"],
            "seconds": theirs["total_seconds"],
            **pairwise_quality(_assigned(encs, theirs["groups"]), truth).as_dict()}
    return report


def _table(report: dict) -> str:
    ours, theirs = report["healthmesh"], report["anonlink"] or {}
    n = report["dense_n"]
    rows = [(f"raw Dice comparisons/s ({n}×{n}, all pairs)", "dense_per_second", "{:,.0f}"),
            ("end to end: pairs compared", "compared", "{:,}"),
            ("end to end: comparisons/s", "per_second", "{:,.0f}"),
            ("end to end: seconds", "seconds", "{:.1f}"),
            ("precision", "precision", "{:.4f}"), ("recall", "recall", "{:.4f}"),
            ("F1", "f1", "{:.4f}")]
    lines = [f"records per site: {report['records']}  threshold {report['threshold']}",
             f"healthmesh encoding: {report['encode_records_per_second']:,} records/s",
             f"{'':44} {'healthmesh':>16} {'anonlink':>16} {'ratio':>8}"]
    for label, key, fmt in rows:
        a, b = ours[key], theirs.get(key)
        ratio = f"{a / b:.2f}" if b else "-"
        lines.append(f"{label:44} {fmt.format(a):>16} "
                     f"{fmt.format(b) if b is not None else 'n/a':>16} {ratio:>8}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
