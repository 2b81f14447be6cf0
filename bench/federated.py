"""Federated latency: a stratified count across N local nodes, next to one node's local time.

A local network (hub + one ``healthmesh serve`` per node) answers the count of a
hypertension cohort by sex and age_band ``--queries`` times under ``public-health``
(PUBHLTH: every patient in scope) and ``research`` (HRESCH: opted-in patients only). The
floor, measured with no network up: the same query at one node without the network, and its
parts. Every node is a byte copy of one template node, so its local time is each node's. CPU
seconds per query of the node processes and the hub come from /proc (they share the cores).
Targets (the issue): p50 under 1 s for 10 nodes, p50 - floor under 0.5 s. ``--patients`` is
the synthetic population (as for ``healthmesh network up``); a node holds those who used it.

    python bench/federated.py [--patients 100000] [--nodes 3,10] [--queries 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
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
READY = re.compile(r"prepared in ([0-9.]+) s|warm-up failed")


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values[1:] \
        else values[0] if values else float("nan")


def clock(label: str, start: float, count: int = 0) -> float:
    took = time.perf_counter() - start
    print(f"  {label}: {took:.1f} s" + (f" ({count / took:,.0f}/s)" if count else ""), flush=True)
    return took


def template(root: Path, patients: int, seed: int) -> tuple[Path, Path, int]:
    """Synthetic data and one node with it ingested and its analytic tables built (both
    reused when --keep names a folder that has them)."""
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
            clock(f"ingest: {stats.created:,} resources ({stats.rejected} rejected)", start,
                  stats.created)
        start = time.perf_counter()
        got = AnalyticTables(folder, node.store).refresh()
        clock(f"analytic tables (full={got.full}, {sum(got.tables.values()):,} rows)", start)
        return data, folder, node.store.counts().get("Patient", 0)


def copy_nodes(source: Path, root: Path, sites: list[str]) -> None:
    """Node folders holding byte copies of the template's store and analytic tables."""
    shutil.rmtree(root, ignore_errors=True)
    for site in sites:
        folder = init_node(root / "nodes" / site, name=site)
        for name in (f + s for f in ("store.sqlite", DB_FILE) for s in ("", "-wal", "-shm")):
            (folder / name).unlink(missing_ok=True)  # the empty store init_node made
            if (source / name).exists() and not name.endswith("-shm"):
                shutil.copyfile(source / name, folder / name)


def local_floor(folder: Path, purpose: str, queries: int) -> dict[str, Any]:
    """The query computed at the node itself, as a task does it minus the network: the
    first run apart (it decides the consent scope and population), then its parts."""
    algorithm = ALGORITHMS["count"]
    parts: dict[str, list[float]] = {k: [] for k in (
        "population", "open+scope", "run", "disclose", "total", "refresh (no-op)")}
    with open_node(folder) as node:
        tables = AnalyticTables(folder, node.store)
        defined = tables.definitions()[0]
        types = {v.resource for t in algorithm.tables_used(PARAMS) for v in defined[t].views}
        for _ in range(queries + 1):
            t0 = time.perf_counter()
            population = node.gate.for_request(Requester(ANALYST, purpose)).population(types)
            t1 = time.perf_counter()
            with tables.connect(read_only=True) as con:
                load_consent_scope(con, population.allowed, population.denied)
                t2 = time.perf_counter()
                local = algorithm.run_local(con, PARAMS, site="Organization/hospital-1")
                t3 = time.perf_counter()
            algorithm.disclose(local, DisclosureRules())
            t4 = time.perf_counter()
            for key, took in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0),
                                 strict=False):
                parts[key].append(took)
        for _ in range(queries):
            t0 = time.perf_counter()
            tables.refresh()
            parts["refresh (no-op)"].append(time.perf_counter() - t0)
    first = parts["total"].pop(0)
    for key in ("population", "open+scope", "run", "disclose"):
        parts[key].pop(0)
    print(f"  floor {purpose}: first run {first:.2f} s, {len(population.allowed):,} patients "
          f"in scope ({len(population.denied):,} records withheld), cohort "
          f"{sum(r['count'] for r in local.rows):,}", flush=True)
    return parts


def cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = {n: Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
              for n, p in pids.items()}
    return {n: (int(f[11]) + int(f[12])) / tick for n, f in fields.items()}


def ready(root: Path, sites: list[str], limit: float = 1800) -> float:
    """Wait until every node agent has warmed up (its log says so); the slowest's seconds."""
    until, found = time.monotonic() + limit, {}
    while len(found) < len(sites) and time.monotonic() < until:
        for site in sites:
            match = READY.search((root / "logs" / f"{site}.log").read_text(errors="replace"))
            if match:
                found[site] = float(match.group(1) or "nan")
        time.sleep(1)
    return max(found.values(), default=float("nan"))


def run_network(root: Path, data: Path, sites: list[str], args: argparse.Namespace,
                ) -> dict[str, Any]:
    """Up, wait for the agents' warm-up, one warm-up query and ``--queries`` timed ones per
    agreement, down (always); then each query's first/last answer as the hub stored it."""
    from healthmesh.network.client import connect
    from healthmesh.network.local import network_down, network_up

    start = time.perf_counter()
    state = network_up(root, sites=sites, patients=args.patients, seed=args.seed, data=data,
                       port=0, say=lambda _m: None)
    clock(f"network up ({len(sites)} nodes)", start)
    out: dict[str, Any] = {}
    try:
        start, agent = time.perf_counter(), ready(root, sites)
        clock(f"node agents ready (slowest agent's own warm-up {agent:.1f} s)", start)
        with connect(credentials=root) as hm:
            for agreement, purpose in RUNS.items():
                times, tasks, failed = [], [], 0
                for i in range(args.queries + 1):
                    if i == 1:
                        before, client = cpu(state["pids"]), time.process_time()
                    t0 = time.perf_counter()
                    got = hm.run("count", PARAMS, agreement=agreement, purpose=purpose)
                    times.append(time.perf_counter() - t0)
                    tasks.append(got["task"])
                    bad = [f"{s['site']}: {s['status']} {s['reason']}"
                           for s in got["sites"] if s["status"] != "ok"]
                    failed += len(bad) if i else 0
                    if bad and i in (0, 1):
                        print(f"    {agreement} query {i}: {len(bad)} sites not ok: {bad[0]}")
                spent = {n: t - before[n] for n, t in cpu(state["pids"]).items()}
                out[agreement] = {"warm": times.pop(0), "times": times, "tasks": tasks[1:],
                                  "failed": failed, "hub cpu": spent.pop("hub") / args.queries,
                                  "node cpu": statistics.mean(spent.values()) / args.queries,
                                  "client cpu": (time.process_time() - client) / args.queries}
                print(f"  {agreement}: warm-up query {out[agreement]['warm']:.2f} s; "
                      f"p50 {pct(times, 50):.3f} s", flush=True)
    finally:
        network_down(root)
    with sqlite3.connect(root / "hub" / "hub.sqlite") as hub:
        for agreement in RUNS:
            answers = [[u - c for u, c in hub.execute(
                "SELECT g.updated, t.created FROM targets g JOIN tasks t ON t.id = g.task "
                "WHERE g.task = ? AND g.status = 'ok'", (task,))]
                for task in out[agreement]["tasks"]]
            out[agreement]["first"] = [min(a) for a in answers if a]
            out[agreement]["last"] = [max(a) for a in answers if a]
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
    print(f"work folder: {root}; {os.cpu_count()} cores", flush=True)
    try:
        data, folder, count = template(root, args.patients, args.seed)
        print(f"each node: {count:,} Patient records (a population of {args.patients:,} "
              "persons, of whom these used the hospital)", flush=True)
        start = time.perf_counter()
        for n in sizes:  # before the floor, which stores consent scopes in the template
            copy_nodes(folder, root / f"net{n}", [f"hospital-{i}" for i in range(1, n + 1)])
        clock(f"copies of the template for {'+'.join(map(str, sizes))} nodes", start)
        floors = {purpose: local_floor(folder, purpose, args.queries)
                  for purpose in RUNS.values()}
        results = {}
        for n in sizes:
            results[n] = run_network(root / f"net{n}", data,
                                     [f"hospital-{i}" for i in range(1, n + 1)], args)
            if not args.keep:
                shutil.rmtree(root / f"net{n}", ignore_errors=True)
        report(results, floors, count, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def report(results: dict[int, Any], floors: dict[str, Any], count: int,
           args: argparse.Namespace) -> None:
    print(f"\nfloor: one node, no network ({args.queries} runs after the first; p50/p95 s)")
    for purpose, parts in floors.items():
        print(f"  {purpose:8} " + "  ".join(
            f"{k} {pct(v, 50):.3f}/{pct(v, 95):.3f}" for k, v in parts.items()))
    print(f"\nfederated count by sex, age_band: {args.queries} queries each; patients per "
          f"node (population {args.patients:,}); every node a copy of one node")
    head = (f"{'nodes':>5} {'agreement':13} {'patients':>8} {'p50 s':>6} {'p95 s':>6} {'floor':>6} "
            f"{'overhd':>6} {'first':>6} {'last':>6} {'node cpu':>8} {'hub cpu':>7} "
            f"{'client':>6} {'failed':>6}  target met")
    print(head + "\n" + "-" * len(head))
    for n, out in results.items():
        for agreement, purpose in RUNS.items():
            got = out[agreement]
            p50, floor = pct(got["times"], 50), pct(floors[purpose]["total"], 50)
            met = p50 < 1.0 and p50 - floor < 0.5 and not got["failed"]
            print(f"{n:>5} {agreement:13} {count:>8,} {p50:>6.3f} {pct(got['times'], 95):>6.3f} "
                  f"{floor:>6.3f} {p50 - floor:>6.3f} {pct(got['first'], 50):>6.3f} "
                  f"{pct(got['last'], 50):>6.3f} {got['node cpu']:>8.3f} {got['hub cpu']:>7.3f} "
                  f"{got['client cpu']:>6.3f} {got['failed']:>6}  {'yes' if met else 'no'}")
    print("floor: local p50 (every node's); overhd = p50 - floor; first/last: p50 s from the "
          "hub storing the task\nto the fastest/slowest answer stored; cpu: CPU s per query "
          "(node: mean of nodes); failed: sites not ok")


if __name__ == "__main__":  # ingest starts worker processes (spawn): keep this guard
    main()
