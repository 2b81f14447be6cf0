"""Benchmark: audit log appends next to a plain SQLite INSERT of the same JSON.

The baseline is what any log costs: ``record.canonical()`` and an INSERT of those bytes
into a bare table (``id INTEGER PRIMARY KEY, record BLOB``) in a SQLite file with the same
settings (WAL, ``synchronous=NORMAL``), without hashing, indexes or signatures. The
audit log adds the chain hash, the head read inside ``BEGIN IMMEDIATE``, the actor, time
and patient indexes, and an ed25519 checkpoint every ``--every`` entries.

Rounds of baseline and audit log alternate (so that a busy shared machine slows both),
and the median round is reported, in records per second:

* ``append_many`` in batches of ``--batch`` (one transaction per batch);
* ``append`` one by one (one committed transaction per record, as the gate does per
  request), also from 4 threads at once, and with ``synchronous=FULL``;
* ``verify()`` of the whole log and a "who looked at my data" query.

Run from the repository root::

    python bench/audit.py [--records 20000] [--batch 1000] [--rounds 5] [--every 1000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from healthmesh.audit import AuditLog, AuditRecord  # noqa: E402


def make_records(n: int) -> list[AuditRecord]:
    """Records shaped like the gate's: a search by a research organisation."""
    return [
        AuditRecord(
            actor="Organization/uni-research", organisation="uni-research", purpose="HRESCH",
            action="search", resource_types=("Observation",),
            resources=tuple(f"Observation/o{i}-{j}" for j in range(3)),
            patients=(f"p{i % 5000}",), decision="permit",
            rule="Consent/c1#provision[0].provision[1]", request_id=f"req-{i}", outcome=200,
        )
        for i in range(n)
    ]


class Baseline:
    """A bare SQLite table taking the same JSON, with the same pragmas."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, record BLOB)")
        self.lock = threading.Lock()

    def append(self, record: AuditRecord) -> None:
        with self.lock:
            self.db.execute("INSERT INTO log (record) VALUES (?)", (record.canonical(),))

    def append_many(self, records: list[AuditRecord]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO log (record) VALUES (?)",
                            [(r.canonical(),) for r in records])
        self.db.execute("COMMIT")


def rate(n: int, work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return n / (time.perf_counter() - start)


def batches(sink: Baseline | AuditLog, records: list[AuditRecord], size: int) -> None:
    for k in range(0, len(records), size):
        sink.append_many(records[k:k + size])


def one_by_one(sink: Baseline | AuditLog, records: list[AuditRecord]) -> None:
    for record in records:
        sink.append(record)


def threaded(sink: Baseline | AuditLog, records: list[AuditRecord], threads: int = 4) -> None:
    share = len(records) // threads
    workers = [threading.Thread(target=one_by_one, args=(sink, records[i * share:(i + 1) * share]))
               for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def compare(label: str, rounds: int, n: int, base: Callable[[], object],
            audit: Callable[[], object]) -> None:
    base_rates, audit_rates = [], []
    for _ in range(rounds):
        base_rates.append(rate(n, base))
        audit_rates.append(rate(n, audit))
    b, a = statistics.median(base_rates), statistics.median(audit_rates)
    print(f"{label:<34} {b:>12,.0f} {a:>12,.0f} {a / b:>8.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000, help="records per batch round")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--every", type=int, default=1000, help="checkpoint interval")
    args = parser.parse_args()
    records = make_records(args.records)
    single = records[: max(400, args.records // 10)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = Baseline(work / "baseline.sqlite")
        full_base = Baseline(work / "baseline-full.sqlite", "FULL")
        log = AuditLog(work / "node", checkpoint_every=args.every)
        full = AuditLog(work / "node-full", checkpoint_every=args.every, synchronous="FULL")
        print(f"{'records/s (median of rounds)':<34} {'baseline':>12} {'audit log':>12} "
              f"{'ratio':>8}")
        compare(f"append_many (batches of {args.batch})", args.rounds, len(records),
                lambda: batches(base, records, args.batch),
                lambda: batches(log, records, args.batch))
        compare("append one by one", args.rounds, len(single),
                lambda: one_by_one(base, single), lambda: one_by_one(log, single))
        compare("append one by one, 4 threads", args.rounds, len(single),
                lambda: threaded(base, single), lambda: threaded(log, single))
        compare("append one by one, synchronous=FULL", 3, len(single) // 4,
                lambda: one_by_one(full_base, single[: len(single) // 4]),
                lambda: one_by_one(full, single[: len(single) // 4]))
        head = log.head()
        seconds = time.perf_counter()
        result = log.verify()
        seconds = time.perf_counter() - seconds
        print(f"verify(): {head:,} entries in {seconds:.2f} s "
              f"({head / seconds:,.0f} entries/s), ok={result.ok}")
        seconds = time.perf_counter()
        for i in range(200):
            log.entries(patient=f"p{i}", limit=50)
        per_query = (time.perf_counter() - seconds) / 200
        print(f"entries(patient=..., limit=50): {per_query * 1e3:.2f} ms per query")
        log.close()
        full.close()


if __name__ == "__main__":
    main()
