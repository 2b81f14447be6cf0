"""Benchmark: optimal 5-anonymity on UCI Adult — healthmesh next to anjana, ARX as reference.

Runs healthmesh's lattice search (loss metric, 5-anonymity, at most 5% suppressed) on
../shared/data/adult with ARX's hierarchies, then anjana (PyPI) in the same run on the same
data, k and suppression limit, and prints both next to the figures ARX (Java, Flash) gave on
this machine. anjana pins older pandas/numpy than healthmesh, so it runs in its own virtual
environment, ``bench/.venv-anjana``, created here if missing (it is not a project
dependency). anjana's result is scored with the same loss metric, so the information loss
is compared like for like.

    .venv/bin/python bench/anonymize.py [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path

import pandas as pd

from healthmesh.privacy import AnonymizationConfig, Hierarchy, KAnonymity, anonymize
from healthmesh.privacy.anonymize.lattice import evaluate
from healthmesh.privacy.anonymize.metrics import Loss
from healthmesh.privacy.anonymize.table import EncodedTable

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT.parent / "shared" / "data" / "adult"
QIS = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass",
       "occupation"]  # the data's column order, in which ARX reports its levels
K, LIMIT = 5, 0.05
VENV = ROOT / "bench" / ".venv-anjana"
ARX = {"seconds": "0.8-2.1 warm (4-6 cold)", "levels": [0, 3, 0, 0, 1, 1, 1, 2],
       "suppressed": 1458, "classes": 399}

ANJANA_SCRIPT = r"""
import json, sys, time, io, contextlib
import pandas as pd
from anjana.anonymity import k_anonymity_inner
adult, qis, k, limit = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
started = time.perf_counter()
data = pd.read_csv(f"{adult}/adult.csv", sep=";", dtype=str, keep_default_na=False)
hierarchies = {}
for q in qis:
    table = pd.read_csv(f"{adult}/adult_hierarchy_{q}.csv", sep=";", header=None, dtype=str,
                        keep_default_na=False)
    hierarchies[q] = {level: table[level].tolist() for level in table.columns}
loaded = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    result, suppressed, levels = k_anonymity_inner(data, [], qis, k, limit * 100, hierarchies)
done = time.perf_counter()
classes = int(result.groupby(qis).ngroups) if len(result) else 0
print(json.dumps({"seconds": done - loaded, "seconds_with_load": done - started,
                  "levels": [int(levels[q]) for q in qis], "suppressed": int(suppressed),
                  "classes": classes, "rows_out": len(result)}))
"""


def ensure_anjana() -> Path:
    """The anjana environment's python, creating the environment the first time."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} and installing anjana (once)...", file=sys.stderr)
        venv.create(VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "anjana"], check=True)
    return python


def run_anjana() -> dict:
    python = ensure_anjana()
    proc = subprocess.run([str(python), "-c", ANJANA_SCRIPT, str(ADULT), json.dumps(QIS),
                           str(K), str(LIMIT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"anjana failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_healthmesh(repeat: int) -> dict:
    frame = pd.read_csv(ADULT / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    config = AnonymizationConfig.from_dict({
        "quasi_identifiers": {q: {"file": str(ADULT / f"adult_hierarchy_{q}.csv")} for q in QIS},
        "insensitive": ["salary-class"], "models": [{"type": "k-anonymity", "k": K}],
        "suppression_limit": LIMIT})
    totals, searches, result = [], [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = anonymize(frame, config)
        totals.append(time.perf_counter() - started)
        searches.append(result.search["search_seconds"])
    assert result is not None
    return {"seconds": statistics.median(totals), "search_seconds": statistics.median(searches),
            "first_run_seconds": totals[0], "levels": [result.levels[q] for q in QIS],
            "suppressed": result.suppressed, "classes": result.classes,
            "loss": result.utility, "checked": result.search["checked"],
            "lattice_size": result.search["lattice_size"]}


def score(levels: list[int]) -> dict:
    """Loss (ARX's metric) and suppression of a transformation, with ARX's suppression."""
    frame = pd.read_csv(ADULT / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    hierarchies = {q: Hierarchy.from_csv(ADULT / f"adult_hierarchy_{q}.csv") for q in QIS}
    table, _ = EncodedTable.encode(frame, hierarchies)
    node = evaluate(table, levels, [KAnonymity(K)], math.floor(LIMIT * table.rows))
    value, _ = Loss(table).score(node.levels, node.classes, node.released)
    return {"loss": value, "suppressed": node.suppressed, "classes": node.released_classes,
            "acceptable": node.acceptable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (ADULT / "adult.csv").is_file():
        raise SystemExit(f"UCI Adult not found at {ADULT}")
    ours = run_healthmesh(args.repeat)
    theirs = run_anjana()
    theirs.update({f"arx_metric_{k}": v for k, v in score(theirs["levels"]).items()})
    arx = {**ARX, **{f"arx_metric_{k}": v for k, v in score(ARX["levels"]).items()}}
    report = {"healthmesh": ours, "anjana": theirs, "arx_reference": arx,
              "speedup_vs_anjana": theirs["seconds"] / ours["seconds"]}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"UCI Adult, {len(QIS)} quasi-identifiers, {K}-anonymity, <= {LIMIT:.0%} suppressed")
    print(f"levels in column order: {', '.join(QIS)}")
    row = "{:<22}{:>16}{:>28}{:>12}{:>9}{:>9}"
    print(row.format("", "seconds", "levels", "suppressed", "classes", "loss"))
    print(row.format("healthmesh (optimal)", f"{ours['seconds']:.3f}", str(ours["levels"]),
                     ours["suppressed"], ours["classes"], f"{ours['loss']:.4f}"))
    print(row.format("anjana (greedy)", f"{theirs['seconds']:.3f}", str(theirs["levels"]),
                     theirs["suppressed"], theirs["classes"],
                     f"{theirs['arx_metric_loss']:.4f}"))
    print(row.format("ARX (reference)", ARX["seconds"].split(" ")[0], str(ARX["levels"]),
                     ARX["suppressed"], ARX["classes"], f"{arx['arx_metric_loss']:.4f}"))
    print(f"healthmesh: search {ours['search_seconds']:.3f} s of {ours['seconds']:.3f} s "
          f"(median of {args.repeat}; first run {ours['first_run_seconds']:.3f} s), "
          f"{ours['checked']} of {ours['lattice_size']} nodes checked")
    print(f"anjana / healthmesh time: {report['speedup_vs_anjana']:.1f}x; "
          f"loss ratio anjana / healthmesh: {theirs['arx_metric_loss'] / ours['loss']:.2f}")


if __name__ == "__main__":
    main()
