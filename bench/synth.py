"""Benchmark healthmesh.synth.generate(): resources written per second, next to a baseline.

The baseline is measured in the same run on the same machine: the generated NDJSON is
re-read with ``orjson.loads`` (not timed) and the very same dicts are serialised with
``orjson.dumps`` and written to the same number of files (timed). The ratio says how close
the generator gets to the cost of just serialising its output.

    .venv/bin/python bench/synth.py --patients 5000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

from healthmesh.synth import generate


def baseline(src: Path, dst: Path) -> tuple[int, float]:
    """Re-serialise every NDJSON file under ``src`` into ``dst``; (resources, seconds)."""
    count, elapsed = 0, 0.0
    for path in sorted(src.glob("*/*.ndjson")):
        with path.open("rb") as f:
            rows = [orjson.loads(line) for line in f]
        target = dst / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with target.open("wb", buffering=1 << 18) as out:
            for row in rows:
                out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        elapsed += time.perf_counter() - start
        count += len(rows)
    return count, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        out = Path(tmp) / "generated"
        start, cpu = time.perf_counter(), time.process_time()
        manifest = generate(out, patients=args.patients, seed=args.seed)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        total = manifest["totals"]["resources"]
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size_mb = sum(p.stat().st_size for p in out.rglob("*.ndjson")) / 1e6
        count, base_seconds = baseline(out, Path(tmp) / "baseline")
    rate, base_rate = total / seconds, count / base_seconds
    print(f"patients            {args.patients}")
    print(f"resources           {total} ({total / args.patients:.1f} per patient, "
          f"{size_mb:.0f} MB NDJSON)")
    print(f"generate()          {seconds:6.2f} s  {rate:10,.0f} resources/s "
          f"({total / cpu:,.0f}/s of its own CPU time, {cpu:.2f} s)")
    print(f"orjson baseline     {base_seconds:6.2f} s  {base_rate:10,.0f} resources/s "
          f"(dumps + write of the same dicts)")
    print(f"ratio               {rate / base_rate:.2f} of the baseline")
    print(f"peak RSS (generate) {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
