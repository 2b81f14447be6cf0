"""Federated latency: a stratified count across N local nodes, next to one node's local time.

A real local network (``healthmesh.network.local``: hub + one ``healthmesh serve`` process
per node, each node agent long-polling the hub) answers, ``--queries`` times each,

    count of the hypertension cohort by sex and age_band

under the ``public-health`` agreement (PUBHLTH: permitted by law, every patient in scope)
and the ``research`` agreement (HRESCH: only opted-in patients), through
``healthmesh.network.client.connect(...).run`` (sign, submit, long-poll, verify).

The floor, measured in the same run while no network runs: the same query computed at one
node without the network (consent population from the gate, DuckDB scope tables, the
algorithm's local part, disclosure control), and its parts. Every node holds a byte copy of
one template node (synthetic "hospital" data ingested once, analytic tables built once), so
the template's local time is every node's local time.

Targets (the issue): p50 under 1 s for 10 nodes; overhead (p50 - floor) under 0.5 s.
``--patients`` is the synthetic population (as in ``healthmesh network up --patients``); a
hospital node holds the records of the part of it that used the hospital (printed).

    python bench/federated.py [--patients 100000] [--nodes 3,10] [--queries 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from healthmesh.algorithms import ALGORITHMS  # noqa: E402
from healthmesh.cohorts import load_consent_scope  # noqa: E402
from healthmesh.gate.requester import Requester  # noqa: E402
from healthmesh.node import init_node, open_node  # noqa: E402
from healthmesh.privacy import DisclosureRules  # noqa: E402
from healthmesh.views.tables import DB_FILE, AnalyticTables  # noqa: E402

ANALYST = "Organization/analyst"
PARAMS = {"cohort": {"name": "hypertension",
                     "include": [{"condition": {"valueset": "hypertension"}}]},
          "strata": ["sex", "age_band"]}
RUNS = {"public-health": "PUBHLTH", "research": "HRESCH"}  # agreement -> purpose
FILES = ("store.sqlite", DB_FILE)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values[1:] \
        else values[0]


def clock(label: str, start: float) -> float:
    took = time.perf_counter() - start
    print(f"  {label}: {took:.1f} s", flush=True)
    return took


def template(root: Path, patients: int, seed: int) -> tuple[Path, Path, int]:
    """Synthetic data, one node with it ingested and its analytic tables built (reused when
    --keep points at a folder that has them)."""
    from healthmesh.ingest.loader import ingest
    from healthmesh.synth import generate

    data, folder = root / "data", root / "template"
    if not (data / "manifest.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        start = time.perf_counter()
        generate(data, patients=patients, sites=["hospital"], seed=seed)
        clock(f"synth: {patients:,} persons", start)
    init_node(folder, name="template")
    (folder / "node.toml").write_text(
        '[node]\nname = "template"\norganization = "Organization/hospital-1"\n', "utf-8")
    with open_node(folder) as node:
        if not node.store.counts():
            start = time.perf_counter()
            stats = ingest(node, [data / "hospital"], rejects_path=folder / "rejects/x.ndjson")
            took = clock(f"ingest: {stats.created:,} resources ({stats.rejected} rejected)",
                         start)
            print(f"    {stats.created / took:,.0f} resources/s", flush=True)
        start = time.perf_counter()
        refreshed = AnalyticTables(folder, node.store).refresh()
        clock(f"analytic tables (warm-up, full={refreshed.full}, "
              f"{sum(refreshed.tables.values()):,} rows)", start)
        count = node.store.counts().get("Patient", 0)
    return data, folder, count


def copy_nodes(source: Path, root: Path, sites: list[str]) -> None:
    """Node folders holding byte copies of the template's store and analytic tables."""
    shutil.rmtree(root, ignore_errors=True)
    for site in sites:
        folder = init_node(root / "nodes" / site, name=site)
        for name in (f + s for f in FILES for s in ("", "-wal", "-shm", ".wal")):
            (folder / name).unlink(missing_ok=True)  # the empty store init_node made
            if (source / name).exists() and not name.endswith("-shm"):
                shutil.copyfile(source / name, folder / name)


def local_floor(folder: Path, purpose: str, queries: int) -> dict[str, Any]:
    """The query computed at the node itself (no network): first run apart, then parts."""
    algorithm = ALGORITHMS["count"]
    parts: dict[str, list[float]] = {k: [] for k in (
        "population", "open+scope", "run", "disclose", "total", "refresh (no-op)")}
    first = 0.0
    with open_node(folder) as node:
        tables = AnalyticTables(folder, node.store)
        for i in range(queries + 1):
            t0 = time.perf_counter()
            population = node.gate.for_request(Requester(ANALYST, purpose)).population()
            t1 = time.perf_counter()
            con = tables.connect(read_only=True)
            try:
                load_consent_scope(con, population.allowed, population.denied)
                t2 = time.perf_counter()
                local = algorithm.run_local(con, PARAMS, site="Organization/hospital-1")
                t3 = time.perf_counter()
            finally:
                con.close()
            released = algorithm.disclose(local, DisclosureRules())
            t4 = time.perf_counter()
            if i == 0:
                first = t4 - t0
                continue
            for key, took in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0),
                                 strict=False):
                parts[key].append(took)
        for _ in range(queries):
            t0 = time.perf_counter()
            tables.refresh()
            parts["refresh (no-op)"].append(time.perf_counter() - t0)
    return {"first": first, "parts": parts, "in_scope": len(population.allowed),
            "cohort": sum(r["count"] for r in local.rows), "rows": len(released.rows)}


def run_network(root: Path, data: Path, sites: list[str], args: argparse.Namespace,
                ) -> dict[str, Any]:
    """Up, warm up, time ``--queries`` per agreement, down (always)."""
    from healthmesh.network.client import connect
    from healthmesh.network.local import network_down, network_up

    start = time.perf_counter()
    network_up(root, sites=sites, patients=args.patients, seed=args.seed, data=data, port=0,
               say=lambda _m: None)
    out: dict[str, Any] = {"up": clock(f"network up ({len(sites)} nodes)", start)}
    try:
        with connect(credentials=root) as hm:
            for agreement, purpose in RUNS.items():
                def ask(agreement: str = agreement, purpose: str = purpose,
                        ) -> tuple[float, Any]:
                    t0 = time.perf_counter()
                    got = hm.run("count", PARAMS, agreement=agreement, purpose=purpose)
                    return time.perf_counter() - t0, got
                warm = []
                for _ in range(3):  # the first task at each node builds its consent scope
                    took, got = ask()
                    warm.append(took)
                    bad = [f"{s['site']}: {s['status']} {s['reason']}"
                           for s in got["sites"] if s["status"] != "ok"]
                    if not bad:
                        break
                    print(f"  warm-up {agreement}: not every site answered: {bad[:3]}")
                times, tasks, failed = [], [], 0
                for _ in range(args.queries):
                    took, got = ask()
                    times.append(took)
                    tasks.append(got["task"])
                    failed += sum(s["status"] != "ok" for s in got["sites"])
                out[agreement] = {"warm": warm, "times": times, "tasks": tasks,
                                  "failed": failed, "pooled": got["pooled"]["rows"]}
                print(f"  {agreement}: warm-up {', '.join(f'{w:.2f}' for w in warm)} s; "
                      f"p50 {pct(times, 50):.3f} s", flush=True)
    finally:
        network_down(root)
    hub = sqlite3.connect(root / "hub" / "hub.sqlite")
    for agreement in RUNS:
        first, last = [], []
        for task in out[agreement]["tasks"]:
            created = hub.execute("SELECT created FROM tasks WHERE id = ?", (task,)).fetchone()[0]
            done = [u for (u,) in hub.execute("SELECT updated FROM targets WHERE task = ?",
                                                (task,))]
            first.append(min(done) - created)
            last.append(max(done) - created)
        out[agreement].update(first=first, last=last)
    hub.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100_000,
                        help="synthetic population (persons) behind each node's data")
    parser.add_argument("--nodes", default="3,10", help="network sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=20, help="timed queries per agreement")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temp dir)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    root = args.keep or Path(tempfile.mkdtemp(prefix="hm-federated-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {root}", flush=True)
    try:
        data, folder, count = template(root, args.patients, args.seed)
        print(f"each node: {count:,} Patient records (from a population of "
              f"{args.patients:,} persons)", flush=True)
        start = time.perf_counter()
        for n in sizes:
            copy_nodes(folder, root / f"net{n}", [f"hospital-{i}" for i in range(1, n + 1)])
        clock(f"copies of the template for {'+'.join(map(str, sizes))} nodes", start)
        floors = {}
        for purpose in RUNS.values():
            floors[purpose] = got = local_floor(folder, purpose, args.queries)
            print(f"  floor {purpose}: first run {got['first']:.2f} s (builds the consent "
                  f"scope), {got['in_scope']:,} patients in scope, cohort {got['cohort']:,}",
                  flush=True)
        results = {}
        for n in sizes:
            results[n] = run_network(root / f"net{n}", data,
                                     [f"hospital-{i}" for i in range(1, n + 1)], args)
            if not args.keep:
                shutil.rmtree(root / f"net{n}" / "nodes", ignore_errors=True)
        report(results, floors, count, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def report(results: dict[int, Any], floors: dict[str, Any], count: int,
           args: argparse.Namespace) -> None:
    print(f"\nfloor: one node, no network ({args.queries} runs, seconds; p50 / p95)")
    for purpose, got in floors.items():
        print(f"  {purpose:8} " + "  ".join(
            f"{k} {pct(v, 50):.3f}/{pct(v, 95):.3f}" for k, v in got["parts"].items()))
    print(f"\nfederated count by sex, age_band: {args.queries} queries each "
          f"(population {args.patients:,} persons; every node a copy of one node)")
    head = (f"{'nodes':>5} {'agreement':14} {'patients/node':>13} {'p50 s':>7} {'p95 s':>7} "
            f"{'floor p50':>9} {'overhead':>8} {'last node':>9} {'first node':>10} "
            f"{'failed':>6}  target met")
    print(head + "\n" + "-" * len(head))
    for n, out in results.items():
        for agreement, purpose in RUNS.items():
            got = out[agreement]
            p50, p95 = pct(got["times"], 50), pct(got["times"], 95)
            floor = pct(floors[purpose]["parts"]["total"], 50)
            met = p50 < 1.0 and p50 - floor < 0.5
            print(f"{n:>5} {agreement:14} {count:>13,} {p50:>7.3f} {p95:>7.3f} {floor:>9.3f} "
                  f"{p50 - floor:>8.3f} {pct(got['last'], 50):>9.3f} "
                  f"{pct(got['first'], 50):>10.3f} {got['failed']:>6}  {'yes' if met else 'no'}")
    print("last/first node: p50 seconds from the hub storing the task to the slowest / "
          "fastest node's answer stored at the hub; target: p50 < 1 s and overhead < 0.5 s")


if __name__ == "__main__":  # ingest starts worker processes (spawn): keep this guard
    main()
